r"""The root of the ``highs`` engine, before branch and bound: a tight LP bound checked in
numpy, incumbents from the LP, and reduced-cost fixing.

1. **LP and covers.** Solve the LP relaxation, add the budget covers it violates
   (:mod:`.cuts`, each proved valid there) and solve again, a few rounds.
2. **Bound.** The LP's row prices ``y`` give the bound ``z`` and reduced costs ``r`` of
   :meth:`~.model.MilpModel.dual_bound`, recomputed in float64 (weak duality, not the
   solver's word).
3. **Incumbents**, each kept only if :func:`~flexmoe.assign.verify` accepts it: the warm
   start; the LP point when it is integral; then sub-MIPs with every other pair fixed at
   its rounded LP value, built without the pairs they fix to 0 and capped in nodes, time
   and size: the LP's fractional pairs (RENS), every pair of the clients holding them,
   and a neighbourhood — the fractional pairs, the incumbent's departures from the LP and
   the pairs of smallest ``|r|`` (the swaps the LP finds nearly free). If the best is
   within `mip_gap` of ``z`` the solve is done here.
4. **Reduced-cost fixing.** A solution with ``x_j = 1`` where ``r_j < 0`` is worth at most
   ``z + r_j`` (and one with ``x_j = 0`` where ``r_j > 0`` at most ``z − r_j``): the
   bound of step 2 with that one column moved off the bound it picks. Every pair where
   that is below ``target`` (the incumbent plus the solver's share of `mip_gap`), and
   where the incumbent agrees, is fixed: dropped from the model (or held at 1). Every
   solution the fixing excludes is worth at most ``floor``, the largest of those values
   (``< target``), so ``max(bound of the restricted model, floor)`` bounds the whole
   problem and the gap it certifies is the solver's or below the share it may leave.

Units, gaps and time. The LPs see the objective in units of ``problem.objective_unit``
(:func:`~.model.formulate`); every bound and reduced cost leaves :class:`_Relaxation` in
the problem's own units (times that power of two: exact), and every gap is the relative
one of :func:`~flexmoe.assign.result.relative_gap` at the objective's scale
(:func:`~flexmoe.assign.verify.objective_scale`), as the result's status is decided: the
root phase ends the solve only when that gap is at most `mip_gap` (by default
:data:`~flexmoe.assign.result.OPTIMAL_RTOL`), and the result is ``OPTIMAL`` only then.
Each LP and sub-MIP gets the time left before the solve's deadline (a sub-MIP a share
of it), and under a time limit every incumbent and bound is reported to the solve's
:class:`~flexmoe.assign.deadline.Progress` as soon as it is found (a sub-MIP's bounds
are not bounds of the problem: only its incumbents), so a solve abandoned at its limit
answers with them.

At 1,000 × 64 with storage, compute and weighted loads (``benchmarks/bench_milp.py``) the
covers close 84 % of the LP gap (the LP bound is 0.011 % above the optimum, 0.0018 %
after two rounds: what is left comes from the weighted loads, not the budgets), the
greedy start is already within 0.1 % of that bound, the neighbourhood sub-MIP finds the
optimum, and the fixing leaves a sixth of the 64,000 pairs for the branch and bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from flexmoe.assign.backends.milp import cuts
from flexmoe.assign.backends.milp.engines import HighsEngine, Settings, report_to
from flexmoe.assign.backends.milp.model import MilpModel
from flexmoe.assign.deadline import Progress, current, seconds_left
from flexmoe.assign.problem import AssignmentProblem, Bool, Float
from flexmoe.assign.result import relative_gap
from flexmoe.assign.verify import largest_magnitude, objective_scale, objective_value, verify

__all__ = ["Root", "tighten"]

#: Most rounds of cover separation.
CUT_ROUNDS = 5
#: A round that raises the bound by less than this share of it ends the separation.
CUT_PROGRESS = 1e-7
#: The neighbourhood sub-MIP frees this many pairs of smallest ``|r|`` per client.
NEIGHBOURS = 2.0
#: Node limit of each sub-MIP (a heuristic: it keeps whatever it found).
SUB_MIP_NODES = 500
#: Each sub-MIP may use at most this share of the time left before the deadline, and at
#: most `SUB_MIP_LP_TIMES` times the first LP's time (but `SUB_MIP_FLOOR` seconds). At
#: 1,000 × 64 under a 4 s limit a quarter (0.7 s) cut the neighbourhood sub-MIP short of
#: the optimum it finds in 1.0 s, the fixing kept 26,000 pairs instead of 10,000, and the
#: branch and bound ended at the limit; half lets it finish.
SUB_MIP_SHARE = 0.5
SUB_MIP_LP_TIMES = 5.0
SUB_MIP_FLOOR = 0.25
#: A sub-MIP that would free more than this share of the pairs is not small: skipped.
SUB_MIP_MOST_FREE = 0.1
#: HiGHS options of the sub-MIPs (built without the pairs they fix to 0).
SUB_MIP_OPTIONS: dict[str, Any] = {"mip_max_nodes": SUB_MIP_NODES}


@dataclass
class Root:
    """What the root phase hands to the branch and bound.

    `model` is the (restricted) model to solve, `best` the best assignment found (None
    without one) worth `value`, `bound` an upper bound on the whole problem, `floor` a
    bound on every assignment the restriction excluded (−inf when none was), `finished`
    whether `best` is already within `mip_gap` of `bound`.
    """

    model: MilpModel
    best: Bool | None
    value: float
    bound: float = math.inf
    floor: float = -math.inf
    finished: bool = False
    info: dict[str, Any] = field(default_factory=dict)


def tighten(
    problem: AssignmentProblem,
    model: MilpModel,
    warm: Bool | None,
    settings: Settings,
    deadline: float | None,
    mip_gap: float,
) -> Root:
    """Run the root phase (see the module docstring) on `model`, which it leaves as it is.

    ``root.info`` has the LP bound, the bound after the covers, the incumbents found
    (source, value, seconds since the start) and the pairs kept after fixing.
    """
    start = time.perf_counter()
    clock = _Clock(deadline, start)
    root = Root(model, None, -math.inf, info={"incumbents": []})
    _offer(problem, root, warm, "warm start", clock)
    lp = _Relaxation(problem, model, settings)
    if not lp.solve(clock):
        root.info |= {"lp": "not solved: " + lp.native, "root_time": clock.spent}
        return root
    root.info |= {"lp_bound": lp.bound, "lp_time": clock.spent}
    rounds = lp.separate(clock)
    root.bound = lp.bound
    root.info |= {"root_bound": lp.bound, "cut_rounds": rounds, "covers": lp.covers,
                  "cuts_time": clock.spent}  # fmt: skip
    _incumbents(problem, root, lp, settings, clock, mip_gap)
    if not root.finished and root.best is not None:
        _fix(problem, root, lp, settings.solver_gap)
    root.info |= {"root_time": clock.spent, "pairs_kept": int(root.model.clients.size)}
    return root


class _Clock:
    """Seconds since the start of the root phase and left before an optional deadline,
    and the :class:`~flexmoe.assign.deadline.Progress` of a time-limited solve (what the
    root phase finds is reported to it as it goes; a cancelled solve is over)."""

    def __init__(self, deadline: float | None, start: float):
        self.deadline, self.start = deadline, start
        self.progress: Progress = current()

    @property
    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self, share: float = 1.0) -> float | None:
        left = seconds_left(self.deadline)  # at least 1 ms: HiGHS then stops at once
        return None if left is None else left * share

    @property
    def over(self) -> bool:
        left = self.left()
        return self.progress.cancelled or (left is not None and left <= 1e-3)


def _offer(
    problem: AssignmentProblem, root: Root, x: Bool | None, source: str, clock: _Clock
) -> bool:
    """Keep `x` as the incumbent when the checker accepts it and it is better."""
    if x is None or not verify(problem, x):
        return False
    clock.progress.offer(problem, x, source=f"the root phase ({source})")
    value = objective_value(problem, x)
    root.info["incumbents"].append((source, value, clock.spent))
    if value <= root.value:
        return False
    root.best, root.value = x, value
    return True


class _Relaxation:
    """The LP relaxation in HiGHS on a copy of the model that collects the covers.

    `bound` and `reduced` are in the problem's own units (the model's times
    ``model.unit``, a power of two: exact), like every objective value of the root."""

    def __init__(self, problem: AssignmentProblem, model: MilpModel, settings: Settings):
        self.problem = problem
        self.model = replace(model)  # rows are appended to the copy only
        self.engine = HighsEngine(self.model, settings)
        self.engine.relax()
        self.values: Float = np.zeros(0)
        self.bound, self.reduced = math.inf, np.zeros(0)
        self.native, self.covers = "", 0

    def solve(self, clock: _Clock) -> bool:
        run = self.engine.run(clock.left())
        self.native = run.native
        if run.outcome != "optimal" or run.values is None:
            return False
        self.values = run.values
        bound, reduced = self.model.dual_bound(self.engine.duals())
        self.bound, self.reduced = bound * self.model.unit, reduced * self.model.unit
        clock.progress.tighten(self.problem, self.bound)
        return True

    def separate(self, clock: _Clock) -> int:
        """Add violated covers and re-solve until none is left or the bound stalls."""
        rounds = 0
        while rounds < CUT_ROUNDS and not clock.over:
            rows = cuts.separate(self.problem, self.model, self.values)
            if rows is None:
                break
            before, values, bound, reduced = self.bound, self.values, self.bound, self.reduced
            self.model.append_rows(*rows)
            self.engine.add_rows(*rows)
            self.covers += rows[0].shape[0]
            rounds += 1
            if not self.solve(clock):  # keep the last solved LP (the rows stay valid)
                self.values, self.bound, self.reduced = values, bound, reduced
                break
            if before - self.bound <= CUT_PROGRESS * max(self.model.unit, abs(before)):
                break
        return rounds

    @property
    def x(self) -> Float:
        return self.values[self.model.columns["x"]]

    @property
    def reduced_x(self) -> Float:
        return self.reduced[self.model.columns["x"]]


def _incumbents(
    problem: AssignmentProblem,
    root: Root,
    lp: _Relaxation,
    settings: Settings,
    clock: _Clock,
    mip_gap: float,
) -> None:
    """The LP point if integral, then the sub-MIPs (module docstring, step 3) until the
    incumbent is within `mip_gap` of the bound."""
    x = lp.x
    fractional = (x > cuts.INTEGRAL) & (x < 1 - cuts.INTEGRAL)
    if not fractional.any():
        _offer(problem, root, root.model.assignment(lp.values, problem.shape), "LP", clock)
    free = np.isin(root.model.clients, root.model.clients[fractional])
    budget = max(SUB_MIP_FLOOR, SUB_MIP_LP_TIMES * root.info["lp_time"])
    tries = {"RENS": lambda: fractional, "RENS clients": lambda: free,
             "neighbourhood": lambda: _neighbours(problem, root, lp, fractional)}  # fmt: skip
    for source, chosen in tries.items():
        pairs = chosen()
        if _done(problem, root, mip_gap) or clock.over:
            break
        if not pairs.any() or pairs.mean() > SUB_MIP_MOST_FREE:
            continue
        found = _sub_mip(problem, root, lp, pairs, settings, clock, budget)
        _offer(problem, root, found, source, clock)
    root.finished = _done(problem, root, mip_gap)


def _done(problem: AssignmentProblem, root: Root, mip_gap: float) -> bool:
    """Whether the incumbent is certified within `mip_gap` of the bound: the relative gap
    of :func:`~flexmoe.assign.result.relative_gap`, at the objective's scale, as the
    status of the result is decided (OPTIMAL only at most `mip_gap`)."""
    if root.best is None:
        return False
    scale = objective_scale(problem, root.best)
    return relative_gap(root.value, root.bound, scale) <= mip_gap


def _neighbours(problem: AssignmentProblem, root: Root, lp: _Relaxation, fractional: Bool) -> Bool:
    """The fractional pairs, the pairs where the incumbent leaves the LP's rounding (so
    that it is a start), and the `NEIGHBOURS` per client of smallest ``|r|`` elsewhere:
    the swaps the LP finds nearly free, which the optimum uses to fit the loads around
    the clients the LP split (at 1,000 × 64 it changes about 25 such clients, each by a
    swap of ``|r| < 0.005``, beside the 25 split ones)."""
    free = fractional.copy()
    if root.best is not None:
        free |= root.best[root.model.clients, root.model.experts] != (lp.x > 0.5)
    closeness = np.where(free, -1.0, np.abs(lp.reduced_x))
    count = min(closeness.size, int(free.sum() + NEIGHBOURS * problem.n_clients))
    chosen = np.zeros(closeness.size, dtype=bool)
    chosen[np.argpartition(closeness, count - 1)[:count]] = True
    return chosen | free


def _sub_mip(
    problem: AssignmentProblem,
    root: Root,
    lp: _Relaxation,
    free: Bool,
    settings: Settings,
    clock: _Clock,
    seconds: float,
) -> Bool | None:
    """The best assignment HiGHS finds within `SUB_MIP_NODES` nodes and `seconds` (or
    `SUB_MIP_SHARE` of the time left) with every pair outside `free` fixed at its
    (rounded) LP value; None without one."""
    model = root.model
    held = lp.x > 0.5
    sub = model.restrict(free | held)
    sub.col_lo[sub.columns["x"].start + np.flatnonzero((held & ~free)[free | held])] = 1.0
    engine = HighsEngine(sub, Settings(settings.solver_gap, settings.threads, settings.seed,
                                       highs_options=SUB_MIP_OPTIONS))  # fmt: skip
    if root.best is not None and np.array_equal(
        root.best[model.clients, model.experts][~free], held[~free]
    ):
        engine.set_start(sub.start(problem, root.best))
    report_to(clock.progress, problem, sub, engine, floor=math.inf)  # its bounds: no
    left = clock.left(SUB_MIP_SHARE)
    tick = clock.spent
    run = engine.run(seconds if left is None else min(left, seconds))
    root.info.setdefault("sub_mips", []).append(
        (int(free.sum()), round(clock.spent - tick, 3), run.native)
    )
    return None if run.values is None else sub.assignment(run.values, problem.shape)


def _fix(problem: AssignmentProblem, root: Root, lp: _Relaxation, allowance: float) -> None:
    """Reduced-cost fixing (module docstring, step 4) against the incumbent plus
    `allowance` (a relative gap the branch and bound may leave anyway) times the least
    scale any assignment's objective has: so ``floor`` is within `allowance` of every
    incumbent in the relative gap of the result."""
    z, r = lp.bound, lp.reduced_x
    model = root.model
    assert root.best is not None
    at_bounds = (model.col_lo[model.columns["x"]] == 0) & (model.col_hi[model.columns["x"]] == 1)
    held = root.best[model.clients, model.experts]  # the incumbent stays a valid start
    least = largest_magnitude(problem)
    target = root.value + allowance * max(abs(root.value), least)
    drop = at_bounds & ~held & (r < 0) & (z + r < target)
    hold = at_bounds & held & (r > 0) & (z - r < target)
    worth = np.concatenate([z + r[drop], z - r[hold]])
    root.floor = float(worth.max()) if worth.size else -math.inf
    restricted = model.restrict(~drop)
    restricted.col_lo[restricted.columns["x"].start + np.flatnonzero(hold[~drop])] = 1.0
    root.model = restricted
    root.info |= {"pairs_dropped": int(drop.sum()), "pairs_held": int(hold.sum())}
