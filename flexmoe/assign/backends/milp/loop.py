"""Solve: warm start → formulate → run the engine (the outer-approximation loop of the
variance term) → map the outcome to a status, explicitly; a limit is never ``OPTIMAL``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from flexmoe.assign.backends._highs import new_highs
from flexmoe.assign.backends.milp import root as root_phase
from flexmoe.assign.backends.milp.engines import (
    BOUND_SNAP,
    ENGINES,
    FEASIBILITY,
    HighsEngine,
    Run,
    Settings,
    report_to,
)
from flexmoe.assign.backends.milp.model import MilpModel, formulate
from flexmoe.assign.backends.milp.root import Root
from flexmoe.assign.deadline import current, seconds_left
from flexmoe.assign.problem import AssignmentProblem, Bool
from flexmoe.assign.registry import spec_name
from flexmoe.assign.result import OPTIMAL_RTOL, Assignment, Status, relative_gap
from flexmoe.assign.verify import expert_loads, objective_scale, objective_value, verify

__all__ = ["DEFAULT_MIP_GAP", "solve"]

#: Relative gap at which a finished solve counts as optimal (:data:`OPTIMAL_RTOL`).
DEFAULT_MIP_GAP = OPTIMAL_RTOL
#: The solver stops at this share of `mip_gap`, so its own gap definition (relative to
#: the incumbent, or with an absolute floor) and float noise stay inside ours.
SOLVER_GAP_SHARE = 0.5
#: Most solves of the outer-approximation loop for the variance term.
MAX_ROUNDS = 30


def solve(
    problem: AssignmentProblem,
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    engine: str = "highs",
    solver: Any = None,
    mip_gap: float = DEFAULT_MIP_GAP,
    threads: int | None = None,
    warm_start: bool = True,
    highs_options: dict[str, Any] | None = None,
    tighten: bool = True,
) -> Assignment:
    """Solve `problem` exactly as a MILP (see the module Notes for the formulation).

    Parameters
    ----------
    problem : AssignmentProblem
    time_limit : float, optional
        Seconds for the whole solve (every round of the loop). Reaching it gives
        ``FEASIBLE`` with the dual bound, or ``LIMIT_NO_SOLUTION``; never ``OPTIMAL``.
    seed : int, optional
        The solver's random seed (and the warm start's).
    engine : {"highs", "pulp", "scipy"}
        The variant: :func:`flexmoe.assign.solve` passes it from the spec
        (``"milp:pulp"``), or picks ``pulp`` when `solver` is given.
    solver : str or pulp.LpSolver, optional
        For ``milp:pulp`` only: a PuLP solver name (``"PULP_CBC_CMD"`` by default,
        ``"HiGHS"``, ``"GUROBI_CMD"``, ``"CPLEX_CMD"``, ...) or a configured instance.
    mip_gap : float
        Relative gap at which the solve is optimal (default 1e-6).
    threads : int, optional
        Solver threads.
    warm_start : bool
        Start from ``greedy:balanced`` when its answer is feasible.
    highs_options : dict, optional
        For ``milp:highs`` only: extra HiGHS options over
        :data:`~flexmoe.assign.backends.milp.engines.HIGHS_DEFAULTS`.
    tighten : bool
        For ``milp:highs`` only: run the root phase of :mod:`.root` first (budget
        covers, a bound checked in numpy, incumbents from the LP, reduced-cost fixing);
        ``info["root"]`` says what it did. The bound is then the least of the root's and
        ``max(solver's bound, root.floor)`` (the pairs fixed away are worth no more). It
        keeps `time_limit` (each of its LPs and sub-MIPs gets the time left) and ends the
        solve only when its relative gap is at most `mip_gap`, like the solver.

    Returns
    -------
    Assignment
        `bound` is the solver's dual bound, so `gap` is certified (up to the solver's
        feasibility tolerances).
    """
    start = time.perf_counter()
    _check_options(mip_gap, threads)
    deadline = None if time_limit is None else start + time_limit
    progress = current()  # a time-limited solve reports what it finds as it goes
    warm, warm_note = _warm_start(problem, seed) if warm_start else (None, "off")
    if warm is not None:
        progress.offer(problem, warm, source=f"the warm start ({warm_note})")
    progress.tighten(problem, _trivial_bound(problem))
    warm_time = time.perf_counter() - start
    model = formulate(problem, warm)
    settings = Settings(SOLVER_GAP_SHARE * mip_gap, threads, seed or 0, solver, highs_options or {})
    build_time = time.perf_counter() - start - warm_time
    root = None
    if tighten and engine == "highs":
        root = root_phase.tighten(problem, model, warm, settings, deadline, mip_gap)
    outcome, name, proves, more_build = _branch(
        problem, model, warm, root, settings, engine, deadline, mip_gap
    )
    info = {
        "engine": engine,
        "solver": name,
        "warm_start": warm_note,
        "warm_start_time": warm_time,
        "objective_unit": model.unit,
        "rtol": mip_gap,
        **({} if root is None else {"root": root.info}),
        **outcome.info(model if root is None else root.model),
    }
    if outcome.x is None and not proves and not progress.cancelled:
        outcome = _confirmed(problem, model, outcome, settings, deadline)
        info["confirmed_by"] = outcome.witness
    build_time += more_build
    return _result(problem, outcome, mip_gap, engine, build_time=build_time, info=info)


def _check_options(mip_gap: float, threads: int | None) -> None:
    """The values of the options (the registry checks which variant takes which)."""
    if not (isinstance(mip_gap, int | float) and 0 <= mip_gap < 1):
        raise ValueError(f"`mip_gap` must be a number in [0, 1); got {mip_gap!r}")
    if threads is not None and not (isinstance(threads, int) and threads > 0):
        raise ValueError(f"`threads` must be a positive integer; got {threads!r}")


def _branch(
    problem: AssignmentProblem,
    model: MilpModel,
    warm: Bool | None,
    root: Root | None,
    settings: Settings,
    engine: str,
    deadline: float | None,
    mip_gap: float,
) -> tuple[_Outcome, str, bool, float]:
    """The branch and bound after the root phase (if any): the outcome, the solver's
    name, whether an "infeasible" of it is a proof, and its build time.

    A root phase that certified `mip_gap` is the answer as it is; otherwise the engine
    solves the root's (restricted) model from its best assignment, and the root phase's
    time counts as solve time."""
    if root is not None and root.finished:
        outcome = _Outcome(Run("optimal", None, root.bound, "root phase"), root.best,
                           root.value, root.bound, 1, root.info["root_time"])  # fmt: skip
        return outcome, f"HiGHS {new_highs().version()} (root phase)", True, 0.0
    tick = time.perf_counter()
    if root is not None:
        model, warm = root.model, root.best
    runner = ENGINES[engine](model, settings)
    if warm is not None:
        runner.set_start(model.start(problem, warm))
    floor = -math.inf if root is None else root.floor
    report_to(current(), problem, model, runner, floor)
    build = time.perf_counter() - tick
    outcome = _optimise(problem, model, runner, deadline, mip_gap, warm, root)
    if root is not None:  # the root phase is solving: its LPs and sub-MIPs
        outcome.solve_time += root.info["root_time"]
    return outcome, runner.solver, runner.proves_infeasibility, build


def _warm_start(problem: AssignmentProblem, seed: int | None) -> tuple[Bool | None, str]:
    """``greedy:balanced``'s answer (the sibling module, called directly) when the
    independent checker finds it feasible."""
    from flexmoe.assign.backends import greedy

    result = greedy.solve(problem, seed=seed, method="balanced")
    if result.x is None or not verify(problem, result.x):
        return None, f"greedy:balanced gave no feasible start ({result.status})"
    return np.asarray(result.x, dtype=bool), "greedy:balanced"


@dataclass
class _Outcome:
    """What the loop ended with: the last run, the best assignment and the bound."""

    last: Run
    x: Bool | None
    value: float
    bound: float
    rounds: int
    solve_time: float
    tolerance: float = 0.0
    witness: str = ""
    """Who confirmed an "infeasible" or "error" of an engine that runs a presolve."""

    def info(self, model: MilpModel) -> dict[str, Any]:
        return {
            "native_status": self.last.native,
            "rounds": self.rounds,
            "balance_model": model.balance_model,
            "variance_lines": 0 if model.cuts is None else int(model.cuts.expert.size),
            "columns": int(model.shape[1]),
            "rows": int(model.shape[0]),
            "nonzeros": int(model.matrix.nnz),
        }


def _optimise(
    problem: AssignmentProblem,
    model: MilpModel,
    runner: Any,
    deadline: float | None,
    mip_gap: float,
    warm: Bool | None,
    root: Root | None = None,
) -> _Outcome:
    """Run the solver; with variance lines, add the lines through each incumbent's loads
    and run again until the best true objective is within `mip_gap` of the bound.

    After the root phase `model` may lack pairs fixed by reduced costs: the bound of the
    whole problem is then ``min(root bound, max(solver's bound, root.floor))``."""
    best, value = warm, -math.inf if warm is None else objective_value(problem, warm)
    bound, rounds, spent = math.inf if root is None else root.bound, 0, 0.0
    floor = -math.inf if root is None else root.floor
    progress = current()
    while True:
        rounds += 1
        tick = time.perf_counter()
        run = runner.run(seconds_left(deadline))
        spent += time.perf_counter() - tick
        if not math.isnan(run.bound):  # the pairs fixed away are worth at most `floor`
            bound = min(bound, max(run.bound * model.unit, floor))
        x = None if run.values is None else model.assignment(run.values, problem.shape)
        if x is not None and objective_value(problem, x) > value:
            best, value = x, objective_value(problem, x)
            progress.offer(problem, x, source=f"{runner.solver}, round {rounds}")
        progress.tighten(problem, bound)
        if run.outcome != "optimal" or x is None or model.cuts is None or progress.cancelled:
            break
        scale = objective_scale(problem, best if best is not None else x)
        if relative_gap(value, bound, scale) <= mip_gap or rounds >= MAX_ROUNDS:
            break
        loads = expert_loads(problem, x)
        d = (loads - loads.mean()) / model.scale
        rows = model.add_cuts(*model.cuts.lines_through(d))
        if rows[0].shape[0] == 0:
            break
        runner.add_rows(*rows)
        runner.set_start(model.start(problem, best if best is not None else x))
    bound = min(bound, _trivial_bound(problem))
    # the continuous balance columns may each sit a feasibility tolerance off their rows
    tolerance = FEASIBILITY * float(np.abs(model.cost[~model.integer]).sum()) * model.unit
    return _Outcome(run, best, value, bound, rounds, spent, tolerance)


def _confirmed(
    problem: AssignmentProblem,
    model: MilpModel,
    out: _Outcome,
    settings: Settings,
    deadline: float | None,
) -> _Outcome:
    """An engine that runs a presolve (SciPy's, PuLP's) said "infeasible" or failed:
    HiGHS without presolve (:data:`~.engines.HIGHS_DEFAULTS`, the user's HiGHS options
    left out) solves the same model again, so an ``INFEASIBLE`` never rests on the word
    of a presolve known to err, and a solution it missed is found."""
    if out.last.outcome not in ("infeasible", "error"):
        return out
    witness = HighsEngine(model, replace(settings, highs_options={}))
    report_to(current(), problem, model, witness)
    tick = time.perf_counter()
    run = witness.run(seconds_left(deadline))
    spent = out.solve_time + time.perf_counter() - tick
    name = f"{witness.solver} without presolve"
    if run.values is None:
        said = (
            f", confirmed by {name}" if run.outcome == "infeasible" else f"; {name}: {run.native}"
        )
        return replace(out, last=replace(run, native=out.last.native + said), solve_time=spent,
                       witness=name)  # fmt: skip
    x = model.assignment(run.values, problem.shape)
    bound = _trivial_bound(problem)
    if not math.isnan(run.bound):
        bound = min(bound, run.bound * model.unit)
    note = replace(run, native=f"{name} ({run.native}), after {out.last.native}")
    return replace(out, last=note, x=x, value=objective_value(problem, x), bound=bound,
                   solve_time=spent, witness=name)  # fmt: skip


def _trivial_bound(problem: AssignmentProblem) -> float:
    """Each client's best allowed experts by effective utility (its first `min_experts`,
    then any positive ones up to `max_experts`), ignoring every coupling and the balance
    penalty: a valid bound when the solver stopped before proving one."""
    ranked = -np.sort(-problem.masked_utility, axis=1)
    rank = np.arange(problem.n_experts)[None, :]
    take = (rank < problem.min_experts[:, None]) | (
        (rank < problem.max_experts[:, None]) & (ranked > 0)
    )
    return float(np.where(take, ranked, 0.0).sum())


def _result(
    problem: AssignmentProblem,
    out: _Outcome,
    mip_gap: float,
    engine: str,
    *,
    build_time: float,
    info: dict,
) -> Assignment:
    """Map the loop's outcome to a status explicitly; a limit is never ``OPTIMAL``."""
    from flexmoe.assign.backends import milp

    name = spec_name(milp.NAME, engine, milp.VARIANTS)
    times: dict[str, Any] = {"build_time": build_time, "solve_time": out.solve_time, "info": info}
    native = f"{info['solver']}: {out.last.native}"
    if out.x is None:
        return _no_solution(problem, out, name, native, times)
    scale = objective_scale(problem, out.x)
    bound, note = _certified_bound(problem, out, scale)
    gap = relative_gap(out.value, bound, scale)
    status, message = Status.FEASIBLE, ""
    if out.last.outcome == "optimal" and gap <= mip_gap and not note:
        status = Status.OPTIMAL
    elif out.last.outcome == "limit":
        message = f"limit reached ({native}); certified gap {gap:.3g}"
    else:
        message = f"stopped after {out.rounds} round(s) at certified gap {gap:.3g} ({native})"
    if note:
        message += f"; {note}"
    return Assignment.from_x(problem, out.x, status=status, bound=bound, backend=name,
                             message=message, **times)  # fmt: skip


def _no_solution(
    problem: AssignmentProblem, out: _Outcome, name: str, native: str, times: dict[str, Any]
) -> Assignment:
    """``INFEASIBLE`` (proved without presolve), ``LIMIT_NO_SOLUTION`` or ``ERROR``."""
    if out.last.outcome == "infeasible":
        return Assignment.no_solution(
            Status.INFEASIBLE, name, _infeasible(problem, native), **times
        )
    if out.last.outcome == "limit":
        message = f"limit reached before any feasible assignment ({native})"
        return Assignment.no_solution(
            Status.LIMIT_NO_SOLUTION, name, message, bound=out.bound, **times
        )
    return Assignment.no_solution(Status.ERROR, name, f"solver failed ({native})", **times)


def _certified_bound(problem: AssignmentProblem, out: _Outcome, scale: float) -> tuple[float, str]:
    """The bound to report, and why it certifies nothing when it does not.

    Within the solvers' noise of the objective — :data:`~.engines.BOUND_SNAP` times the
    objective's scale (relative: the engines see the objective in units of its largest
    coefficient), plus the feasibility tolerance of the balance columns — the bound is
    the objective. A bound below that is no bound (a solver's tolerance, or a presolve,
    erred): the trivial bound replaces it and the message says so.
    """
    bound = out.bound
    noise = BOUND_SNAP * max(scale, abs(out.value)) + out.tolerance
    if abs(bound - out.value) <= noise:
        return out.value, ""
    if bound < out.value:
        return max(_trivial_bound(problem), out.value), (
            f"the solver's dual bound {bound!r} lies below the objective {out.value!r} of its "
            "own assignment: no certificate"
        )
    return bound, ""


def _infeasible(problem: AssignmentProblem, native: str) -> str:
    """The reason of an infeasible result: which constraint families were in play."""
    families = [
        f"experts per client {problem.min_experts.min()}..{problem.max_experts.max()}",
        "load band [load_min, load_max]",
    ]
    families += [f"budget {row.name}" for row in problem.budgets]
    if problem.allowed is not None:
        families.append("allowed mask")
    return (
        f"no assignment satisfies {', '.join(families)} together (proved by {native}), "
        "although every aggregate precheck passes"
    )
