"""Exact min-cost flow (OR-Tools or networkx) for count loads and count-equivalent budgets.

With count loads and no budget rows other than count-equivalent ones (a row that costs a
client the same for every expert it may hold only caps how many it holds) the constraint
matrix of the assignment problem is a bipartite incidence matrix, so the problem is a min-cost flow:
integral, exact, and fast. Float utilities are scaled by a power of two to int64 costs with
a certified rounding error.

The dual of that flow has one price per expert. The default strategy (``"prices"``)
settles those prices with a few vectorised passes (:mod:`._prices`), under which each
client's choice is a top-k over its reduced utilities; only the clients whose choice the
prices leave open (ties at the cut) enter one small exact flow, solved by OR-Tools'
cost-scaling ``SimpleMinCostFlow`` (default) or networkx's network simplex
(``"flow:networkx"``, pure Python, for cross-checks). Integer potentials from a shortest
path on the expert graph then prove the whole assignment optimal, checked on every pair.
``strategy="dense"`` solves one network with every allowed pair instead (the reference).
A :class:`FlowSolver` keeps the prices between calls, so that a re-solve after the
utilities moved starts where the last one ended.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.assign.backends import _prices
from flexmoe.assign.backends._prices import Market
from flexmoe.assign.problem import FRIENDLY_ROWS, AssignmentProblem, BalanceMetric
from flexmoe.assign.registry import Variant, spec_name
from flexmoe.assign.result import Assignment, Status
from flexmoe.assign.verify import largest_magnitude

__all__ = [
    "EXACT",
    "NAME",
    "RTOL",
    "SESSION",
    "STRATEGIES",
    "VARIANTS",
    "VARIANT_OPTION",
    "FlowSolver",
    "solve",
    "unsupported",
]

NAME = "flow"
EXACT = True
VARIANT_OPTION = "engine"
VARIANTS = (
    Variant("ortools", ("ortools",), extra="", description="OR-Tools' SimpleMinCostFlow"),
    Variant("networkx", ("networkx",), extra="", description="networkx's network simplex"),
)
#: ``"prices"``: settle expert prices, one small flow on the contested clients, certify;
#: ``"dense"``: one flow on every allowed pair.
STRATEGIES = ("prices", "dense")

#: ``OPTIMAL`` means ``bound − objective <= RTOL · max(|objective|, Σ |ũ| over the held
#: pairs, max |ũ| over the allowed pairs)``; a larger certified gap is ``FEASIBLE``.
RTOL = 1e-9

#: Scaled costs are kept below 2**62 / (4·(path nodes + 1)·(nodes + 1)): OR-Tools multiplies
#: costs by (nodes + 1) and its potentials move by at most ~1.5·(path nodes)·(largest scaled
#: cost), so neither a cost nor a potential can overflow int64 (no BAD_COST_RANGE).
_COST_BUDGET = 2**62
#: The costs are scaled for a network of a quarter of the clients (at least this many); a
#: larger one (a fallback on every pair) is solved at the coarser scale its size allows.
_SCALED_CLIENTS = 4096
#: Candidate experts per client beyond ``max_experts``.
_EXTRA_CANDIDATES = 4
#: Rounds of contested flows before the fallback to every pair.
_MAX_ROUNDS = 6
#: Clients of least margin contested when the prices did not settle on a feasible
#: assignment: one in this many, at least :data:`_NEAR_LEAST` (twice as many after each
#: failed certificate).
_NEAR_SHARE = 20
_NEAR_LEAST = 512

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


# -- the problem's structure ---------------------------------------------------------------


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


def _most_experts(problem: AssignmentProblem) -> Int:
    """The problem's derived ``most_experts``: ``max_experts`` capped by the allowed count
    and by the count-equivalent budget rows."""
    return problem.most_experts


def _holder_band(problem: AssignmentProblem, total: int) -> tuple[Int, Int]:
    """The problem's derived holder band ``[ceil(load_min), floor(load_max)]`` per expert
    (capped by the clients allowed each expert and by ``Σ most_experts``), its upper end
    also capped by `total`."""
    lo, hi = problem.holder_band
    return lo, np.minimum(hi, total)


# -- certified scaling -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Scaled:
    """The market of a problem and what its rounding costs the bound.

    `max_error` is the largest |scaled cost − true cost · 2**exponent| of any arc, in
    scaled units (exact: a power-of-two scale makes every product exact); `most_arcs` how
    many rounded-cost unit arcs any feasible flow can use.
    """

    problem: AssignmentProblem
    market: Market
    max_error: float
    most_arcs: int
    reach: float
    """Largest |effective utility| of an allowed pair."""

    def error_bound(self, used_arcs: int) -> float:
        """The certified distance, in objective units, from an optimum of the scaled costs
        that uses `used_arcs` rounded arcs to the true optimum (rounded up)."""
        scaled = self.max_error * (used_arcs + self.most_arcs)
        if scaled == 0.0:
            return 0.0
        return math.ldexp(scaled * (1 + 2**-40), -self.market.exponent) + 2.0**-1074


def _ortools_limit(n_clients: int, n_experts: int) -> int:
    """Largest scaled cost OR-Tools can take on a network of this many clients."""
    nodes = n_clients + n_experts + 2
    path_nodes = 2 * min(n_clients, n_experts) + 6
    return _COST_BUDGET // (4 * (path_nodes + 1) * (nodes + 1))


def _exponent(magnitude: float, limit: int) -> int:
    """The largest e with ``magnitude · 2**e <= limit`` (0 for magnitude 0): any float
    magnitude, subnormals included, since ``ldexp`` never forms ``2**e`` itself."""
    if magnitude == 0.0:
        return 0
    e = limit.bit_length() - math.frexp(magnitude)[1]
    while math.ldexp(magnitude, e) > limit:
        e -= 1
    while math.ldexp(magnitude, e + 1) <= limit:
        e += 1
    return e


def _scaled(
    problem: AssignmentProblem, clients: int | None = None, out: Int | None = None
) -> _Scaled:
    """Scale and round every cost (chunked: one int64 copy of the utilities, no more).

    The scale fits a network of `clients` clients (default: a quarter of the clients, at
    least :data:`_SCALED_CLIENTS`) and keeps every sum of :mod:`._prices` inside int64.
    `out`: an int64 array of the problem's shape to write the costs into (a session's,
    reused from its last problem), or None.
    """
    n, e = problem.shape
    most = _most_experts(problem)
    lo, hi = _holder_band(problem, int(most.sum()))
    reach = largest_magnitude(problem)
    units = problem.balance_penalty * (2.0 * float(hi.max(initial=0)) + 1.0)  # up to hi + 1
    magnitude = max(reach, units, 0.0)
    size = min(n, max(_SCALED_CLIENTS, n // 4) if clients is None else clients)
    exponent = _exponent(magnitude, min(_ortools_limit(size, e), Market.cap(e)))
    top = math.ldexp(magnitude, exponent)
    value = out if out is not None and out.shape == (n, e) else np.empty((n, e), dtype=np.int64)
    error = 0.0
    excluded = Market.excluded_for(e, int(top))
    parts = _prices.chunks(n, e)
    work = np.empty((2, _prices.widest(parts), e))  # a chunk's scaled rows, their rounding
    for rows in parts:
        scaled = work[0, : rows.stop - rows.start]
        _times_power_of_two(_effective_rows(problem, rows), exponent, out=scaled)
        if problem.allowed is not None:  # pairs that are never arcs may lie out of range
            scaled[~problem.allowed[rows]] = 0.0
        error = max(error, _round_into(scaled, value[rows], work[1, : scaled.shape[0]]))
        if problem.allowed is not None:
            value[rows][~problem.allowed[rows]] = excluded
    market = Market(
        value, problem.min_experts.astype(np.int64), most.astype(np.int64), lo, hi,
        problem.balance_penalty, exponent, int(top),
    )  # fmt: skip
    error = max(error, _unit_error(market))
    if exponent < 0:  # a product may have dropped below the smallest normal float
        error += 2.0**-1074
    total = min(int(most.sum()), int(hi.sum()))
    units_used = max(0, total - int(lo.sum())) if problem.balance_penalty > 0 else 0
    return _Scaled(problem, market, error, total + units_used, reach)


def _times_power_of_two(
    values: NDArray[np.float64], exponent: int, out: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """``values · 2**exponent`` (into `out`, or a new array): exact but where it under- or
    overflows, like ``np.ldexp``, which is several times slower than a product by a normal
    ``2**exponent``."""
    if -1022 <= exponent <= 1023:
        return np.multiply(values, math.ldexp(1.0, exponent), out=out)
    return np.ldexp(values, exponent, out=out)


def _round_into(
    scaled: NDArray[np.float64], out: Int, work: NDArray[np.float64] | None = None
) -> float:
    """Write ``rint(scaled)`` into `out` and return the largest rounding error (`scaled` is
    overwritten; `work`, a float array of its shape, holds the rounding when given).

    >>> out = np.empty(4, dtype=np.int64)
    >>> _round_into(np.array([0.5, 1.5, -2.25, 7.0]), out), out.tolist()
    (0.5, [0, 2, -2, 7])
    """
    rounded = np.rint(scaled, out=work)
    out[...] = rounded
    scaled -= rounded
    return max(float(scaled.max(initial=0.0)), -float(scaled.min(initial=0.0)))


def _effective_rows(problem: AssignmentProblem, rows: slice) -> NDArray[np.float64]:
    """``effective_utility()[rows]`` (a view without a switch cost, else a new array)."""
    if problem.previous is None or not problem.switch_cost:
        return problem.utility[rows]
    return problem.utility[rows] - problem.switch_cost * ~problem.previous[rows]


def _unit_error(market: Market) -> float:
    """Largest rounding error of a holder's unit cost λ(2L − 1), scaled units."""
    if market.penalty == 0 or not (market.hi > market.lo).any():
        return 0.0
    loads = np.arange(int(market.lo.min()) + 1, int(market.hi.max()) + 1)
    exact = np.ldexp(market.penalty * (2.0 * loads - 1.0), market.exponent)
    return float(np.abs(exact - market.unit(loads)).max(initial=0.0))


# -- networks ----------------------------------------------------------------------------------


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
    """The flow network of some clients, the other clients' holdings fixed.

    Nodes: the clients ``0..c-1`` (global indices `clients`), experts ``c..c+E-1``, source
    ``s = c+E``, sink ``t = c+E+1``. The first arcs are the client→expert `pairs`
    (capacity 1, cost ``−A`` under `prices`), then s→client (optional experts), expert→t
    (the holders left by the fixed clients; unit arcs of increasing cost under a variance
    penalty) and the return arc t→s. Costs are reduced by the prices (each arc's cost plus
    its tail's potential minus its head's), which changes no optimal flow; lower bounds
    are folded into `supplies`.
    """

    clients: Int
    pair_clients: Int
    pair_experts: Int
    arcs: _Arcs
    supplies: Int

    @classmethod
    def of(
        cls,
        market: Market,
        clients: Int,
        pairs: tuple[Int, Int],
        base: Int,
        prices: Int,
        kept: Int | None = None,
    ) -> _Network | None:
        """The network of `clients` over `pairs` (local client, expert), with `base` holders
        per expert fixed elsewhere and `kept` experts of each client held outside the pairs
        (None: the fixed holders alone break a band)."""
        c, e = clients.size, market.n_experts
        local, experts = pairs
        lo = np.maximum(market.lo - base, 0)
        hi = market.hi - base
        if (hi < lo).any():
            return None
        s, t = c + e, c + e + 1
        reduced = market.value[clients[local], experts] - prices[experts]
        pair = _Arcs(
            local.astype(np.int32), (experts + c).astype(np.int32), np.ones(local.size, np.int64),
            -reduced,
        )  # fmt: skip
        least, most = market.least[clients], market.most[clients]
        if kept is not None:
            least, most = np.maximum(least - kept, 0), np.maximum(most - kept, 0)
        source = _Arcs(
            np.full(c, s, np.int32), np.arange(c, dtype=np.int32),
            np.maximum(most - least, 0), np.zeros(c, np.int64),
        )  # fmt: skip
        sink = _sink_arcs(market, c, base, lo, hi, prices)
        back = _Arcs(
            np.array([t], np.int32), np.array([s], np.int32),
            np.array([max(int(most.sum()), 0)], np.int64), np.zeros(1, np.int64),
        )  # fmt: skip
        supplies = np.zeros(c + e + 2, dtype=np.int64)
        supplies[:c] = least
        supplies[c : c + e] = -lo
        supplies[s] = -int(least.sum())
        supplies[t] = int(lo.sum())
        return cls(clients, local, experts, _Arcs.join(pair, source, sink, back), supplies)

    def held(self, flows: Int) -> tuple[Int, Int]:
        """(global client, expert) of every pair arc that carries flow."""
        on = flows[: self.pair_clients.size] > 0
        return self.clients[self.pair_clients[on]], self.pair_experts[on]


def _sink_arcs(market: Market, c: int, base: Int, lo: Int, hi: Int, prices: Int) -> _Arcs:
    """expert→t: one arc for the optional holders, or one unit arc per optional holder
    (the L-th in total costing ``unit(L)``) under a variance penalty."""
    e = market.n_experts
    t = c + e + 1
    if market.penalty == 0:
        return _Arcs(
            np.arange(c, c + e, dtype=np.int32), np.full(e, t, np.int32),
            np.maximum(hi - lo, 0), -prices.astype(np.int64),
        )  # fmt: skip
    count = np.maximum(hi - lo, 0)
    expert = np.repeat(np.arange(e), count)
    start = np.cumsum(count) - count
    load = (base + lo)[expert] + 1 + np.arange(expert.size) - start[expert]
    return _Arcs(
        (expert + c).astype(np.int32), np.full(expert.size, t, np.int32),
        np.ones(expert.size, np.int64), market.unit(load) - prices[expert],
    )  # fmt: skip


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


def _runner(engine: str) -> _Runner:
    """The engine's run function (the registry checked the variant and its module; this
    guards direct calls)."""
    if engine not in _RUNNERS:
        raise ValueError(f"`engine` must be one of {', '.join(_RUNNERS)}; got {engine!r}")
    return _RUNNERS[engine]


# -- the search --------------------------------------------------------------------------------


@dataclass
class _Found:
    """The end of a search: a native status and, when optimal, ``x`` with its prices and
    the holders of each expert in it."""

    status: str
    x: Bool | None = None
    prices: Int | None = None
    loads: Int | None = None


@dataclass(frozen=True)
class _Holdings:
    """An assignment being built: `x`, and its holders per expert (`loads`) and experts
    per client (`count`), kept in step with it (each would be a pass over `x`)."""

    x: Bool
    loads: Int
    count: Int
    changed: Bool
    """Clients whose holdings :meth:`replace` changed."""

    @classmethod
    def of(cls, market: Market, choice: _prices.Choice) -> _Holdings:
        """The choice's holdings: each client its first ``count`` candidates."""
        x = _prices.held_matrix(market, choice)
        count = np.array(choice.count, dtype=np.int64)
        return cls(x, choice.loads.copy(), count, np.zeros(market.n_clients, dtype=bool))

    @classmethod
    def empty(cls, market: Market) -> _Holdings:
        n, e = market.n_clients, market.n_experts
        x = np.zeros((n, e), dtype=bool)
        return cls(x, np.zeros(e, np.int64), np.zeros(n, np.int64), np.zeros(n, dtype=bool))

    def within_band(self, market: Market) -> bool:
        return bool(((self.loads >= market.lo) & (self.loads <= market.hi)).all())

    def replace(self, clients: Int, pairs: tuple[Int, Int], held: tuple[Int, Int]) -> None:
        """Drop the `pairs` (local client, expert) of `clients`, then hold `held` (global
        client, expert)."""
        local, experts = pairs
        e = self.loads.size
        on = self.x[clients[local], experts]
        change = np.bincount(held[1], minlength=e) - np.bincount(experts[on], minlength=e)
        before = self.x[clients]
        self.x[clients[local], experts] = False
        self.x[held] = True
        np.add(self.loads, change, out=self.loads)
        after = self.x[clients]
        self.count[clients] = after.sum(axis=1)
        self.changed[clients] |= (before != after).any(axis=1)


@dataclass
class _Search:
    """One solve: the scaled problem, the engine, the clock and what happened."""

    scaled: _Scaled
    run: _Runner
    build_time: float = 0.0
    solve_time: float = 0.0
    solves: int = 0
    arcs: int = 0
    contested: int = 0
    price_rounds: int = 0
    refreshed: int = 0
    rounds: int = 0
    fallback: bool = False

    @property
    def market(self) -> Market:
        return self.scaled.market

    # -- one network -------------------------------------------------------------------

    def flow(self, held: _Holdings, clients: Int, pairs: tuple[Int, Int], prices: Int) -> str:
        """Solve the network of `clients` over `pairs`, the others fixed as `held` holds
        them, and write their holdings into `held`; the engine's status."""
        start = time.perf_counter()
        market = self.market
        local, experts = pairs
        on = held.x[clients[local], experts]  # the pairs held now
        base = held.loads - np.bincount(experts[on], minlength=market.n_experts)
        kept = held.count[clients] - np.bincount(local[on], minlength=clients.size)
        network = _Network.of(market, clients, pairs, base, prices, kept)
        if network is not None and _too_costly(network, clients.size, market.n_experts):
            network = _Network.of(market, clients, pairs, base, np.zeros_like(prices), kept)
        self.build_time += time.perf_counter() - start
        if network is None:
            return "INFEASIBLE"
        if _too_costly(network, clients.size, market.n_experts):
            return "RESCALE"
        outcome = self.run(network.arcs, network.supplies)
        self.build_time += outcome.load_time
        self.solve_time += outcome.solve_time
        self.solves += 1
        self.arcs = int(network.pair_clients.size)
        if outcome.status == "OPTIMAL" and outcome.flows is not None:
            held.replace(clients, pairs, network.held(outcome.flows))
        return outcome.status

    def timed(self, into: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        setattr(self, into, getattr(self, into) + time.perf_counter() - start)
        return out

    # -- strategies ----------------------------------------------------------------------

    def dense(self) -> _Found:
        """One network with every allowed pair; the certificate as for any other answer."""
        market = self.market
        n = market.n_clients
        held = _Holdings.empty(market)
        everyone = np.arange(n)
        rows, experts = _prices.where2(market.value > market.excluded)
        prices = np.zeros(market.n_experts, dtype=np.int64)
        self.contested = n
        status = self.flow(held, everyone, (rows, experts), prices)
        if status != "OPTIMAL":
            return _Found(status)
        everyone_mask = np.ones(n, dtype=bool)
        zeros = np.zeros(n, dtype=np.int64)
        found, _ = self.timed(
            "solve_time", _prices.potentials, market, held.x, prices, everyone_mask, zeros
        )
        if found is None or not self._certify(held, found, None).ok:
            return _Found("NEGATIVE_CYCLE")
        return _Found("OPTIMAL", held.x, found, held.loads)

    def by_prices(self, start_prices: Int, width: int) -> _Found:
        """Settle prices, contest the clients they leave open, certify; widen what fails.

        The open clients are the ties and movers of :func:`._prices.contested`, plus, when
        the prices did not settle on a feasible assignment, the clients of least margin
        (one in :data:`_NEAR_SHARE`; an eighth as many when they did); when the expert
        graph finds the flow of that neighbourhood not optimal overall, the neighbourhood
        doubles, or its clients get every pair when the cycle runs through pairs beyond
        their candidates. A certificate that names clients gives them every pair. The
        expert graph starts from the open clients the flow moved, the ties and the named
        ones; the other open clients' margins still hold and join it like any client's.
        """
        market = self.market
        cand, settled = self._settle(start_prices, width)
        prices = settled.prices
        held = _Holdings.of(market, settled.choice)
        x = held.x
        margin = _prices.margins(market, cand, settled.choice, x)
        extra = _prices.contested(market, settled, margin)
        whole = np.zeros(market.n_clients, dtype=bool)  # clients given every allowed pair
        least = max(_NEAR_LEAST, market.n_clients // _NEAR_SHARE)
        near = least // 8 if settled.converged and held.within_band(market) else least
        for _ in range(_MAX_ROUNDS):
            self.rounds += 1
            open_ = extra | whole | (margin <= _threshold(margin, near, market))
            if open_.any():
                window = 2 * max(int(margin[open_].max()), 0)
                status = self._contest(held, open_, whole, window, settled.choice, prices)
                if status == "WIDENED":
                    extra |= open_
                    continue
                if status == "DENSE":
                    break
                if status != "OPTIMAL":
                    return _Found(status)
            limit = 4 * int(open_.sum()) + least
            start = open_ & (held.changed | (margin <= 0) | extra | whole)
            found, used = self.timed(
                "solve_time", _prices.potentials, market, x, prices, start, margin, limit,
                loads=held.loads,
            )  # fmt: skip
            if found is None:  # the neighbourhood's flow is not optimal overall: grow it
                if not (used & ~open_).any() and not whole[open_].all():
                    whole |= open_  # the cycle runs through pairs beyond the candidates
                else:
                    near = max(2 * near, least)
                if open_.all():
                    whole[:] = True
                continue
            verdict = self._certify(held, found, cand)
            if verdict.ok:
                return _Found("OPTIMAL", x, found, held.loads)
            whole[verdict.clients] = True
            extra |= x[:, verdict.experts].any(axis=1)
        self.fallback = True
        return self.dense()

    def _certify(
        self, held: _Holdings, prices: Int, cand: _prices.Candidates | None
    ) -> _prices.Verdict:
        """:func:`._prices.certify` of `held` under `prices`, timed."""
        return self.timed(
            "solve_time", _prices.certify, self.market, held.x, prices, cand,
            loads=held.loads, count=held.count,
        )  # fmt: skip

    def _settle(self, prices: Int, width: int) -> tuple[_prices.Candidates, _prices.Settled]:
        """Rank the candidates and settle the prices on them."""
        market = self.market
        cand = self.timed("build_time", _prices.rank, market, prices, width)
        settled = self.timed("solve_time", _prices.settle, market, cand, prices)
        self.price_rounds += settled.rounds
        self.refreshed += settled.refreshed
        return settled.cand, settled

    def _contest(
        self,
        held: _Holdings,
        open_: Bool,
        whole: Bool,
        window: int,
        choice: _prices.Choice,
        prices: Int,
    ) -> str:
        """One flow on the open clients' candidates within `window` of their cut; when the
        fixed ones leave it infeasible, widen `open_` by the clients that can fix the bands
        (``"WIDENED"``), or by every client; ``"DENSE"`` when every client on every
        candidate is still infeasible."""
        market = self.market
        clients = np.flatnonzero(open_)
        self.contested = int(clients.size)
        if open_.all():
            window = market.inf
        pairs = _pairs(market, choice, clients, whole[clients], window)
        status = self.flow(held, clients, pairs, prices)
        if status != "INFEASIBLE":
            return status
        base = held.loads - held.x[clients].sum(axis=0)
        reach = np.bincount(pairs[1], minlength=market.n_experts)
        excess = np.maximum(base - market.hi, 0)
        short = np.maximum(market.lo - base - reach, 0)
        more = _prices.helpers(market, choice, excess, short) & ~open_
        if more.any():
            open_ |= more
            return "WIDENED"
        if not open_.all():
            open_[:] = True
            return "WIDENED"
        return "DENSE"


def _threshold(margin: Int, count: int, market: Market) -> int:
    """A margin that about `count` clients do not exceed (0: the ties only)."""
    if count <= 0:
        return 0
    if count >= margin.size:
        return market.inf
    return max(int(np.partition(margin, count)[count]), 0)


def _too_costly(network: _Network, clients: int, experts: int) -> bool:
    """Whether some cost of `network` is beyond what OR-Tools takes at its size."""
    limit = _ortools_limit(max(clients, 1), experts)
    return bool(np.abs(network.arcs.costs).max(initial=0) > limit)


def _pairs(
    market: Market, choice: _prices.Choice, clients: Int, whole: Bool, window: int
) -> tuple[Int, Int]:
    """(local client, expert) arcs of `clients`: the allowed candidates whose slack (how far
    a price must move to change whether the client holds them) is at most `window`, or
    every allowed expert of the clients marked `whole`. The other holdings stay fixed."""
    experts = choice.experts[:, clients]
    slack = np.where(
        choice.held[:, clients],
        choice.reduced[:, clients] - choice.keep[clients],
        choice.enter[clients] - choice.reduced[:, clients],
    )
    free = (slack <= window) & (choice.reduced[:, clients] > market.excluded // 2)
    free[:, whole] = False
    slots, local = _prices.where2(free)
    picked = experts[slots, local].astype(np.int64)
    if whole.any():
        wide = np.flatnonzero(whole)
        wl, we = _prices.where2(market.value[clients[wide]] > market.excluded)
        local = np.concatenate([local, wide[wl]])
        picked = np.concatenate([picked, we.astype(np.int64)])
    return local.astype(np.int64), picked


# -- the backend -------------------------------------------------------------------------------


def _check_options(strategy: str, candidates: int | None) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if candidates is not None and (
        not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1
    ):
        raise ValueError(f"`candidates` must be a positive integer or None; got {candidates!r}")


def _width(problem: AssignmentProblem, candidates: int | None) -> int:
    """Candidates per client: `candidates`, at least one more than any client may hold."""
    least = int(problem.max_experts.max(initial=0)) + 1
    return max(least, least - 1 + _EXTRA_CANDIDATES if candidates is None else candidates)


def _start_prices(scaled: _Scaled, prices: NDArray[np.float64] | None) -> Int:
    """Starting prices in scaled units: the given ones (utility units), or the marginal cost
    of the mean load under a variance penalty, or zero."""
    market = scaled.market
    bound = market.price_bound
    if prices is not None and prices.shape == (market.n_experts,):
        return np.clip(np.rint(np.ldexp(prices, market.exponent)), -bound, bound).astype(np.int64)
    if market.penalty == 0:
        return np.zeros(market.n_experts, dtype=np.int64)
    mean = round(int(market.least.sum()) / market.n_experts)
    load = np.clip(mean, market.lo + 1, np.maximum(market.hi, market.lo + 1))
    return np.clip(market.unit(load), -bound, bound)


def _search(
    problem: AssignmentProblem,
    run: _Runner,
    strategy: str,
    width: int,
    prices: NDArray[np.float64] | None,
    out: Int | None = None,
) -> tuple[_Search, _Found]:
    """Scale (into `out`, when given), then search with `strategy`; a network too large
    for the scale is solved again on every pair at the scale its size allows."""
    start = time.perf_counter()
    scaled = _scaled(problem, out=out)
    search = _Search(scaled, run, build_time=time.perf_counter() - start)
    if strategy == "dense":
        found = search.dense()
    else:
        found = search.by_prices(_start_prices(scaled, prices), width)
    if found.status == "RESCALE":
        start = time.perf_counter()
        coarse = _Search(_scaled(problem, problem.n_clients), run, fallback=True)
        coarse.build_time = search.build_time + time.perf_counter() - start
        coarse.solve_time = search.solve_time
        coarse.solves = search.solves
        search, found = coarse, coarse.dense()
    return search, found


def solve(
    problem: AssignmentProblem,
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    engine: str = "ortools",
    strategy: str = "prices",
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
    strategy : {"prices", "dense"}
        ``prices``: settle expert prices, one small flow on the clients they leave open,
        certify (default); ``dense``: one flow on every allowed pair.
    candidates : int, optional
        Experts per client that the prices are settled on and the small flow may choose
        from (its best under the current prices, ranked again when prices move past them;
        a client the certificate names gets every pair), at least ``max(max_experts) + 1``.
        Default: ``max(max_experts) + 4``.

    Returns
    -------
    Assignment
        ``OPTIMAL`` with `bound` = objective + the certified rounding error when that is
        within :data:`RTOL` of the objective's scale, ``FEASIBLE`` with the same bound
        otherwise; ``INFEASIBLE`` with a reason; or ``ERROR`` naming the engine's status.
        `info` holds the engine, the strategy, the cost scale, the contested clients, the
        client→expert arcs of the last flow, the flows solved and the prices (utility
        units).

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

    Costs are scaled by a power of two :math:`2^q` (largest magnitude at most
    :math:`2^{62} / (4 (\ell + 1)(|V| + 1))` for a network of |V| nodes and ℓ the nodes of a
    simple path, so OR-Tools cannot overflow) and rounded; the rounding error δ per arc is
    computed exactly, and the optimum of the rounded network is within δ·(arcs used by it
    + by any flow) of the true optimum: that is `bound` − `objective`.

    Prices: with expert prices p, client n holds its best experts by :math:`A_{ne} =
    S_{ne} - p_e` (S the scaled utilities). The certificate is integer potentials —
    :math:`-p_e` for experts, 0 for s and t, a threshold :math:`t_n` per client — under
    which every residual arc has a nonnegative reduced cost: every held :math:`A_{ne} \ge
    t_n \ge` every other allowed :math:`A_{ne'}`, :math:`t_n \le 0` if n may hold more,
    :math:`\ge 0` if fewer, and :math:`p_e` between the cost of the last holder of e and
    of one more. That is the min-cost flow optimality condition, checked on every pair.

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
    _check_options(strategy, candidates)
    run = _runner(engine)
    search, found = _search(problem, run, strategy, _width(problem, candidates), None)
    return _result(search, found, engine, strategy)


class FlowSolver:
    """A flow session: a sequence of problems, each solved from the last one's prices.

    In a federated run the utilities move a little between rounds (an EMA on the pairs
    held); the last round's prices are then close to the new ones, so settling them takes
    a few rounds (the experts that must rise and those that must fall moving together)
    and the contested clients are few. Prices carry over between problems
    with the same number of experts (clients may differ); anything else starts cold.

    Between solves the session also keeps the last problem's scaled costs (8 bytes a
    client–expert pair) and writes the next problem's of the same shape into them: a
    fresh array of that size a round costs a warm round about a tenth of its time.

    Parameters
    ----------
    engine, strategy, candidates
        As for :func:`solve`.
    warm : bool
        Start each solve from the last prices (default); ``False`` makes every call cold.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> session = FlowSolver()
    >>> p = AssignmentProblem(np.array([[3.0, 1.0], [2.0, 0.5]]), max_experts=1, load_max=1)
    >>> first = session.solve(p)
    >>> again = session.solve(p.replace(utility=[[3.0, 1.5], [2.0, 0.5]]))
    >>> first.status, again.status, again.objective
    (<Status.OPTIMAL: 'optimal'>, <Status.OPTIMAL: 'optimal'>, 3.5)
    """

    def __init__(
        self,
        *,
        engine: str = "ortools",
        strategy: str = "prices",
        candidates: int | None = None,
        warm: bool = True,
    ) -> None:
        _check_options(strategy, candidates)
        self._run = _runner(engine)
        self.engine, self.strategy, self.candidates, self.warm = engine, strategy, candidates, warm
        self.prices: NDArray[np.float64] | None = None
        """The last optimal prices, in utility units (None before the first)."""
        self._costs: Int | None = None  # the last problem's scaled costs: a buffer

    def solve(
        self,
        problem: AssignmentProblem,
        *,
        time_limit: float | None = None,
        seed: int | None = None,
    ) -> Assignment:
        """Solve `problem` like the backend's :func:`solve`, from the last prices.

        Used as the backend's session (``SESSION``): ``flexmoe.assign.Solver("flow")``
        adds the unsupported check, the precheck and the independent verifier around it,
        as :func:`flexmoe.assign.solve` does around :func:`solve`.
        """
        start_prices = self.prices if self.warm else None
        width = _width(problem, self.candidates)
        costs, self._costs = self._costs, None  # taken: a solve left running keeps its own
        search, found = _search(problem, self._run, self.strategy, width, start_prices, costs)
        self._costs = search.scaled.market.value  # the next problem's costs go here
        result = _result(search, found, self.engine, self.strategy)
        if found.prices is not None:
            self.prices = np.ldexp(found.prices.astype(np.float64), -search.market.exponent)
        return result

    def state_dict(self) -> dict[str, Any]:
        """The last prices, JSON-serialisable (a checkpointed federated run resumes them)."""
        return {"prices": None if self.prices is None else self.prices.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        prices = state.get("prices")
        self.prices = None if prices is None else np.asarray(prices, dtype=np.float64)


#: The backend's session class (see :class:`flexmoe.assign.Solver`).
SESSION = FlowSolver


def _backend_name(engine: str) -> str:
    return spec_name(NAME, engine, VARIANTS)


def _result(search: _Search, found: _Found, engine: str, strategy: str) -> Assignment:
    """Map the search's end to an :class:`Assignment` (the objective in float64)."""
    scaled = search.scaled
    status, message = _NATIVE.get(
        found.status, (Status.ERROR, f"unexpected engine status {found.status}")
    )
    info: dict[str, Any] = {
        "engine": engine,
        "strategy": strategy,
        "native_status": found.status,
        "scale_exponent": scaled.market.exponent,
        "scale": math.ldexp(1.0, scaled.market.exponent) if scaled.market.exponent < 1024 else None,
        "arcs": search.arcs,
        "solves": search.solves,
        "contested": search.contested,
        "price_rounds": search.price_rounds,
        "refreshed": search.refreshed,
        "rounds": search.rounds,
        "fallback": search.fallback,
        "max_rounding_error": math.ldexp(scaled.max_error, -scaled.market.exponent),
    }
    backend = _backend_name(engine)
    times: dict[str, Any] = {
        "build_time": search.build_time,
        "solve_time": search.solve_time,
        "info": info,
    }
    if status is not Status.OPTIMAL or found.x is None:
        return Assignment.no_solution(status, backend, message, **times)
    problem = scaled.problem
    x = found.x
    loads = found.loads  # every OPTIMAL end of a search keeps its holders per expert
    assert loads is not None
    rounded = int(loads.sum())
    if problem.balance_penalty > 0:
        rounded += int(np.maximum(loads - scaled.market.lo, 0).sum())
    if found.prices is not None:
        prices = np.ldexp(found.prices.astype(np.float64), -scaled.market.exponent)
        info["prices"] = prices.tolist()
    result = Assignment.from_x(
        problem, x, status=Status.OPTIMAL, bound=math.nan, backend=backend,
        largest=scaled.reach, counts=loads, **times,
    )  # fmt: skip
    gap = scaled.error_bound(rounded)
    bound = result.objective + gap
    scale = max(abs(result.objective), scaled.reach)
    if gap > RTOL * scale:  # cancellation in the objective: its terms set the scale
        scale = max(scale, _held_magnitude(problem, x))
    if gap <= RTOL * scale:
        return result.replace(bound=bound)
    info["certified_gap"] = gap
    return result.replace(
        status=Status.FEASIBLE,
        bound=bound,
        message=(
            f"optimal for the costs rounded to multiples of 2**{-scaled.market.exponent}, "
            f"but the rounding certifies only bound − objective <= {gap:.3g}, above "
            f"{RTOL:g} × the objective's scale {scale:.3g}"
        ),
    )


def _held_magnitude(problem: AssignmentProblem, x: Bool) -> float:
    """Σ |effective utility| over the held pairs."""
    total = 0.0
    for rows in _prices.chunks(problem.n_clients, problem.n_experts):
        total += float(np.abs(_effective_rows(problem, rows))[x[rows]].sum())
    return total
