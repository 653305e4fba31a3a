"""Greedy heuristics in numpy: ``topk`` (personalisation only) and ``balanced`` (load-aware).

``topk`` gives each client its best experts and ignores the load band: the personalisation
baseline that FLEX-MoE beats. ``balanced`` respects every constraint: clients take their
best experts rank by rank while experts accept holders up to ``load_max``, then a repair
pass moves holders onto experts below ``load_min`` at the smallest utility loss. Neither
proves anything: ``bound`` is ``inf`` and the status is never ``OPTIMAL``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.assign.problem import AssignmentProblem
from flexmoe.assign.result import Assignment, Status
from flexmoe.assign.verify import verify

__all__ = [
    "EXACT",
    "NAME",
    "REQUIRED_MODULES",
    "VARIANTS",
    "VARIANT_OPTION",
    "solve",
    "topk_assignment",
]

NAME = "greedy"
EXACT = False
REQUIRED_MODULES: tuple[str, ...] = ()
VARIANT_OPTION = "method"
VARIANTS = ("balanced", "topk")

Float = NDArray[np.float64]
Bool = NDArray[np.bool_]


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
        Both methods are deterministic and run in milliseconds.
    method : {"balanced", "topk"}
        ``topk``: each client its best `max_experts` allowed experts that fit its storage
        and compute budgets, load ignored; the answer is ``RELAXED`` when it breaks the
        load band (``FEASIBLE`` if it happens to meet it). ``balanced``: see the module
        docstring; ``FEASIBLE``, or ``LIMIT_NO_SOLUTION`` when the heuristic cannot meet
        every constraint (that proves nothing about feasibility).

    Notes
    -----
    Ties are broken by expert index. The soft balance term is not optimised beyond the
    load band; the switch cost is, through the effective utility.
    """
    if method not in VARIANTS:
        raise ValueError(f"`method` must be one of {', '.join(VARIANTS)}; got {method!r}")
    start = time.perf_counter()
    if method == "topk":
        x = topk_assignment(problem)
        status = Status.RELAXED
    else:
        x = _balanced(problem)
        status = Status.FEASIBLE
    solve_time = time.perf_counter() - start
    spec = f"{NAME}:{method}"
    if method == "balanced":
        verdict = verify(problem, x)
        if not verdict.ok:
            return Assignment.no_solution(
                Status.LIMIT_NO_SOLUTION,
                spec,
                f"greedy balanced found no feasible assignment (a heuristic: an exact "
                f"backend decides feasibility); its best try violates {verdict.reason}",
                solve_time=solve_time,
            )
    return Assignment.from_x(
        problem,
        x,
        status=status,
        bound=np.inf,
        backend=spec,
        solve_time=solve_time,
        info={"method": method},
    )


def topk_assignment(problem: AssignmentProblem) -> Bool:
    """Each client's best `max_experts` allowed experts by effective utility, ignoring load.

    Storage and compute budgets are respected greedily (an expert that does not fit is
    skipped). This is the personalisation baseline.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> p = AssignmentProblem(np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 0.0]]), max_experts=2)
    >>> topk_assignment(p).astype(int)
    array([[0, 1, 1],
           [1, 1, 0]])
    """
    state = _State.start(problem)
    state.take_by_rank(accept_all=True)
    return state.x


@dataclass
class _State:
    """Partial assignment with running counts, loads and budgets."""

    problem: AssignmentProblem
    score: Float  # effective utility, -inf where not allowed
    order: NDArray[np.int64]  # each client's best experts, best first (widened on demand)
    weight: Float  # load weight of every pair
    x: Bool
    held: NDArray[np.int64]
    loads: Float
    storage_left: Float | None
    compute_left: Float | None
    storage_reserve: Float | None  # [k]: the k smallest expert sizes, summed
    compute_reserve: Float | None  # [n, k]: client n's k cheapest compute costs, summed

    @classmethod
    def start(cls, p: AssignmentProblem) -> _State:
        score = np.where(p.allowed_mask(), p.effective_utility(), -np.inf)
        ranks = min(p.n_experts, 2 * int(p.max_experts.max()) + 2)
        sizes, costs, budget = p.expert_size, p.compute_cost, p.compute_budget
        return cls(
            problem=p,
            score=score,
            order=_best_first(score, ranks),
            weight=p.weights(),
            x=np.zeros(p.shape, bool),
            held=np.zeros(p.n_clients, np.int64),
            loads=np.zeros(p.n_experts),
            storage_left=None if p.storage is None else p.storage.astype(np.float64).copy(),
            compute_left=None if budget is None else budget.astype(np.float64).copy(),
            storage_reserve=None if sizes is None else _prefix(np.sort(sizes)),
            compute_reserve=None if costs is None else _prefix(np.sort(costs, axis=1)),
        )

    def fits(self, clients: NDArray[np.int64], experts: NDArray[np.int64]) -> Bool:
        """Whether each (client, expert) pair is allowed, new, and within the budgets,
        keeping budget for the cheapest experts still needed to reach min_experts (counting
        the cheapest overall, a lower bound)."""
        p = self.problem
        ok = np.isfinite(self.score[clients, experts]) & ~self.x[clients, experts]
        need = np.maximum(p.min_experts[clients] - self.held[clients] - 1, 0)
        if self.storage_left is not None and self.storage_reserve is not None:
            size = p.expert_size[experts]  # type: ignore[index]
            ok &= size + self.storage_reserve[need] <= self.storage_left[clients] + 1e-9
        if self.compute_left is not None and self.compute_reserve is not None:
            cost = p.compute_cost[clients, experts]  # type: ignore[index]
            reserve = self.compute_reserve[clients, need]
            ok &= cost + reserve <= self.compute_left[clients] + 1e-9
        return ok

    def add(self, clients: NDArray[np.int64], experts: NDArray[np.int64], sign: int = 1) -> None:
        """Add (sign=1) or remove (sign=-1) holdings; pairs must be distinct."""
        p = self.problem
        self.x[clients, experts] = sign > 0
        np.add.at(self.held, clients, sign)
        np.add.at(self.loads, experts, sign * self.weight[clients, experts])
        if self.storage_left is not None and p.expert_size is not None:
            np.add.at(self.storage_left, clients, -sign * p.expert_size[experts])
        if self.compute_left is not None and p.compute_cost is not None:
            np.add.at(self.compute_left, clients, -sign * p.compute_cost[clients, experts])

    def take_by_rank(self, *, accept_all: bool, limit: NDArray[np.int64] | None = None) -> None:
        """Rank by rank, every client below its limit proposes its next expert; experts
        accept the best proposals up to ``load_max`` (everything if `accept_all`)."""
        p = self.problem
        limit = p.max_experts if limit is None else limit
        for rank in range(p.n_experts):
            clients = np.flatnonzero(self.held < limit)
            if clients.size == 0:
                break
            if rank == self.order.shape[1]:
                self.order = _best_first(self.score, p.n_experts)
            experts = self.order[clients, rank]
            keep = self.fits(clients, experts)
            clients, experts = clients[keep], experts[keep]
            if not accept_all:
                clients, experts = self._within_capacity(clients, experts)
            self.add(clients, experts)

    def _within_capacity(
        self, clients: NDArray[np.int64], experts: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The proposals each expert accepts, best first, without passing ``load_max``."""
        p = self.problem
        weight = self.weight[clients, experts]
        room = p.load_max - self.loads
        demand = np.bincount(experts, weights=weight, minlength=p.n_experts)
        hot = np.flatnonzero((demand > room + 1e-9)[experts])  # proposals to crowded experts
        if hot.size == 0:
            return clients, experts
        by = np.argsort(-self.score[clients[hot], experts[hot]], kind="stable")
        by = hot[by[np.argsort(experts[hot][by], kind="stable")]]  # by expert, best first
        ordered = experts[by]
        before = np.cumsum(weight[by]) - weight[by]
        first = np.searchsorted(ordered, ordered)  # start of each expert's block
        within = before - before[first] + weight[by]  # each proposal's expert load if accepted
        keep = np.ones(clients.size, bool)
        keep[by[within > room[ordered] + 1e-9]] = False
        return clients[keep], experts[keep]


def _best_first(score: Float, ranks: int) -> NDArray[np.int64]:
    """Each row's `ranks` best columns, best first (ties by index)."""
    if ranks < score.shape[1]:
        top = np.argpartition(-score, ranks - 1, axis=1)[:, :ranks]
        top.sort(axis=1)  # ties by index before the stable sort below
    else:
        top = np.broadcast_to(np.arange(score.shape[1]), score.shape)
    by = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, by, axis=1)


def _prefix(ordered: Float) -> Float:
    """Prefix sums along the last axis with a leading 0: ``[..., k]`` sums k items."""
    zeros = np.zeros((*ordered.shape[:-1], 1))
    return np.concatenate([zeros, np.cumsum(ordered, axis=-1)], axis=-1)


def _balanced(problem: AssignmentProblem) -> Bool:
    state = _State.start(problem)
    state.take_by_rank(accept_all=False, limit=problem.min_experts)  # every client its minimum
    state.take_by_rank(accept_all=False)  # then up to its maximum
    _repair_load_min(state)
    return state.x


def _repair_load_min(state: _State) -> None:
    """Bring experts under ``load_min`` up: add them to clients with a free slot, else move
    a holding from an expert with load to spare, smallest utility loss first."""
    p = state.problem
    for e in np.argsort(state.loads - p.load_min):
        for _ in range(3):  # adds first; moves may free room for more
            deficit = p.load_min[e] - state.loads[e]
            if deficit <= 1e-9:
                break
            _add_holders(state, int(e), deficit)
            deficit = p.load_min[e] - state.loads[e]
            if deficit > 1e-9:
                _move_holders(state, int(e), deficit)


def _add_holders(state: _State, e: int, deficit: float) -> None:
    p = state.problem
    clients = np.flatnonzero(state.held < p.max_experts)
    clients = clients[state.fits(clients, np.full(clients.size, e))]
    clients = clients[np.argsort(-state.score[clients, e], kind="stable")]
    _take_until(state, clients, np.full(clients.size, e), deficit)


def _move_holders(state: _State, e: int, deficit: float) -> None:
    """Clients swap a held expert f (with load to spare) for `e`, cheapest loss first."""
    p = state.problem
    w = state.weight
    spare = state.loads - p.load_min  # load each expert can give away
    candidates = state.x & (w <= spare + 1e-9) & (np.arange(p.n_experts) != e)
    candidates &= ~state.x[:, [e]] & np.isfinite(state.score[:, [e]])
    loss = np.where(candidates, state.score - state.score[:, [e]], np.inf)
    drop = np.argmin(loss, axis=1)
    clients = np.flatnonzero(np.isfinite(loss[np.arange(p.n_clients), drop]))
    clients = clients[np.argsort(loss[clients, drop[clients]], kind="stable")]
    clients = clients[_swap_fits(state, clients, drop[clients], e)]
    f = drop[clients]
    # per dropped expert f: keep swaps while the load drawn from f stays within its spare
    by = np.lexsort((np.arange(f.size), f))
    drawn = np.empty(f.size)
    weight = w[clients[by], f[by]]
    before = np.cumsum(weight) - weight
    drawn[by] = before - before[np.searchsorted(f[by], f[by])] + weight
    keep = drawn <= spare[f] + 1e-9
    clients, f = clients[keep], f[keep]
    gain = np.cumsum(w[clients, e])
    count = int(np.searchsorted(gain, deficit - 1e-9)) + 1
    count = min(count, int(np.searchsorted(gain, p.load_max[e] - state.loads[e] + 1e-9, "right")))
    state.add(clients[:count], f[:count], sign=-1)
    state.add(clients[:count], np.full(count, e))


def _swap_fits(state: _State, clients: Any, f: Any, e: int) -> Bool:
    """Whether replacing expert f by `e` keeps each client within its budgets."""
    p = state.problem
    ok = np.ones(clients.size, bool)
    if state.storage_left is not None and p.expert_size is not None:
        ok &= p.expert_size[e] - p.expert_size[f] <= state.storage_left[clients] + 1e-9
    if state.compute_left is not None and p.compute_cost is not None:
        cost = p.compute_cost
        ok &= cost[clients, e] - cost[clients, f] <= state.compute_left[clients] + 1e-9
    return ok


def _take_until(state: _State, clients: Any, experts: Any, deficit: float) -> None:
    """Add pairs in order until `deficit` of load is covered (or ``load_max`` reached)."""
    p = state.problem
    if clients.size == 0:
        return
    weight = state.weight[clients, experts]
    e = int(experts[0])
    cover = np.cumsum(weight)
    count = int(np.searchsorted(cover, deficit - 1e-9)) + 1
    room = p.load_max[e] - state.loads[e]
    count = min(count, int(np.searchsorted(cover, room + 1e-9, side="right")))
    state.add(clients[:count], experts[:count])
