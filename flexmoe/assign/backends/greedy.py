"""Greedy heuristics in numpy: ``topk`` (personalisation only) and ``balanced`` (load-aware).

``topk`` gives each client its best experts and ignores the load band: the personalisation
baseline that FLEX-MoE beats. ``balanced`` meets every constraint it can: clients propose
their best experts rank by rank while experts accept holders up to ``load_max``; a batched
repair then moves holders onto experts below ``load_min`` at the smallest utility loss, and
augmenting paths fix what is left (with count loads and no budgets: always, when the
problem is feasible). Neither proves optimality: ``bound`` is ``inf`` and the status is
never ``OPTIMAL``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from flexmoe.assign.derived import SLACK
from flexmoe.assign.problem import AssignmentProblem, BalanceMetric, BudgetRow
from flexmoe.assign.registry import Variant, spec_name
from flexmoe.assign.result import Assignment, Status
from flexmoe.assign.verify import imbalance

__all__ = [
    "EXACT",
    "NAME",
    "VARIANTS",
    "VARIANT_OPTION",
    "balanced_assignment",
    "solve",
    "topk_assignment",
]

NAME = "greedy"
EXACT = False
VARIANT_OPTION = "method"
VARIANTS = (
    Variant("balanced", extra="", description="capacity- and load-aware, with repair"),
    Variant("topk", extra="", description="each client its best experts, load ignored"),
)

Float = NDArray[np.float64]
Bool = NDArray[np.bool_]
Index = NDArray[np.intp]

#: Slack on float comparisons of loads and budgets: the problem's one slack (tighter than
#: the verifier's tolerance).
EPS = SLACK


def solve(
    problem: AssignmentProblem,
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    method: str = "balanced",
) -> Assignment:
    """Greedy assignment.

    Parameters
    ----------
    problem : AssignmentProblem
    time_limit, seed : ignored
        Both methods are deterministic (ties go to the lower expert index) and fast.
    method : {"balanced", "topk"}
        The variant (the registry passes it from the spec, ``"greedy:topk"``).
        ``topk``: :func:`topk_assignment`; ``RELAXED`` when it breaks a constraint
        (by design it ignores the load band), ``FEASIBLE`` when it happens to meet all.
        ``balanced``: :func:`balanced_assignment`; ``FEASIBLE``, or
        ``LIMIT_NO_SOLUTION`` when it ends without a feasible assignment.

    Returns
    -------
    Assignment
        ``bound`` is ``inf``: a heuristic proves nothing. A heuristic that ends without a
        feasible point is not a proof of infeasibility, so ``balanced`` never answers
        ``INFEASIBLE``; when its augmenting-path search does prove it (count loads, no
        budgets) the message says so and ``info["proven_infeasible"]`` is True.
    """
    start = time.perf_counter()
    state = _METHODS[method](problem)
    solve_time = time.perf_counter() - start
    violations = "; ".join(state.violations())
    spec = spec_name(NAME, method, VARIANTS)
    info: dict[str, object] = {"method": method, **state.info}
    if method == "balanced" and violations:
        return Assignment.no_solution(
            Status.LIMIT_NO_SOLUTION,
            spec,
            f"{_failure(state)}; its best try violates {violations}",
            solve_time=solve_time,
            info=info,
        )
    return Assignment.from_x(
        problem,
        state.x,
        status=Status.RELAXED if violations else Status.FEASIBLE,
        bound=math.inf,
        backend=spec,
        solve_time=solve_time,
        message=f"violates {violations}" if violations else "",
        info=info,
    )


def _failure(state: _State) -> str:
    if state.info.get("proven_infeasible"):
        return (
            "no feasible assignment exists: the augmenting-path search found a cut "
            "(count loads, no budgets), though a heuristic reports no INFEASIBLE status"
        )
    return (
        "greedy balanced found no feasible assignment (a heuristic: it proves nothing; "
        "an exact backend decides feasibility)"
    )


def topk_assignment(problem: AssignmentProblem) -> Bool:
    """Each client's best `max_experts` allowed experts by effective utility, load ignored.

    Experts are taken best first; one that does not fit one of the client's budget rows
    (storage, compute, ...) is skipped. Past `min_experts` only experts with positive
    effective utility are taken (holding one more can only lower the objective
    otherwise). This is the personalisation baseline: on a problem with a load band it
    usually breaks it.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> p = AssignmentProblem(np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 0.0]]), max_experts=2)
    >>> topk_assignment(p).astype(int)
    array([[0, 1, 1],
           [1, 1, 0]])
    """
    return _topk_state(problem).x


def balanced_assignment(problem: AssignmentProblem) -> Bool:
    """The ``balanced`` greedy assignment (it may break constraints it could not meet).

    1. Propose: rank by rank each client below `min_experts`, then below `max_experts`
       (positive utility only), proposes its next best expert that fits its budgets
       (keeping room for the cheapest experts it still needs); an expert accepts the
       proposals of largest utility up to ``load_max``. Clients whose favourites break
       their budgets propose first; clients still short take the best expert that fits,
       giving up a budget-hungry one if they must.
    2. Repair: experts below ``load_min`` take holders from clients with a free slot or
       clients that drop an expert with load to spare, smallest utility loss first, in
       batches.
    3. Augment: each remaining unit of deficit (an expert below ``load_min``, a client
       below `min_experts`) is fixed along an augmenting path of adds and drops found by
       breadth-first search, never breaking another bound. With count loads and no
       budget rows this is Hoffman's circulation argument: the search
       fails only when no feasible assignment exists.
    4. Balance: with ``balance_penalty > 0`` the proposals run under a load cap that
       anticipates λ (:func:`_balance_cap`); after the repairs, rounds of single-client
       moves (add, drop, swap) that lower λ·imbalance more than they cost in utility,
       in batches checked against the exact objective, until a round gains less than
       1 % (:data:`IMPROVE_RTOL`) of what the rounds before it gained.

    Guarantee: with count loads and no budget rows the result is feasible
    whenever the problem is (any allowed mask, switch cost or balance penalty).

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> p = AssignmentProblem(np.array([[3.0, 1.0], [2.0, 1.5]]), max_experts=1, load_min=1)
    >>> balanced_assignment(p).astype(int)
    array([[1, 0],
           [0, 1]])
    """
    return _balanced_state(problem).x


def _topk_state(problem: AssignmentProblem) -> _State:
    state = _State.start(problem)
    if state.budgeted:  # budgets: expert by expert, skipping what does not fit
        state.propose(problem.min_experts, capacity=False, positive=False)
        state.propose(problem.max_experts, capacity=False, positive=True)
        return state
    ranks = min(int(problem.max_experts.max()), problem.n_experts)
    if ranks == 0:
        return state
    if ranks < problem.n_experts and (problem.min_experts == ranks).all():
        clients, experts = np.nonzero(_top_mask(state.score, ranks) & np.isfinite(state.score))
        state.add(clients, experts)
        return state
    top = _best_first(state.score, ranks)
    value = np.take_along_axis(state.score, top, axis=1)
    rank = np.arange(top.shape[1])
    take = (rank < problem.min_experts[:, None]) | (value > 0)
    take &= (rank < problem.max_experts[:, None]) & np.isfinite(value)
    clients, at = np.nonzero(take)
    state.add(clients, top[clients, at])
    return state


def _balanced_state(problem: AssignmentProblem) -> _State:
    state = _State.start(problem)
    if problem.balance_penalty > 0:
        state.cap = np.minimum(problem.load_max, _balance_cap(state))
    if state.budgeted:  # clients whose favourites break their budgets choose first
        tight = _tight_clients(state)
        state.propose(np.where(tight, problem.min_experts, 0), capacity=True, positive=False)
    state.propose(problem.min_experts, capacity=True, positive=False)
    state.propose(problem.max_experts, capacity=True, positive=True)
    state.cap = problem.load_max
    _fill_clients(state)
    _repair_experts(state)
    _augment(state)
    if problem.balance_penalty > 0:
        _improve(state)
    return state


#: The variants' state builders.
_METHODS = {"balanced": _balanced_state, "topk": _topk_state}


def _balance_cap(state: _State) -> Float:
    """A load cap for the proposals that anticipates the balance penalty.

    A client of typical weight ``w`` moving onto an expert ``d`` above the mean load
    costs about ``2λ·w·d`` (variance), so experts stop being worth the typical utility
    spread ``Δu`` (the standard deviation of the scores) at ``d = Δu / (2λ·w)``. With the
    range metric the cap is the mean when ``λ·w >= Δu``, else none. Without load (every
    weight 0) there is no cap: no move changes the penalty.
    """
    p = state.problem
    finite = state.score[np.isfinite(state.score)]
    top = float(np.abs(finite).max(initial=0.0))
    spread = top * float((finite / top).std()) if top > 0 else 0.0  # no overflow at 1e300
    w = float(state.weight.mean())
    if w == 0.0:
        return np.full(p.n_experts, np.inf)
    mean = float((p.min_experts * state.weight.mean(axis=1)).sum()) / p.n_experts
    if p.balance_metric is BalanceMetric.RANGE:
        over = 0.0 if p.balance_penalty * w >= spread else np.inf
    else:
        over = spread / (2 * p.balance_penalty * w)
    return np.full(p.n_experts, np.ceil(mean + over + w))


def _tight_clients(state: _State) -> Bool:
    """Clients whose `min_experts` favourites do not fit their budgets."""
    p = state.problem
    ranks = max(int(p.min_experts.max()), 1)
    top = _best_first(state.score, ranks)
    top_mask = np.arange(ranks) < p.min_experts[:, None]
    tight = np.zeros(p.n_clients, bool)
    for row, left in zip(p.budgets, state.left, strict=True):
        used = np.where(top_mask, _use(row, np.arange(p.n_clients), top), 0.0).sum(axis=1)
        tight |= used > left + EPS
    return tight


@dataclass
class _State:
    """A partial assignment with running counts, loads and budgets."""

    problem: AssignmentProblem
    score: Float  # effective utility, -inf where not allowed
    weight: Float  # load weight of every pair
    x: Bool
    held: NDArray[np.int64]
    loads: Float
    left: list[Float]  # each budget row's room per client, in `problem.budgets` order
    order: Index | None = None  # each client's experts best first (the first ranks)
    cheap: Index | None = None  # each client's experts cheapest first (budgets only)
    cap: Float = field(default_factory=lambda: np.zeros(0))  # load cap for proposals
    info: dict[str, object] = field(default_factory=dict)

    @classmethod
    def start(cls, p: AssignmentProblem) -> _State:
        return cls(
            problem=p,
            score=p.masked_utility,
            weight=p.weights() if p.weighted_loads else np.broadcast_to(1.0, p.shape),
            x=np.zeros(p.shape, bool),
            held=np.zeros(p.n_clients, np.int64),
            loads=np.zeros(p.n_experts),
            left=[row.limit.copy() for row in p.budgets],
            cap=p.load_max,
        )

    @property
    def budgeted(self) -> bool:
        return bool(self.left)

    def add(self, clients: Index, experts: Index, sign: int = 1) -> None:
        """Add (``sign=1``) or drop (``sign=-1``) distinct (client, expert) pairs."""
        p = self.problem
        self.x[clients, experts] = sign > 0
        self.held += sign * np.bincount(clients, minlength=p.n_clients)
        w = self.weight[clients, experts]
        self.loads += sign * np.bincount(experts, weights=w, minlength=p.n_experts)
        for row, left in zip(p.budgets, self.left, strict=True):
            used = np.bincount(clients, weights=row.at(clients, experts), minlength=p.n_clients)
            left -= sign * used

    def fits(self, clients: Index, experts: Index, need: Index | None = None) -> Bool:
        """Whether each client can add its expert within its budgets, keeping room for
        its `need` cheapest other experts (those it still needs to reach min_experts)."""
        p = self.problem
        ok = np.ones(clients.size, bool)
        extra = [np.zeros(clients.size) for _ in self.left]
        if need is not None and self.budgeted and need.any():
            rows = np.flatnonzero(need > 0)
            reserve = self._reserve(clients[rows], experts[rows], need[rows])
            for room, held in zip(extra, reserve, strict=True):
                room[rows] = held
        for row, left, more in zip(p.budgets, self.left, extra, strict=True):
            ok &= row.at(clients, experts) + more <= left[clients] + EPS
        return ok

    def _reserve(self, clients: Index, experts: Index, need: Index) -> list[Float]:
        """Per budget row: the cost of each client's `need` cheapest experts that it does
        not hold, other than `experts` (``inf`` if it has too few)."""
        p = self.problem
        order = self.cheapest_first()[clients]
        free = ~np.take_along_axis(self.x[clients], order, axis=1) & (order != experts[:, None])
        free &= np.isfinite(np.take_along_axis(self.score[clients], order, axis=1))
        room = self.loads[order] + np.take_along_axis(self.weight[clients], order, axis=1)
        free &= room <= p.load_max[order] + EPS
        count = np.cumsum(free, axis=1)
        at = np.argmax(count >= need[:, None], axis=1)
        short = count[:, -1] < need
        out = []
        for row in p.budgets:
            used = _use(row, clients, order)
            total = np.cumsum(np.where(free, used, 0.0), axis=1)[np.arange(clients.size), at]
            out.append(np.where(short, np.inf, total))
        return out

    def cheapest_first(self) -> Index:
        """Every client's experts by budget share, cheapest first (forbidden ones last)."""
        if self.cheap is None:
            share = np.where(np.isfinite(self.score), self.problem.budget_share, np.inf)
            self.cheap = np.argsort(share, axis=1, kind="stable")
        return self.cheap

    def best_first(self, rank: int, *, exact: bool) -> Index:
        """Every client's experts best first, valid at least up to `rank`.

        `exact` orders by the float64 score with ties by index, widening a partial sort
        on demand; otherwise one full sort of float32 keys (the greedy's proposal order).
        """
        p = self.problem
        if self.order is not None and rank < self.order.shape[1]:
            return self.order
        if exact:
            wide = p.n_experts if self.order is not None else int(p.max_experts.max()) * 2 + 2
            self.order = _best_first(self.score, min(wide, p.n_experts))
        else:
            with np.errstate(over="ignore"):
                keys = (-self.score).astype(np.float32)
            self.order = np.argsort(keys, axis=1)
        return self.order

    def violations(self) -> list[str]:
        """The constraints the current assignment breaks (from the running totals)."""
        p = self.problem
        lo, hi = p.load_min, p.load_max
        checks = [
            ("min_experts", self.held < p.min_experts),
            ("max_experts", self.held > p.max_experts),
            ("load_min", self.loads < lo - EPS * np.maximum(1, lo)),
            ("load_max", self.loads > hi + EPS * np.maximum(1, np.where(np.isinf(hi), 0, hi))),
        ]
        for row, left in zip(p.budgets, self.left, strict=True):
            checks.append((row.name, left < -EPS * np.maximum(1, np.abs(left))))
        return [f"{name} ({int(bad.sum())} broken)" for name, bad in checks if bad.any()]

    # -- step 1: proposals ---------------------------------------------------------------

    def propose(self, limit: NDArray[np.int64], *, capacity: bool, positive: bool) -> None:
        """Every client below `limit` proposes its next expert, round after round.

        With `capacity`, experts accept the best proposals up to ``load_max`` and clients
        keep budget for the cheapest experts they still need; a proposal to a full expert
        still costs the client its round, so that clients reach each expert in rank order
        (skipping ahead lets runners-up take the room of clients that rank it higher).
        With `positive`, a client stops at its first expert of utility <= 0.
        """
        p = self.problem
        at = np.zeros(p.n_clients, np.intp)  # each client's next rank
        clients = np.flatnonzero(self.held < limit)
        while clients.size:
            clients, experts = self._next(clients, at, capacity=capacity, positive=positive)
            at[clients] += 1
            need = np.maximum(p.min_experts[clients] - self.held[clients] - 1, 0)
            ok = self.fits(clients, experts, need if capacity else None)
            if capacity:  # a full expert costs the client its turn (later ranks wait)
                ok &= self.loads[experts] < self.cap[experts] - EPS
            take, chosen = clients[ok], experts[ok]
            if capacity:
                value = self.score[take, chosen]
                keep = self._within_capacity(chosen, self.weight[take, chosen], value)
                take, chosen = take[keep], chosen[keep]
            self.add(take, chosen)
            clients = clients[(self.held[clients] < limit[clients]) & (at[clients] < p.n_experts)]

    def _next(
        self, clients: Index, at: Index, *, capacity: bool, positive: bool
    ) -> tuple[Index, Index]:
        """Move each client's rank past experts it holds or may not hold; drop clients
        with nothing left worth proposing. Returns the clients and their proposals."""
        p = self.problem
        rows = np.arange(clients.size)
        experts = np.empty(clients.size, np.intp)
        alive = np.ones(clients.size, bool)
        while rows.size:
            order = self.best_first(int(at[clients[rows]].max()), exact=not capacity)
            c = clients[rows]
            e = order[c, at[c]]
            experts[rows] = e
            value = self.score[c, e]
            stop = positive & (value <= 0)  # ranked best first: nothing after is better
            if not capacity:  # the exact order puts forbidden pairs (-inf) last
                stop |= np.isneginf(value)
            alive[rows[stop]] = False
            skip = ~stop & (self.x[c, e] | np.isneginf(value))
            at[c[skip]] += 1
            alive[rows[skip & (at[c] >= p.n_experts)]] = False
            rows = rows[skip & (at[c] < p.n_experts)]
        return clients[alive], experts[alive]

    def _within_capacity(self, experts: Index, weight: Float, value: Float) -> Bool:
        """Which proposals each expert accepts, largest value first, within ``load_max``."""
        room = self.cap - self.loads
        demand = np.bincount(experts, weights=weight, minlength=room.size)
        keep = np.ones(experts.size, bool)
        hot = np.flatnonzero((demand > room + EPS)[experts])  # proposals to crowded experts
        if hot.size:
            by = hot[np.lexsort((-value[hot], experts[hot]))]  # by expert, best first
            load = _group_cumsum(experts[by], weight[by])
            keep[by[load > room[experts[by]] + EPS]] = False
        return keep


def _best_first(score: Float, ranks: int) -> Index:
    """Each row's `ranks` best columns, best first (ties by column index)."""
    n, e = score.shape
    if ranks >= e:
        return np.argsort(-score, axis=1, kind="stable")
    top = np.nonzero(_top_mask(score, ranks))[1].reshape(n, ranks)  # in column order
    by = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, by, axis=1)


def _top_mask(score: Float, ranks: int) -> Bool:
    """Each row's `ranks` best columns as a mask; ties at the cut go to lower columns."""
    part = np.argpartition(-score, ranks - 1, axis=1)[:, ranks - 1 : ranks]
    cut = np.take_along_axis(score, part, axis=1)  # each row's ranks-th best value
    chosen = score >= cut
    extra = np.flatnonzero(chosen.sum(axis=1) > ranks)  # rows with surplus ties at the cut
    if extra.size:
        level = score[extra] == cut[extra]
        room = ranks - (score[extra] > cut[extra]).sum(axis=1, keepdims=True)
        chosen[extra] &= ~level | (np.cumsum(level, axis=1) <= room)
    return chosen


def _use(row: BudgetRow, clients: Index, experts: Index) -> Float:
    """What budget `row` charges each client for its experts (`experts` one per client,
    or a row of them per client)."""
    return row.at(clients if experts.ndim == 1 else clients[:, None], experts)


def _group_cumsum(groups: Index, values: Float) -> Float:
    """Running sum of `values` within runs of equal `groups` (sorted), inclusive."""
    total = np.cumsum(values)
    first = np.searchsorted(groups, groups)  # start of each run
    return total - total[first] + values[first]


def _fill_clients(state: _State) -> None:
    """Clients still below `min_experts` take their best expert with load room that fits
    their budgets (keeping room for the rest), revisiting experts the proposals passed.
    A client whose budget is spent gives up its hungriest expert with load to spare for
    cheaper ones."""
    p = state.problem
    for _ in range(p.n_experts):
        _take_best_fitting(state)
        short = np.flatnonzero(state.held < p.min_experts)
        if short.size == 0 or not state.budgeted or not _downgrade(state, short):
            return


def _take_best_fitting(state: _State) -> None:
    p = state.problem
    for _ in range(p.n_experts):
        clients = np.flatnonzero(state.held < p.min_experts)
        if clients.size == 0:
            return
        value = np.where(_fill_candidates(state, clients), state.score[clients], -np.inf)
        experts = value.argmax(axis=1)
        value = value[np.arange(clients.size), experts]
        ok = np.isfinite(value)
        clients, experts, value = clients[ok], experts[ok], value[ok]
        keep = state._within_capacity(experts, state.weight[clients, experts], value)
        if not keep.any():
            return
        state.add(clients[keep], experts[keep])


def _downgrade(state: _State, clients: Index) -> bool:
    """Each client drops its held expert of largest budget share whose load can spare it."""
    p = state.problem
    share = state.problem.budget_share[clients]
    spare = state.loads - p.load_min
    droppable = state.x[clients] & (state.weight[clients] <= spare + EPS)
    share = np.where(droppable, share, -np.inf)
    f = share.argmax(axis=1)
    ok = np.isfinite(share[np.arange(clients.size), f])
    clients, f = _within_spare(state, clients[ok], f[ok])
    state.add(clients, f, sign=-1)
    return clients.size > 0


def _fill_candidates(state: _State, clients: Index) -> Bool:
    """Which experts each client could add now: allowed, new, with load room, and within
    its budgets while keeping room for its cheapest other experts still needed."""
    p = state.problem
    can = ~state.x[clients] & np.isfinite(state.score[clients])
    can &= state.loads + state.weight[clients] <= p.load_max + EPS
    if not state.budgeted:
        return can
    need = p.min_experts[clients] - state.held[clients] - 1
    order = state.cheapest_first()[clients]
    free = np.take_along_axis(can, order, axis=1)  # candidates, cheapest first
    count = np.cumsum(free, axis=1, dtype=np.int64)
    rank = np.empty_like(count)
    np.put_along_axis(rank, order, count - 1, axis=1)  # rank among the free experts
    everyone = np.broadcast_to(np.arange(p.n_experts), can.shape)
    for row, left in zip(p.budgets, state.left, strict=True):
        cost = _use(row, clients, everyone)
        total = np.cumsum(np.where(free, np.take_along_axis(cost, order, 1), 0.0), axis=1)
        first = _prefix_at(total, count, need)  # the `need` cheapest free experts
        more = _prefix_at(total, count, need + 1)  # ... and one more, if e is among them
        reserve = np.where(rank < need[:, None], more[:, None] - cost, first[:, None])
        can &= cost + reserve <= left[clients, None] + EPS
    return can


def _prefix_at(total: Float, count: NDArray[np.int64], need: NDArray[np.int64]) -> Float:
    """Per row: the running total where `count` first reaches `need` (0 for need <= 0,
    ``inf`` when it never does)."""
    rows = np.arange(total.shape[0])
    at = np.argmax(count >= need[:, None], axis=1)
    out = np.where(count[rows, -1] >= need, total[rows, at], np.inf)
    return np.where(need <= 0, 0.0, out)


# -- step 2: batched repair of load_min ----------------------------------------------------


def _repair_experts(state: _State, rounds: int = 8) -> None:
    """Bring experts below ``load_min`` up in batches: each round, every such expert takes
    the clients that lose least by adding it (free slot) or swapping it for their cheapest
    expert with load to spare; each client moves at most once per round."""
    p = state.problem
    for _ in range(rounds):
        short = np.flatnonzero(state.loads < p.load_min - EPS * np.maximum(1, p.load_min))
        if short.size == 0:
            return
        drop, drop_value = _cheapest_spare(state)
        moved = np.zeros(p.n_clients, bool)
        progress = False
        for e in short[np.argsort(state.loads[short] - p.load_min[short], kind="stable")]:
            progress |= _fill_expert(state, int(e), drop, drop_value, moved)
        if not progress:
            return


def _cheapest_spare(state: _State) -> tuple[Index, Float]:
    """Per client: its held expert of least utility whose load can spare the client
    (``inf`` value when none)."""
    p = state.problem
    spare = state.loads - p.load_min
    droppable = state.x & (state.weight <= spare + EPS)
    value = np.where(droppable, state.score, np.inf)
    drop = np.argmin(value, axis=1)
    return drop, value[np.arange(p.n_clients), drop]


def _fill_expert(state: _State, e: int, drop: Index, drop_value: Float, moved: Bool) -> bool:
    """Add holders to expert `e` (below ``load_min``), least utility lost first."""
    p = state.problem
    clients = np.flatnonzero(~moved & ~state.x[:, e] & np.isfinite(state.score[:, e]))
    gain = state.score[clients, e]
    experts = np.full(clients.size, e)
    need = p.min_experts[clients] - state.held[clients]  # > 0: the client is still short
    slot = state.held[clients] < p.max_experts[clients]
    slot &= state.fits(clients, experts, np.maximum(need - 1, 0))
    swap = np.isfinite(drop_value[clients]) & _swap_fits(state, clients, drop[clients], e)
    swap &= (need <= 0) | (not state.budgeted)  # a short client keeps its budget for itself
    loss = np.full(clients.size, np.inf)
    loss[swap] = drop_value[clients[swap]] - gain[swap]
    loss[slot] = np.minimum(loss[slot], -gain[slot])  # a free slot never loses more
    use = np.isfinite(loss)
    clients, loss, slot = clients[use], loss[use], slot[use] & (loss[use] == -gain[use])
    order = _smallest(loss, _enough(state, clients, e))
    clients, slot = clients[order], slot[order]
    f = np.where(slot, -1, drop[clients])
    clients, f = _within_spare(state, clients, f)
    return _take_until_covered(state, clients, f, e, moved)


def _enough(state: _State, clients: Index, e: int) -> int:
    """How many candidates to rank for expert `e`: a margin over its deficit in holders."""
    if clients.size == 0:
        return 0
    deficit = state.problem.load_min[e] - state.loads[e]
    typical = float(state.weight[clients, e].mean())
    return int(4 * math.ceil(deficit / max(typical, EPS))) + 64


def _smallest(values: Float, count: int) -> Index:
    """Indices of the `count` smallest `values`, in increasing order (ties by index)."""
    if count < values.size:
        part = np.argpartition(values, count)[:count]
        part.sort()
        return part[np.argsort(values[part], kind="stable")]
    return np.argsort(values, kind="stable")


def _swap_fits(state: _State, clients: Index, f: Index, e: int) -> Bool:
    """Whether replacing expert `f` by `e` keeps each client within its budgets."""
    p = state.problem
    ok = np.ones(clients.size, bool)
    for row, left in zip(p.budgets, state.left, strict=True):
        ok &= row.at(clients, np.full(clients.size, e)) - row.at(clients, f) <= left[clients] + EPS
    return ok


def _within_spare(state: _State, clients: Index, f: Index) -> tuple[Index, Index]:
    """Keep, in order, the swaps whose dropped expert `f` keeps its load >= ``load_min``
    (``f = -1``: a free slot, always kept)."""
    spare = state.loads - state.problem.load_min
    swaps = np.flatnonzero(f >= 0)
    if swaps.size == 0:
        return clients, f
    by = swaps[np.lexsort((swaps, f[swaps]))]  # by dropped expert, in the given order
    drawn = _group_cumsum(f[by], state.weight[clients[by], f[by]])
    keep = np.ones(clients.size, bool)
    keep[by[drawn > spare[f[by]] + EPS]] = False
    return clients[keep], f[keep]


def _take_until_covered(state: _State, clients: Index, f: Index, e: int, moved: Bool) -> bool:
    """Apply moves onto `e` in order until its deficit is covered or ``load_max`` hit."""
    p = state.problem
    if clients.size == 0:
        return False
    cover = np.cumsum(state.weight[clients, e])
    count = int(np.searchsorted(cover, p.load_min[e] - state.loads[e] - EPS)) + 1
    room = p.load_max[e] - state.loads[e]
    count = min(count, int(np.searchsorted(cover, room + EPS, side="right")), clients.size)
    clients, f = clients[:count], f[:count]
    swap = f >= 0
    state.add(clients[swap], f[swap], sign=-1)
    state.add(clients, np.full(count, e))
    moved[clients] = True
    return count > 0


# -- step 3: augmenting paths ---------------------------------------------------------------


def _augment(state: _State) -> None:
    """Fix every remaining deficit by augmenting paths (count loads only).

    The network is source → client (``min_experts..max_experts``) → expert (allowed
    pairs, 0..1) → sink (``load_min..load_max``) with a sink → source arc. A deficit arc
    gets one more unit along a cycle through it in the residual graph, where arcs can drop
    only to their lower bound; without budgets, a failed search leaves a cut that proves
    the problem infeasible (Hoffman).
    """
    p = state.problem
    if p.load_weight is not None:
        return
    lo, hi = (band.astype(np.float64) for band in p.holder_band)
    deficit = (
        np.maximum(lo - state.loads, 0).sum() + np.maximum(p.min_experts - state.held, 0).sum()
    )
    paths = 0
    for _ in range(int(deficit)):  # each path removes one unit of deficit
        experts = np.flatnonzero(state.loads < lo)
        clients = np.flatnonzero(state.held < p.min_experts)
        if experts.size == 0 and clients.size == 0:
            break
        search = _Search(state, lo, hi)
        if clients.size:  # clients first: an expert's path may spend a client's budget
            path = search.to_source(int(clients[0]))
        else:
            path = search.to_expert(int(experts[0]))
        if path is None:
            state.info["proven_infeasible"] = not state.budgeted
            break
        search.apply(path)
        paths += 1
    state.info["augmenting_paths"] = paths


@dataclass
class _Search:
    """Breadth-first search in the residual graph of the current assignment.

    Nodes: clients ``0..N-1``, experts ``N..N+E-1``, the source ``S`` and sink ``T``.
    A client reached from an expert drops it; a client moving on to an expert adds it.
    """

    state: _State
    lo: Float
    hi: Float

    def __post_init__(self) -> None:
        n, e = self.state.problem.shape
        self.S, self.T = n + e, n + e + 1
        self.parent = np.full(n + e + 2, -2, dtype=np.int64)  # -2: not reached

    def to_expert(self, target: int) -> list[int] | None:
        """A path sink ⇝ expert `target` (below ``load_min``)."""
        n = self.state.problem.n_clients
        self.parent[self.T] = -1
        return self._run([], sink=True, target=n + target)

    def to_source(self, client: int) -> list[int] | None:
        """A path client ⇝ source (the client is below ``min_experts``)."""
        self.parent[client] = -1
        return self._run([client], sink=False, target=self.S)

    def _run(self, start: list[int], *, sink: bool, target: int) -> list[int] | None:
        """Expand layer by layer from the `start` clients (and the sink, if `sink`)."""
        clients = np.array(start, dtype=np.intp)
        experts = np.zeros(0, dtype=np.intp)
        source = False
        while self.parent[target] == -2:
            new_experts, new_clients = self._from_clients(clients), self._from_experts(experts)
            new_source = self._to_source(clients) | (sink and self._reach(self.S, self.T))
            new_sink = self._to_sink(experts)
            if sink:
                new_experts = np.union1d(new_experts, self._sink_to_experts())
            if source:
                new_clients = np.union1d(new_clients, self._source_to_clients())
            if new_experts.size + new_clients.size == 0 and not (new_source or new_sink):
                return None
            clients, experts, source, sink = new_clients, new_experts, new_source, new_sink
        return self._path(target)

    def _reach(self, node: int, parent: int) -> bool:
        if self.parent[node] != -2:
            return False
        self.parent[node] = parent
        return True

    def _from_clients(self, clients: Index) -> Index:
        """Experts the frontier clients can add (dropping their parent frees budget)."""
        st, n = self.state, self.state.problem.n_clients
        if clients.size == 0:
            return clients
        can = ~st.x[clients] & np.isfinite(st.score[clients]) & (self.parent[n:-2] == -2)
        if st.budgeted:
            can &= self._budget_ok(clients)
        new = np.flatnonzero(can.any(axis=0))
        self.parent[n + new] = clients[np.argmax(can[:, new], axis=0)]
        return new

    def _budget_ok(self, clients: Index) -> Bool:
        p, st, n = self.state.problem, self.state, self.state.problem.n_clients
        dropped = self.parent[clients] - n  # the expert each client drops, if any
        swap = (dropped >= 0) & (dropped < p.n_experts)
        ok = np.ones((clients.size, p.n_experts), bool)
        # a client below min_experts keeps budget for the experts it still needs
        need = np.maximum(p.min_experts[clients] - st.held[clients] - (~swap).astype(np.int64), 0)
        reserve = st._reserve(clients, np.full(clients.size, -1), need) if need.any() else None
        for i, (row, left) in enumerate(zip(p.budgets, st.left, strict=True)):
            room = left[clients].copy()
            room[swap] += row.at(clients[swap], dropped[swap])
            if reserve is not None:
                room -= reserve[i]
            full = np.broadcast_to(np.arange(p.n_experts), ok.shape)
            ok &= _use(row, clients, full) <= room[:, None] + EPS
        return ok

    def _from_experts(self, experts: Index) -> Index:
        """Clients holding a frontier expert (they would drop it)."""
        st, n = self.state, self.state.problem.n_clients
        if experts.size == 0:
            return experts
        holds = st.x[:, experts] & (self.parent[:n] == -2)[:, None]
        new = np.flatnonzero(holds.any(axis=1))
        self.parent[new] = n + experts[np.argmax(holds[new], axis=1)]
        return new

    def _to_source(self, clients: Index) -> bool:
        """A frontier client above ``min_experts`` can end with one expert fewer."""
        p, st = self.state.problem, self.state
        spare = clients[st.held[clients] > p.min_experts[clients]]
        return spare.size > 0 and self._reach(self.S, int(spare[0]))

    def _to_sink(self, experts: Index) -> bool:
        """A frontier expert below ``load_max`` can take one more holder."""
        room = experts[self.state.loads[experts] < self.hi[experts]]
        n = self.state.problem.n_clients
        return room.size > 0 and self._reach(self.T, n + int(room[0]))

    def _sink_to_experts(self) -> Index:
        """Experts above ``load_min`` can lose a holder."""
        n = self.state.problem.n_clients
        new = np.flatnonzero((self.state.loads > self.lo) & (self.parent[n:-2] == -2))
        self.parent[n + new] = self.T
        return new

    def _source_to_clients(self) -> Index:
        """Clients below ``max_experts`` can hold one more expert."""
        p, st, n = self.state.problem, self.state, self.state.problem.n_clients
        new = np.flatnonzero((st.held < p.max_experts) & (self.parent[:n] == -2))
        self.parent[new] = self.S
        return new

    def _path(self, target: int) -> list[int]:
        path = [target]
        while self.parent[path[-1]] >= 0:
            path.append(int(self.parent[path[-1]]))
        return path[::-1]

    def apply(self, path: list[int]) -> None:
        """Flip the client–expert pairs along `path`: client → expert adds, expert →
        client drops."""
        n, st = self.state.problem.n_clients, self.state
        for a, b in itertools.pairwise(path):
            if a < n <= b < self.S:
                st.add(np.array([a]), np.array([b - n]))
            elif b < n <= a < self.S:
                st.add(np.array([b]), np.array([a - n]), sign=-1)


# -- step 4: the soft balance term ----------------------------------------------------------


#: A round of balance moves that gains less than this share of what the rounds before it
#: gained ends the search (diminishing returns).
IMPROVE_RTOL = 0.01


def _improve(state: _State, rtol: float = IMPROVE_RTOL) -> None:
    """Rounds of single-client moves (add, drop or swap one expert) whose utility change
    beats the change of ``λ·imbalance``; many clients move per round. A batch is kept only
    if the exact objective improves, else its better half is tried. Stops when no batch
    improves, or when a round gains less than `rtol` of the total gained by the rounds
    before it. Every round improves the objective strictly, so the search ends; a guard of
    one round per client only bounds pathological cases."""
    done = 0
    gained = 0.0
    while done < max(state.problem.n_clients, 100):
        before = _penalised(state)
        clients, add, drop = _best_moves(state)
        if not _try_moves(state, clients, add, drop, before):
            break
        done += 1
        gain = _penalised(state) - before
        if done > 1 and gain < rtol * gained:
            break
        gained += gain
    state.info["improving_rounds"] = done


def _try_moves(state: _State, clients: Index, add: Index, drop: Index, before: float) -> bool:
    """Apply the longest prefix of halving length that improves on `before`."""
    while clients.size:
        _apply_moves(state, clients, add, drop)
        if _penalised(state) > before + EPS * max(1.0, abs(before)):
            return True
        _apply_moves(state, clients, drop, add)  # undo
        half = clients.size // 2
        clients, add, drop = clients[:half], add[:half], drop[:half]
    return False


def _penalised(state: _State) -> float:
    """Σ utility·x − λ·imbalance(loads): the objective up to the constant switch term."""
    p = state.problem
    value = float(state.score[state.x].sum())
    return value - p.balance_penalty * imbalance(state.loads, p.balance_metric)


def _marginals(state: _State) -> tuple[Float, Float]:
    """Approximate change of the penalty when each pair is added or dropped (variance
    formula, exact for one count move; the range metric is scaled to the current spread)."""
    p, loads, w = state.problem, state.loads, state.weight
    lam, total, e = p.balance_penalty, state.loads.sum(), p.n_experts
    if p.balance_metric is BalanceMetric.RANGE:
        lam /= max(loads.max() - loads.min(), 1.0)
    add = lam * (w * (2 * loads + w) - w * (2 * total + w) / e)
    drop = lam * (w * (w - 2 * loads) + w * (2 * total - w) / e)
    return add, drop


def _budget_room(state: _State) -> Bool:
    """Which pairs each client could add within its budgets now."""
    p = state.problem
    ok = np.ones(p.shape, bool)
    for row, left in zip(p.budgets, state.left, strict=True):
        ok &= row.cost <= left[:, None] + EPS
    return ok


def _best_moves(state: _State) -> tuple[Index, Index, Index]:
    """Each client's best improving move by the marginal estimate, best first, kept while
    it still improves once the moves before it into and out of the same experts are
    counted, and within the load band. ``add``/``drop`` are -1 where a move has no such
    side."""
    p = state.problem
    add_pen, drop_pen = _marginals(state)
    rows = np.arange(p.n_clients)
    addable = ~state.x & np.isfinite(state.score) & (state.loads + state.weight <= p.load_max + EPS)
    addable &= _budget_room(state)
    droppable = state.x & (state.loads - state.weight >= p.load_min - EPS)
    add_gain = np.where(addable, state.score - add_pen, -np.inf)
    drop_gain = np.where(droppable, -state.score - drop_pen, -np.inf)
    add, drop = add_gain.argmax(axis=1), drop_gain.argmax(axis=1)
    a, d = add_gain[rows, add], drop_gain[rows, drop]
    can_add, can_drop = state.held < p.max_experts, state.held > p.min_experts
    options = np.stack([np.where(can_add, a, -np.inf), np.where(can_drop, d, -np.inf), a + d])
    kind = options.argmax(axis=0)
    gain = options[kind, rows]
    add = np.where(kind == 1, -1, add)
    drop = np.where(kind == 0, -1, drop)
    good = np.flatnonzero(gain > EPS)
    good = good[np.argsort(-gain[good], kind="stable")]
    good = good[_still_improving(state, good, add[good], drop[good], gain[good])]
    return good, add[good], drop[good]


def _still_improving(state: _State, clients: Index, add: Index, drop: Index, gain: Float) -> Bool:
    """Which moves (best first) still gain once the earlier moves of the batch are
    counted: each unit of load moved earlier into `add` (out of `drop`) raises (lowers)
    its marginal penalty by 2λ per unit; and the loads stay within the band."""
    p = state.problem
    lam = p.balance_penalty
    if p.balance_metric is BalanceMetric.RANGE:
        lam /= max(state.loads.max() - state.loads.min(), 1.0)
    w_in = np.where(add >= 0, state.weight[clients, np.maximum(add, 0)], 0.0)
    w_out = np.where(drop >= 0, state.weight[clients, np.maximum(drop, 0)], 0.0)
    before_in, before_out = _earlier_in_group(add, w_in), _earlier_in_group(drop, w_out)
    gain = gain - 2 * lam * (before_in * w_in + before_out * w_out)
    ok = gain > EPS
    into, out = np.maximum(add, 0), np.maximum(drop, 0)
    ok &= (add < 0) | (state.loads[into] + before_in + w_in <= p.load_max[into] + EPS)
    ok &= (drop < 0) | (state.loads[out] - before_out - w_out >= p.load_min[out] - EPS)
    return ok


def _earlier_in_group(groups: Index, values: Float) -> Float:
    """For each item: the sum of `values` of the items before it with the same group
    (groups < 0 form no group: 0)."""
    by = np.argsort(groups, kind="stable")
    ordered = values[by]
    before = np.cumsum(ordered) - ordered
    start = np.searchsorted(groups[by], groups[by])
    out = np.empty(values.size)
    out[by] = before - before[start]
    return np.where(groups < 0, 0.0, out)


def _apply_moves(state: _State, clients: Index, add: Index, drop: Index) -> None:
    dropping, adding = drop >= 0, add >= 0
    state.add(clients[dropping], drop[dropping], sign=-1)
    state.add(clients[adding], add[adding])
