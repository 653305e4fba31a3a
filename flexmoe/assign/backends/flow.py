"""Exact min-cost flow (OR-Tools or networkx) for count loads and count-equivalent budgets.

With unit expert sizes, count loads and no storage or compute rows the constraint matrix of
the assignment problem is a bipartite incidence matrix, so the problem is a min-cost flow:
integral, exact, and fast. This backend builds the network with vectorised numpy, scales
float utilities to int64 costs with a certified rounding error, and solves it with OR-Tools'
cost-scaling ``SimpleMinCostFlow`` (default) or networkx's network simplex
(``"flow:networkx"``, pure Python, for cross-checks).

Large problems are first solved on each client's best candidate experts; node potentials
of the residual network then prove that no pruned pair would improve the flow, or the
pairs that would are added and the flow is solved again (see :func:`solve`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.assign.problem import FRIENDLY_ROWS, AssignmentProblem, BalanceMetric
from flexmoe.assign.registry import Variant, spec_name
from flexmoe.assign.result import Assignment, Status

__all__ = ["EXACT", "NAME", "VARIANTS", "VARIANT_OPTION", "solve", "unsupported"]

NAME = "flow"
EXACT = True
VARIANT_OPTION = "engine"
VARIANTS = (
    Variant("ortools", ("ortools",), extra="", description="OR-Tools' SimpleMinCostFlow"),
    Variant("networkx", ("networkx",), extra="", description="networkx's network simplex"),
)
#: Scaled costs are kept below 2**62 / (4·(path nodes + 1)·(nodes + 1)): OR-Tools multiplies
#: costs by (nodes + 1) and its potentials move by at most ~1.5·(path nodes)·(largest scaled
#: cost), so neither a cost nor a potential can overflow int64 (no BAD_COST_RANGE).
_COST_BUDGET = 2**62
#: Candidate experts per client beyond ``max_experts`` in the first, pruned solve.
_EXTRA_CANDIDATES = 8
#: Re-solves that add pairs failing the certificate before falling back to every pair.
_MAX_ROUNDS = 6

Int = NDArray[np.int64]
Bool = NDArray[np.bool_]

_INFEASIBLE = (
    "no assignment meets min_experts/max_experts per client, the holder band "
    "[ceil(load_min), floor(load_max)] per expert and the allowed mask together: some group "
    "of clients cannot reach enough allowed experts (or some group of experts enough "
    "clients); the aggregate precheck passed and the min-cost flow has no feasible flow"
)

#: Every native status of the engines, mapped to a status and a message.
_NATIVE: dict[str, tuple[Status, str]] = {
    "OPTIMAL": (Status.OPTIMAL, ""),
    "INFEASIBLE": (Status.INFEASIBLE, _INFEASIBLE),
    "NOT_SOLVED": (Status.ERROR, "the min-cost flow solver returned NOT_SOLVED"),
    "FEASIBLE": (Status.ERROR, "the min-cost flow solver stopped at FEASIBLE, not OPTIMAL"),
    "BAD_RESULT": (Status.ERROR, "the min-cost flow solver failed its own result check"),
    "BAD_COST_RANGE": (
        Status.ERROR,
        "the scaled costs overflow the min-cost flow solver (BAD_COST_RANGE); please report "
        "the problem: the scale is meant to rule this out",
    ),
    "BAD_CAPACITY_RANGE": (Status.ERROR, "capacities overflow int64 (BAD_CAPACITY_RANGE)"),
    "UNBALANCED": (Status.ERROR, "supplies do not sum to zero (UNBALANCED): a flow backend bug"),
    "UNBOUNDED": (Status.ERROR, "networkx reports an unbounded flow: a flow backend bug"),
    "NEGATIVE_CYCLE": (
        Status.ERROR,
        "the solver's flow leaves a negative-cost cycle in the residual network, so it is not "
        "optimal; the optimality certificate refused it",
    ),
}


def unsupported(problem: AssignmentProblem) -> str | None:
    """Why the flow structure cannot express `problem` (None: it can).

    A budget row that costs each client the same for all its allowed experts only caps
    how many experts the client holds (it is count-equivalent): flow takes it through
    ``problem.most_experts``. Any other budget row needs the MILP.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> unsupported(AssignmentProblem(np.ones((2, 2)), max_experts=1, load_weight=np.ones((2, 2))))
    '`load_weight` (weighted loads) needs the `milp` backend'
    """
    if not problem.count_equivalent:
        return _budget_reason(problem)
    if problem.load_weight is not None:
        return "`load_weight` (weighted loads) needs the `milp` backend"
    if problem.balance_penalty > 0 and problem.balance_metric is BalanceMetric.RANGE:
        return "balance_metric='range' with balance_penalty > 0 needs the `milp` backend"
    if problem.balance_penalty > 0 and problem.fixed_total is None:
        return (
            "`balance_penalty` > 0 with a variable total (min_experts != max_experts) needs "
            "the `milp` backend"
        )
    return None


def _budget_reason(problem: AssignmentProblem) -> str:
    """Names the first budget row that is not count-equivalent."""
    rows = zip(problem.budgets, problem.count_equivalent_rows, strict=True)
    name = next(row.name for row, counts in rows if not counts)
    if name in FRIENDLY_ROWS:
        cost, limit = FRIENDLY_ROWS[name]
        return f"`{limit}` (with `{cost}`) needs the `milp` backend"
    return (
        f"budget row `{name}` needs the `milp` backend (its cost differs across a client's "
        "allowed experts)"
    )


# -- the network ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arcs:
    """Arcs of a network: tail and head nodes, capacities and scaled unit costs."""

    tails: NDArray[np.int32]
    heads: NDArray[np.int32]
    caps: Int
    costs: Int

    @classmethod
    def join(cls, *parts: _Arcs) -> _Arcs:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _ARC_FIELDS))


_ARC_FIELDS = ("tails", "heads", "caps", "costs")


@dataclass(frozen=True)
class _Network:
    """The flow network of a problem with every cost scaled to int64.

    Nodes: clients ``0..N-1``, experts ``N..N+E-1``, source ``s = N+E``, sink ``t = N+E+1``.
    Client→expert arcs (capacity 1, cost ``cost[n, e]``) are chosen per solve; `fixed`
    holds the others: s→client, expert→t (unit arcs of increasing cost under a variance
    penalty) and the return arc t→s. Lower bounds are folded into `supplies`.
    """

    problem: AssignmentProblem
    cost: Int
    fixed: _Arcs
    supplies: Int
    scale: float
    max_error: float
    """Largest |scaled cost / scale − true cost| of any arc, in objective units."""
    most_arcs: int
    """How many rounded-cost unit arcs any feasible flow can use."""

    @property
    def n_nodes(self) -> int:
        return self.problem.n_clients + self.problem.n_experts + 2


def _build_network(problem: AssignmentProblem) -> _Network:
    """Scale the costs and lay out the fixed arcs and supplies (vectorised)."""
    n, e = problem.shape
    most = problem.most_experts
    lo, hi = problem.holder_band
    unit_expert, unit_cost = _penalty_units(problem, lo, hi)
    utility = problem.effective_utility()
    allowed = utility if problem.allowed is None else utility[problem.allowed]
    reach = float(np.abs(allowed).max(initial=0.0))
    magnitude = max(reach, float(np.abs(unit_cost).max(initial=0.0)))
    scale = _scale(magnitude, n + e + 2, 2 * min(n, e) + 6)
    cost, error = _rounded(utility, -scale, problem.allowed)
    penalty, penalty_error = _rounded(unit_cost, scale, None)
    fixed = _fixed_arcs(problem, most, lo, hi, unit_expert, penalty)
    supplies = np.zeros(n + e + 2, dtype=np.int64)
    supplies[:n] = problem.min_experts
    supplies[n : n + e] = -lo
    supplies[n + e] = -int(problem.min_experts.sum())
    supplies[n + e + 1] = int(lo.sum())
    total = min(int(most.sum()), int(hi.sum()))
    units = max(0, total - int(lo.sum())) if unit_expert.size else 0
    return _Network(
        problem, cost, fixed, supplies, scale, max(error, penalty_error) / scale, total + units
    )


def _penalty_units(problem: AssignmentProblem, lo: Int, hi: Int) -> tuple[Int, NDArray[np.float64]]:
    """The optional holder units of a variance penalty: expert and marginal cost of each.

    With the total F fixed, ``Σ_e (L_e − L̄)² = Σ_e L_e² − F²/E`` and the k-th holder of an
    expert adds ``2k − 1`` to ``Σ L²``. The first ``lo[e]`` units are forced by the band.
    """
    if problem.balance_penalty == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    count = np.maximum(hi - lo, 0)
    expert = np.repeat(np.arange(problem.n_experts), count)
    start = np.cumsum(count) - count
    k = lo[expert] + 1 + np.arange(expert.size) - start[expert]
    return expert, problem.balance_penalty * (2.0 * k - 1.0)


def _scale(magnitude: float, n_nodes: int, path_nodes: int) -> float:
    """A power of two that maps `magnitude` to at most the safe largest cost."""
    limit = _COST_BUDGET // (4 * (path_nodes + 1) * (n_nodes + 1))
    if magnitude == 0.0:
        return 1.0
    exponent = min(math.floor(math.log2(limit) - math.log2(magnitude)), 1000)
    while magnitude * 2.0**exponent > limit:  # guard the floating-point log
        exponent -= 1
    return 2.0**exponent


def _rounded(values: NDArray[np.float64], scale: float, mask: Bool | None) -> tuple[Int, float]:
    """``rint(values · scale)`` as int64 and the largest rounding error (scaled units).

    A power-of-two `scale` makes the product exact, so the error is exact too.
    """
    scaled = values * scale
    if mask is not None:  # pairs that are never arcs may lie outside the scaled range
        scaled[~mask] = 0.0
    rounded = np.rint(scaled)
    scaled -= rounded
    np.abs(scaled, out=scaled)
    return rounded.astype(np.int64), float(scaled.max(initial=0.0))


def _fixed_arcs(
    problem: AssignmentProblem, most: Int, lo: Int, hi: Int, unit_expert: Int, unit_cost: Int
) -> _Arcs:
    """s→client (optional experts), expert→t (optional holders), t→s (the return arc)."""
    n, e = problem.shape
    s, t = n + e, n + e + 1
    clients = np.arange(n, dtype=np.int32)
    source = _Arcs(
        np.full(n, s, np.int32),
        clients,
        np.maximum(most - problem.min_experts, 0),
        np.zeros(n, np.int64),
    )
    if problem.balance_penalty == 0:
        heads = np.full(e, t, np.int32)
        sink = _Arcs(
            np.arange(n, n + e, dtype=np.int32),
            heads,
            np.maximum(hi - lo, 0),
            np.zeros(e, np.int64),
        )
    else:
        m = unit_expert.size
        sink = _Arcs(
            (unit_expert + n).astype(np.int32),
            np.full(m, t, np.int32),
            np.ones(m, np.int64),
            unit_cost,
        )
    back = _Arcs(
        np.array([t], np.int32),
        np.array([s], np.int32),
        np.array([most.sum()], np.int64),
        np.zeros(1, np.int64),
    )
    return _Arcs.join(source, sink, back)


# -- which client→expert pairs enter the network ---------------------------------------------


@dataclass(frozen=True)
class _Pairs:
    """The client→expert pairs of one solve; `pruned` when some allowed pair is left out."""

    clients: Int
    experts: Int
    pruned: bool

    def plus(self, clients: Int, experts: Int) -> _Pairs:
        return _Pairs(
            np.concatenate([self.clients, clients]), np.concatenate([self.experts, experts]), True
        )


def _every_pair(problem: AssignmentProblem) -> _Pairs:
    """Every allowed pair, client by client (row-major)."""
    n, e = problem.shape
    if problem.allowed is None:
        return _Pairs(np.repeat(np.arange(n), e), np.tile(np.arange(e), n), False)
    clients, experts = np.nonzero(problem.allowed)
    return _Pairs(clients, experts, False)


def _candidate_pairs(network: _Network, candidates: int | None) -> _Pairs:
    """Each client's `candidates` best allowed experts (ties kept), or every pair.

    ``None`` picks ``max(max_experts) + 8`` on problems with at least 50,000 pairs where that
    is at most half the experts, and every pair otherwise.
    """
    problem = network.problem
    n, e = problem.shape
    if candidates is None:
        candidates = int(problem.max_experts.max()) + _EXTRA_CANDIDATES
        if n * e < 50_000 or 2 * candidates > e:
            return _every_pair(problem)
    if candidates >= e:
        return _every_pair(problem)
    profit = -network.cost
    if problem.allowed is not None:
        profit[~problem.allowed] = np.iinfo(np.int64).min
    threshold = np.partition(profit, e - candidates, axis=1)[:, e - candidates]
    keep = profit >= threshold[:, None]
    if problem.allowed is not None:
        keep &= problem.allowed
    clients, experts = np.nonzero(keep)
    return _Pairs(clients, experts, True)


def _widened_pairs(network: _Network, pairs: _Pairs) -> _Pairs:
    """`pairs` plus, for every expert, the clients that lose least by holding it.

    A client's loss on a pair is how far its profit falls below the client's worst
    candidate. Each expert gets its ``2·max(ceil(load_min), mean holders) + 8`` clients of
    least loss, which usually makes a network that was infeasible for want of holders (or
    of room) feasible again.
    """
    problem = network.problem
    n, e = problem.shape
    keep = np.zeros(problem.shape, dtype=bool)
    keep[pairs.clients, pairs.experts] = True
    profit = -network.cost
    worst = np.where(keep, profit, profit.max(initial=0)).min(axis=1)
    loss = worst[:, None] - profit
    if problem.allowed is not None:
        loss[~problem.allowed] = np.iinfo(np.int64).max
    least = max(int(-network.supplies[n : n + e].min()), -(-int(problem.min_experts.sum()) // e))
    r = min(n, 2 * least + _EXTRA_CANDIDATES)
    keep |= loss <= np.partition(loss, r - 1, axis=0)[r - 1]
    if problem.allowed is not None:
        keep &= problem.allowed
    clients, experts = np.nonzero(keep)
    return _Pairs(clients, experts, True)


def _network_arcs(network: _Network, pairs: _Pairs) -> _Arcs:
    """Client→expert arcs of `pairs` (first, in order) followed by the fixed arcs."""
    n = network.problem.n_clients
    m = pairs.clients.size
    if not pairs.pruned and network.problem.allowed is None:  # every pair, row-major
        costs = network.cost.ravel()
    else:
        costs = network.cost[pairs.clients, pairs.experts]
    tails = pairs.clients.astype(np.int32)
    heads = (pairs.experts + n).astype(np.int32)
    return _Arcs.join(_Arcs(tails, heads, np.ones(m, np.int64), costs), network.fixed)


# -- engines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What an engine returned: its status name and, when optimal, the flow on every arc."""

    status: str
    flows: Int | None = None
    load_time: float = 0.0
    solve_time: float = 0.0


_Runner = Callable[[_Arcs, Int], _Outcome]


def _run_ortools(arcs: _Arcs, supplies: Int) -> _Outcome:
    """OR-Tools' cost-scaling push-relabel ``SimpleMinCostFlow``."""
    from ortools.graph.python import min_cost_flow

    start = time.perf_counter()
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(arcs.tails, arcs.heads, arcs.caps, arcs.costs)
    solver.set_nodes_supplies(np.arange(supplies.size, dtype=np.int32), supplies)
    loaded = time.perf_counter()
    status = solver.solve()
    solved = time.perf_counter()
    if status != solver.OPTIMAL:
        return _Outcome(status.name, None, loaded - start, solved - loaded)
    flows = solver.flows(np.arange(arcs.caps.size, dtype=np.int32))
    return _Outcome("OPTIMAL", np.asarray(flows, dtype=np.int64), loaded - start, solved - loaded)


def _run_networkx(arcs: _Arcs, supplies: Int) -> _Outcome:
    """networkx's network simplex on a multigraph (arc i has key i)."""
    import networkx as nx

    start = time.perf_counter()
    tails, heads = arcs.tails.tolist(), arcs.heads.tolist()
    graph = nx.MultiDiGraph()
    graph.add_nodes_from((v, {"demand": -d}) for v, d in enumerate(supplies.tolist()))
    graph.add_edges_from(
        (a, b, i, {"capacity": c, "weight": w})
        for i, (a, b, c, w) in enumerate(
            zip(tails, heads, arcs.caps.tolist(), arcs.costs.tolist(), strict=True)
        )
    )
    loaded = time.perf_counter()
    try:
        _, flow = nx.network_simplex(graph)
    except nx.NetworkXUnfeasible:
        return _Outcome("INFEASIBLE", None, loaded - start, time.perf_counter() - loaded)
    except nx.NetworkXUnbounded:
        return _Outcome("UNBOUNDED", None, loaded - start, time.perf_counter() - loaded)
    solved = time.perf_counter()
    values = (flow[a][b][i] for i, (a, b) in enumerate(zip(tails, heads, strict=True)))
    flows = np.fromiter(values, dtype=np.int64, count=len(tails))
    return _Outcome("OPTIMAL", flows, loaded - start, solved - loaded)


_RUNNERS: dict[str, _Runner] = {"ortools": _run_ortools, "networkx": _run_networkx}


# -- optimality certificate for pruned networks ----------------------------------------------


def _potentials(arcs: _Arcs, flows: Int, n_nodes: int, path_nodes: int) -> Int | None:
    """Node potentials under which no residual arc of `flows` has negative reduced cost.

    Shortest-path distances in the residual network from a virtual root joined to every node
    at cost 0, by a vectorised Bellman–Ford that only relaxes arcs out of nodes that moved.
    The network is bipartite, so a simple path has at most `path_nodes` nodes; distances that
    still move after that many rounds reveal a negative cycle (None): `flows` is not optimal.
    """
    forward = flows < arcs.caps
    backward = flows > 0
    tails = np.concatenate([arcs.tails[forward], arcs.heads[backward]])
    heads = np.concatenate([arcs.heads[forward], arcs.tails[backward]])
    costs = np.concatenate([arcs.costs[forward], -arcs.costs[backward]])
    dist = np.zeros(n_nodes, dtype=np.int64)
    moved = np.ones(n_nodes, dtype=bool)
    for _ in range(path_nodes + 1):
        live = moved[tails]
        if not live.any():
            return dist
        relaxed = dist.copy()
        np.minimum.at(relaxed, heads[live], dist[tails[live]] + costs[live])
        moved = relaxed < dist
        dist = relaxed
    return None


def _improving_pairs(network: _Network, pairs: _Pairs, dist: Int) -> tuple[Int, Int]:
    """Allowed pairs outside the network with negative reduced cost under potentials `dist`.

    None found proves the flow optimal on every pair: `dist` then satisfies the complementary
    slackness conditions of the whole network, checked in exact integer arithmetic.
    """
    problem = network.problem
    n, e = problem.shape
    reduced = network.cost + dist[:n, None]
    reduced -= dist[None, n : n + e]
    improving = reduced < 0
    improving[pairs.clients, pairs.experts] = False
    if problem.allowed is not None:
        improving &= problem.allowed
    clients, experts = np.nonzero(improving)
    return clients, experts


# -- the solve loop --------------------------------------------------------------------------


@dataclass
class _Search:
    """Solves on candidate pairs until the certificate holds (or on every pair)."""

    network: _Network
    run: _Runner
    build_time: float = 0.0
    solve_time: float = 0.0
    rounds: int = 0
    widened: bool = False
    fallback: bool = False
    pairs: _Pairs = field(init=False)
    arcs: _Arcs = field(init=False)

    def solve_on(self, pairs: _Pairs) -> _Outcome:
        start = time.perf_counter()
        self.pairs, self.arcs = pairs, _network_arcs(self.network, pairs)
        self.build_time += time.perf_counter() - start
        outcome = self.run(self.arcs, self.network.supplies)
        self.build_time += outcome.load_time
        self.solve_time += outcome.solve_time
        self.rounds += 1
        return outcome

    def until_proven(self, pairs: _Pairs) -> _Outcome:
        """Solve; while pairs are pruned, certify or add the improving pairs and re-solve.

        A pruned network that is infeasible is widened once by each expert's likeliest
        clients (:func:`_widened_pairs`); infeasible again, or still uncertified after
        `_MAX_ROUNDS` solves, it is replaced by every pair: only that network decides
        infeasibility.
        """
        outcome = self.solve_on(pairs)
        while self.pairs.pruned and outcome.status in ("OPTIMAL", "INFEASIBLE"):
            if outcome.status == "INFEASIBLE" and not self.widened:
                self.widened = True
                outcome = self.solve_on(self._timed_build(_widened_pairs, self.pairs))
                continue
            if outcome.status == "INFEASIBLE" or self.rounds >= _MAX_ROUNDS:
                self.fallback = True
                return self.solve_on(_every_pair(self.network.problem))
            assert outcome.flows is not None
            improving = self.certify(outcome.flows)
            if improving is None:
                return _Outcome("NEGATIVE_CYCLE")
            if not improving[0].size:
                return outcome
            outcome = self.solve_on(self.pairs.plus(*improving))
        return outcome

    def certify(self, flows: Int) -> tuple[Int, Int] | None:
        """Pairs outside the network that would improve `flows` (None: a negative cycle)."""
        start = time.perf_counter()
        path_nodes = 2 * min(self.network.problem.shape) + 6
        dist = _potentials(self.arcs, flows, self.network.n_nodes, path_nodes)
        improving = None if dist is None else _improving_pairs(self.network, self.pairs, dist)
        self.solve_time += time.perf_counter() - start
        return improving

    def _timed_build(self, widen: Callable[[_Network, _Pairs], _Pairs], pairs: _Pairs) -> _Pairs:
        start = time.perf_counter()
        wider = widen(self.network, pairs)
        self.build_time += time.perf_counter() - start
        return wider


def solve(
    problem: AssignmentProblem,
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    engine: str = "ortools",
    candidates: int | None = None,
) -> Assignment:
    r"""Solve `problem` exactly as a min-cost flow.

    Parameters
    ----------
    problem : AssignmentProblem
        Count loads, budget rows only if count-equivalent; a balance penalty only with
        the variance metric and a fixed total (see :func:`unsupported`).
    time_limit : float, optional
        Accepted for the common interface; a min-cost flow solve is not interruptible and
        always runs to optimality.
    seed : int, optional
        Unused: both engines are deterministic.
    engine : {"ortools", "networkx"}
        The variant: OR-Tools' cost-scaling ``SimpleMinCostFlow`` (fast) or networkx's
        network simplex (pure Python; ``"flow:networkx"``). The registry checks it and
        its module.
    candidates : int, optional
        Experts per client in the first solve (its best by effective utility). Default:
        ``max(max_experts) + 8`` on problems with at least 50,000 pairs where that is at
        most half the experts, every pair otherwise.

    Returns
    -------
    Assignment
        ``OPTIMAL`` with `bound` = objective + the certified rounding error (0 when every
        cost is a multiple of 1/scale), or ``INFEASIBLE`` with a reason, or ``ERROR``
        naming the engine's status. `info` holds the engine, the cost scale, the
        client→expert arcs of the last solve, the solves and whether pairs were pruned.

    Notes
    -----
    Nodes: source s, clients n, experts e, sink t. Arcs and bounds:

    .. math::

        s \to n:\ [\mathrm{min}_n, \mathrm{max}'_n], \qquad
        n \to e:\ [0, 1],\ \text{cost } -\tilde u_{ne}\ \text{(allowed pairs)}, \qquad
        e \to t:\ [\lceil \mathrm{load\_min}_e \rceil, \lfloor \mathrm{load\_max}_e \rfloor]

    with :math:`\tilde u` = ``effective_utility()`` (the switch cost folded in) and
    :math:`\mathrm{max}'_n` = ``problem.most_experts`` (``max_experts`` capped by the
    allowed count and by the count-equivalent budget rows). A return arc
    t → s closes the circulation; lower bounds become node supplies. Under a variance
    penalty λ with a fixed total F, :math:`\sum_e (L_e - \bar L)^2 = \sum_e L_e^2 - F^2/E`
    and e → t becomes unit arcs, the k-th costing λ(2k − 1) (convex, so they fill in order).

    Costs are scaled by a power of two s (largest magnitude at most
    :math:`2^{62} / (4 (\ell + 1)(|V| + 1))`, ℓ the nodes of a simple path), so OR-Tools
    cannot overflow, and rounded; the rounding error δ ≤ 1/(2s) per arc is computed exactly,
    and the optimum of the rounded network is within δ·(arcs used by it + by any flow) of
    the true optimum: that is `bound` − `objective`. The objective is recomputed in float64.

    With pruned pairs, potentials π (shortest-path distances in the residual network)
    certify the flow: every pruned pair needs :math:`c_{ne} + π_n - π_e \ge 0`. Pairs that
    fail are added and the flow re-solved; with none failing, π proves the flow optimal on
    the full network.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem, solve
    >>> problem = AssignmentProblem(np.array([[3.0, 1.0], [2.0, 0.5]]), max_experts=1,
    ...                             load_max=1)
    >>> result = solve(problem, backend="flow")
    >>> result.status, result.objective, [result.experts_of(n) for n in range(2)]
    (<Status.OPTIMAL: 'optimal'>, 3.5, [[0], [1]])
    """
    if candidates is not None and (not isinstance(candidates, int) or candidates < 1):
        raise ValueError(f"`candidates` must be a positive integer or None; got {candidates!r}")
    run = _RUNNERS[engine]
    start = time.perf_counter()
    network = _build_network(problem)
    pairs = _candidate_pairs(network, candidates)
    search = _Search(network, run, build_time=time.perf_counter() - start)
    outcome = search.until_proven(pairs)
    return _result(search, outcome, engine)


def _result(search: _Search, outcome: _Outcome, engine: str) -> Assignment:
    """Map the engine's outcome to an :class:`Assignment` (the objective in float64)."""
    network = search.network
    status, message = _NATIVE.get(
        outcome.status, (Status.ERROR, f"unexpected engine status {outcome.status}")
    )
    info: dict[str, Any] = {
        "engine": engine,
        "native_status": outcome.status,
        "scale": network.scale,
        "arcs": int(search.pairs.clients.size),
        "solves": search.rounds,
        "pruned": search.pairs.pruned,
        "widened": search.widened,
        "fallback": search.fallback,
        "max_rounding_error": network.max_error,
    }
    backend = spec_name(NAME, engine, VARIANTS)
    times: dict[str, Any] = {
        "build_time": search.build_time,
        "solve_time": search.solve_time,
        "info": info,
    }
    if status is not Status.OPTIMAL or outcome.flows is None:
        return Assignment.no_solution(status, backend, message, **times)
    x, rounded = _extract(network, search.pairs, outcome.flows)
    result = Assignment.from_x(
        network.problem, x, status=Status.OPTIMAL, bound=math.nan, backend=backend, **times
    )
    return result.replace(
        bound=result.objective + network.max_error * (rounded + network.most_arcs)
    )


def _extract(network: _Network, pairs: _Pairs, flows: Int) -> tuple[Bool, int]:
    """``x`` from the client→expert flows, and how many rounded-cost unit arcs carry flow."""
    problem = network.problem
    m = pairs.clients.size
    held = flows[:m] > 0
    x = np.zeros(problem.shape, dtype=bool)
    x[pairs.clients[held], pairs.experts[held]] = True
    rounded = int(held.sum())
    if problem.balance_penalty > 0:  # the unit expert→t arcs sit between s→n and t→s
        rounded += int(flows[m + problem.n_clients : -1].sum())
    return x, rounded
