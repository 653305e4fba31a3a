r"""Continuous relaxation with the quadratic balance penalty (CVXPY), rounded to a
feasible assignment; the relaxation's value is the certified bound.

The relaxation is compiled once per problem structure and re-solved with new data — a
federated run changes utilities and `previous` every round, not the structure. A re-solve
starts on the last solve's working set and is certified on every pair by pricing (see
:class:`ConvexSolver`); ``warm=False`` re-solves every pair through the parameters.
:class:`ConvexSolver` is also the backend's session class: ``Solver("convex")`` keeps
one relaxation and its duals across the rounds of a federated run.

Notes
-----
Data: the allowed pairs ``j = (n, e)`` as one flat vector; fixed sparse matrices ``R``
(client of each pair), ``S_w`` (expert of each pair, times its load weight) and one
``R_b`` per budget row ``b`` (storage, compute, the user's: its costs). Parameters (flat
vectors, set every solve): effective utility ``ū``, ``min_experts``, ``max_experts``,
``load_min``, ``load_max``, each budget row's ``limit_b`` and λ.

.. math::

    \max_{z, L, g} \; g - λ\,\|L - \bar L\,\mathbf 1\|^2
    \quad\text{s.t.}\quad g \le ū^\top z,\; 0 \le z \le 1,\;
    \text{min} \le R z \le \text{max},\; R_b z \le \text{limit}_b\ \forall b,\;
    L = S_w z,\; \text{load\_min} \le L \le \text{load\_max}

with ``λ·(top − bottom)``, ``bottom ≤ L ≤ top`` for the range metric. The epigraph
variable ``g`` keeps the large utility parameter out of the quadratic objective (CVXPY
densifies the parameter coefficients of a quadratic objective: 93 GiB at 1,000 × 64), and
no coefficient matrix is a parameter (``cp.multiply(parameter, z)`` builds a P²-row tensor:
30 GiB). Coefficients (budget costs, load weights) are part of the structure key.

Every integer assignment is feasible for the relaxation, so its optimal value bounds the
integer optimum from above; the bound reported is that value plus the solver's tolerance
(``BOUND_SLACK``·max(|value|, unit)), and only from a solve CVXPY reports as ``optimal``.
The solvers see the objective in units of ``problem.objective_unit`` (a power of two at
or below its largest coefficient, so ū, λ and μ are divided exactly): the same relaxation
and the same relative bound at utilities of 1e-300, 1 or 1e300 (unscaled, HiGHS failed
at 1e15 and Clarabel at 1e100, and called ``[[1e20, 2e20]]`` with λ = 1 infeasible). A
solver that fails outright gives no bound; the rounding still runs.

Rounding: the relaxation's support (pairs with ``z > 1e-6``) becomes the allowed mask of
a restricted problem solved exactly (flow when the structure allows, MILP otherwise); if
that is infeasible the support widens by each client's best and cheapest experts, and
last the MILP takes the full problem. The better of that and ``greedy balanced`` on the
whole problem is returned.

Examples
--------
>>> import numpy as np
>>> from flexmoe.assign import AssignmentProblem, solve
>>> p = AssignmentProblem([[1.0, 0.8], [1.0, 0.8]], max_experts=1, balance_penalty=0.2)
>>> r = solve(p, backend="convex")
>>> r.status, r.objective, r.bound >= 1.8
(<Status.FEASIBLE: 'feasible'>, 1.8, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexmoe.assign.deadline import current, seconds_left
from flexmoe.assign.precheck import infeasibility_reason
from flexmoe.assign.problem import AssignmentProblem, BalanceMetric, Bool, Float
from flexmoe.assign.registry import Variant
from flexmoe.assign.result import Assignment, Status
from flexmoe.assign.verify import verify

__all__ = ["BOUND_SLACK", "SESSION", "ConvexSolver", "clear_cache", "solve"]

NAME = "convex"
EXACT = False
VARIANTS = (Variant("cvxpy", ("cvxpy",), extra="convex", description="CVXPY (HiGHS, Clarabel)"),)

#: Relative slack added to the relaxation's value (of max(|value|, the objective's
#: unit)): the solvers used stop at 1e-8.
BOUND_SLACK = 1e-6
#: Pairs with a relaxation value above this are the support handed to the rounding.
SUPPORT = 1e-6
#: The rounding's restricted solves stop at this gap and after this many seconds: they
#: need a good assignment, the relaxation certifies how good.
ROUNDING_GAP = 1e-4
ROUNDING_TIME = 20.0
#: Relaxation solves per call at most while pricing adds candidate pairs, and the
#: relative improvement the excluded pairs may still promise when it stops.
PRICING_ROUNDS = 8
PRICING_TOL = 1e-7
#: Pairs whose reduced cost is above −PRICING_MARGIN·mean|ū| join with the improving ones.
PRICING_MARGIN = 0.1
#: A warm re-solve starts on the last support, each client's WARM_TOP + max_experts best
#: pairs by their price at the last duals, and the pairs priced above −WARM_MARGIN·mean|ū|
#: (see ``ConvexSolver._working_set``).
WARM_MARGIN = 0.2
WARM_TOP = 12
#: Compiled relaxations kept, most recently used first.
CACHE_SIZE = 4
#: Solvers CVXPY warm-starts usefully. Not HiGHS: CVXPY hands it the previous solution,
#: which made a re-solve of a 100 × 64 relaxation 40× slower (2.9 s against 0.07 s) and
#: one at 1,000 × 64 run for minutes; Clarabel (interior point) takes no start.
WARM_STARTS = frozenset({"OSQP", "SCS"})
#: Solver tolerances and time-limit option names per CVXPY solver.
_SOLVER_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "CLARABEL": ({"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}, "time_limit"),
    "HIGHS": ({}, "time_limit"),
    "OSQP": ({"eps_abs": 1e-9, "eps_rel": 1e-9, "polish": True}, "time_limit"),
}


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def structure_key(problem: AssignmentProblem) -> tuple[Any, ...]:
    """What a compiled relaxation depends on: shape, allowed pattern, coefficients (load
    weights, every budget row's name and costs), and the balance metric when λ > 0 (λ
    and the budget limits are parameters)."""
    metric = problem.balance_metric if problem.balance_penalty > 0 else None
    return (
        problem.shape,
        _digest(problem.allowed, problem.load_weight, *(row.cost for row in problem.budgets)),
        tuple((row.name, row.cost.ndim) for row in problem.budgets),
        metric,
    )


class ConvexSolver:
    """The relaxation of one problem structure, compiled once by CVXPY.

    :meth:`relax` sets the parameters from a problem of the same structure and solves;
    later calls skip CVXPY's compilation. With ``candidates=True`` and many experts the
    variables cover only candidate pairs (each client's best and cheapest experts, each
    expert's best clients); the solve is then certified on every pair by pricing: with
    the duals of the client, budget and load rows, an excluded pair's reduced cost
    ``r = ū + α_n − β_n − Σ_rows κ_n·cost[n, e] + ν_e·w[n, e]`` is what it could
    add, so ``value + Σ max(r, 0)`` bounds the full relaxation (weak duality). Pairs with
    ``r > 0`` join the candidates and the relaxation is compiled again.

    With ``warm=True`` (default) a re-solve starts from the last optimal solve: on its
    working set (:meth:`_working_set`: the last support and the pairs the last duals
    price near or above zero with the new data), certified by the same pricing. An
    interior-point solve cannot use a starting point, but its time grows faster than
    the number of pairs: at 1,000 × 64 a working set of a third of the pairs solves 3–5×
    faster, compiling its model included. ``warm=False`` re-solves every pair through
    the parameters and never compiles again.

    It is the backend's session (``SESSION``, see :class:`flexmoe.assign.Solver`):
    ``ConvexSolver(**options)`` takes the options of :func:`solve`, and
    :meth:`solve` relaxes, rounds and bounds like it, keeping the compiled relaxation
    and the last duals; a problem of another structure compiles the relaxation anew.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> p = AssignmentProblem(np.eye(3), max_experts=1, load_min=1)
    >>> solver = ConvexSolver(p)
    >>> first = solver.relax(p)
    >>> again = solver.relax(p.replace(utility=2 * np.eye(3)))
    >>> round(first.value, 6), round(again.value, 6), first.compiled, again.compiled
    (3.0, 6.0, True, False)
    >>> solver.solve(p.replace(utility=3 * np.eye(3))).objective
    9.0
    """

    def __init__(
        self,
        problem: AssignmentProblem | None = None,
        *,
        solver: str | None = None,
        cache: bool = True,
        candidates: bool = False,
        warm: bool = True,
    ):
        self.solver, self.cache, self.candidates, self.warm = solver, cache, candidates, warm
        self.key: tuple[Any, ...] | None = None
        self.lock = threading.Lock()  # held by the solve using it (see `_exclusive`)
        if problem is not None:
            self._compile(problem)

    def _compile(self, problem: AssignmentProblem) -> None:
        """Start over on `problem`'s structure: candidates, model, no last solve."""
        self.key = structure_key(problem)
        self.allowed = problem.allowed_mask().copy()
        chosen = _candidates(problem) if self.candidates else None
        self.mask = self.allowed if chosen is None else chosen
        self._last: _Dual | None = None  # z and duals of the last optimal solve
        self._full: tuple[Any, ...] | None = None  # the model on every pair, compiled
        self._model(problem)

    def solve(
        self,
        problem: AssignmentProblem,
        *,
        time_limit: float | None = None,
        seed: int | None = None,
    ) -> Assignment:
        """Relax, round and bound `problem` like :func:`solve`, re-solving warm when it
        has this session's structure (with ``cache=False``: compiling every time)."""
        with _exclusive(self, problem) as compiled:
            if compiled is self and (
                self.key != structure_key(problem) or (not self.cache and self.compiled)
            ):
                self._compile(problem)
            return _solve(compiled, problem, time_limit, seed, self.solver)

    _FIELDS = ("problem", "z", "rows", "params", "clients", "experts", "compiled")

    def _use(self, mask: Bool, problem: AssignmentProblem) -> None:
        """Make the model over `mask` current; the model over every pair, once
        compiled, is kept and comes back without compiling again."""
        if self.mask is self.allowed and self.compiled:
            self._full = tuple(getattr(self, name) for name in self._FIELDS)
        self.mask = mask
        if mask is self.allowed and self._full is not None:
            for name, value in zip(self._FIELDS, self._full, strict=True):
                setattr(self, name, value)
        else:
            self._model(problem)

    def _model(self, problem: AssignmentProblem) -> None:
        """Data → variables → constraints → objective over the candidate pairs."""
        import cvxpy as cp
        from scipy import sparse

        # data: one entry per candidate pair, fixed incidence matrices
        clients, experts = np.nonzero(self.mask)
        self.clients, self.experts = clients, experts
        n, e, pairs = problem.n_clients, problem.n_experts, clients.size

        def rows(index: np.ndarray, values: Float, count: int) -> Any:
            return sparse.csr_array((values, (index, np.arange(pairs))), shape=(count, pairs))

        # parameters (flat vectors)
        p = self.params = {
            "utility": cp.Parameter(pairs),
            "min_experts": cp.Parameter(n),
            "max_experts": cp.Parameter(n),
            "load_min": cp.Parameter(e),
            "load_max": cp.Parameter(e),
        }
        # variables
        z, loads, gain = cp.Variable(pairs, bounds=[0, 1]), cp.Variable(e), cp.Variable()
        self.z = z
        held = rows(clients, np.ones(pairs), n) @ z
        weight = problem.weights()[clients, experts]
        self.rows = {
            "utility": gain <= p["utility"] @ z,  # epigraph: keeps ū out of the objective
            # each client holds between min_experts and max_experts experts
            "at_least": held >= p["min_experts"],
            "at_most": held <= p["max_experts"],
            # loads, and their band
            "loads": loads == rows(experts, weight, e) @ z,
        }
        self.rows |= self._budgets(problem, rows, z)
        constraints = [*self.rows.values()]
        constraints += [loads >= p["load_min"], loads <= p["load_max"]]
        objective = gain - self._balance(problem, loads, constraints)
        self.problem = cp.Problem(cp.Maximize(objective), constraints)
        self.compiled = False

    def _budgets(self, problem: AssignmentProblem, rows: Any, z: Any) -> dict[str, Any]:
        """Every budget row (storage, compute, ...): Σ_e cost[n, e]·z[n, e] ≤ limit[n]."""
        import cvxpy as cp

        out = {}
        for row in problem.budgets:
            limit = self.params[_limit_key(row.name)] = cp.Parameter(problem.n_clients)
            cost = rows(self.clients, row.at(self.clients, self.experts), problem.n_clients)
            out[_row_key(row.name)] = cost @ z <= limit
        return out

    def _balance(self, problem: AssignmentProblem, loads: Any, constraints: list) -> Any:
        """λ·Σ (L − L̄)² (a quadratic objective) or λ·(top − bottom), or 0."""
        import cvxpy as cp

        if problem.balance_penalty == 0:
            return 0.0
        lam = self.params["balance_penalty"] = cp.Parameter(nonneg=True)
        if problem.balance_metric is BalanceMetric.VARIANCE:
            return lam * cp.sum_squares(loads - cp.sum(loads) / problem.n_experts)
        top, bottom = cp.Variable(), cp.Variable()
        constraints += [loads <= top, loads >= bottom]
        return lam * (top - bottom)

    def _same_structure(self, problem: AssignmentProblem, *, compile_first: bool) -> None:
        """Refuse a problem of another structure (compile for it, when none is yet)."""
        if self.key is None and compile_first:
            self._compile(problem)
        if structure_key(problem) != self.key:
            raise ValueError("`problem` has another structure than this compiled relaxation")

    def set_data(self, problem: AssignmentProblem) -> None:
        """Put `problem`'s data into the parameters (same structure)."""
        self._same_structure(problem, compile_first=False)
        hi = np.minimum(problem.load_max, np.maximum(problem.reach, problem.load_min))
        values = {
            "utility": problem.effective_utility()[self.clients, self.experts],
            "min_experts": problem.min_experts.astype(np.float64),
            "max_experts": problem.most_experts.astype(np.float64),
            "load_min": problem.load_min,
            "load_max": hi,
            "balance_penalty": problem.balance_penalty,
            **{_limit_key(row.name): row.limit for row in problem.budgets},
        }
        for name, param in self.params.items():
            param.value = values[name]

    def relax(
        self,
        problem: AssignmentProblem,
        *,
        solver: str | None = None,
        time_limit: float | None = None,
    ) -> Relaxation:
        """Solve the relaxation of `problem` (same structure); price the pairs outside
        the candidates and, while some could improve it, add them and solve again."""
        name = solver or _default_solver(problem)
        start, compiled, gain, priced = time.perf_counter(), False, 0.0, 0
        caught: list[str] = []
        self._same_structure(problem, compile_first=True)
        unit = problem.objective_unit
        problem = _in_units(problem, unit)
        warm = self.warm and self._last is not None
        if warm:
            self._use(self._working_set(problem), problem)
        working_set = warm and self.mask is not self.allowed
        solves = 0
        while True:
            self.set_data(problem)
            compiled |= not self.compiled
            solves += 1
            left = None if time_limit is None else time_limit - (time.perf_counter() - start)
            failure = self._solve(name, left, caught)
            status, value = str(self.problem.status), self.problem.value
            value = math.nan if value is None else float(value)
            if failure is not None:
                status, value = failure, math.nan
            if self.mask is self.allowed or status not in ("optimal", "infeasible"):
                gain = 0.0
                break
            if status == "infeasible":  # on the candidates this proves nothing: every pair
                gain, better = math.inf, self.allowed
            else:  # certified, or out of pricing rounds: the bound is value + gain
                priced += 1
                gain, better = self._priced(problem)
                if gain <= PRICING_TOL * max(1.0, abs(value)) or priced >= PRICING_ROUNDS:
                    break
            self._use(self.allowed if better.sum() > self.allowed.sum() // 2 else better, problem)
        if status == "optimal":
            self._last = _Dual(self._z(problem), self._duals())
        z = self._z(problem) if failure is None else np.zeros(problem.shape)
        return Relaxation(
            status=status,
            value=value * unit,
            z=z,
            solver=name,
            time=time.perf_counter() - start,
            compiled=compiled,
            warnings=tuple(caught),
            pricing_gain=gain * unit,
            pairs=int(self.mask.sum()),
            working_set=working_set,
            solves=solves,
            unit=unit,
        )

    def _solve(self, name: str, time_limit: float | None, caught: list[str]) -> str | None:
        """One CVXPY solve; adds the warnings it raised to `caught` (kept in the
        result's info). Returns None, or the status of a solver that failed outright
        (``"solver_error: ..."``): CVXPY raises for those, and nothing it reports then
        is a bound."""
        import cvxpy as cp

        options, limit_name = _SOLVER_OPTIONS.get(name, ({}, ""))
        options = dict(options)
        if time_limit is not None and limit_name:
            options[limit_name] = max(time_limit, 1e-3)
        if name == "HIGHS":
            from flexmoe.assign.backends._highs import silence_highs_banner

            silence_highs_banner()
        failure = None
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            try:
                self.problem.solve(solver=name, warm_start=name in WARM_STARTS, **options)
            except (cp.error.SolverError, ValueError) as err:  # "Cannot unpack invalid solution"
                failure = f"solver_error: {type(err).__name__}: {err}"
        self.compiled = True
        caught += [str(w.message) for w in raised]
        return failure

    def _duals(self) -> dict[str, Float]:
        return {key: np.asarray(row.dual_value, np.float64) for key, row in self.rows.items()}

    def _priced(self, problem: AssignmentProblem) -> tuple[float, Bool]:
        """Σ max(r, 0) over the allowed pairs outside the candidates, and the candidates
        with the pairs of positive reduced cost added."""
        n, e = np.nonzero(self.allowed & ~self.mask)
        r = _reduced_costs(problem, self._duals(), n, e)
        # add the improving pairs and those close to improving, so that the next rounds'
        # utilities rarely need another compilation
        near = r > -PRICING_MARGIN * float(np.abs(problem.effective_utility()).mean())
        better = self.mask.copy()
        better[n[near], e[near]] = True
        return float(np.maximum(r, 0.0).sum()), better

    def _working_set(self, problem: AssignmentProblem) -> Bool:
        """Where a warm re-solve starts: the last support, each client's ``max_experts +
        WARM_TOP`` best pairs by their price at the last duals with this problem's data,
        and every pair that price puts above ``−WARM_MARGIN·mean|ū|`` after two
        corrections for how the duals move — or every pair when that is more than half
        of them. Any start is certified by pricing; a good one needs one solve, on about
        a third of the pairs."""
        assert self._last is not None
        n, e = np.nonzero(self.allowed)
        price = np.full(problem.shape, -np.inf)
        price[n, e] = _reduced_costs(problem, self._last.duals, n, e)
        mask = (self._last.z > SUPPORT) | _top(price, problem.most_experts + WARM_TOP)
        # a client whose held pairs lost value (its max_experts-th price is now negative)
        # will see its slot price fall by as much: all its pairs rise together
        held = np.clip(problem.most_experts - 1, 0, problem.n_experts - 1)
        kth = -np.sort(-price, axis=1)[np.arange(problem.n_clients), held]
        kth = np.where(np.isfinite(kth) & (problem.most_experts > 0), kth, 0.0)
        price -= np.minimum(kth, 0.0)[:, None]
        # a pair's price moves with the load duals in proportion to its load weight: pairs
        # heavier than the median get ``max|ν|·(w − median w)`` more room (a client with
        # 44× the median weight was missed by every other rule)
        weights = problem.weights()
        positive = weights[weights > 0]
        excess = np.maximum(weights - float(np.median(positive)), 0.0) if positive.size else 0.0
        drift = float(np.abs(self._last.duals["loads"]).max())
        scale = float(np.abs(problem.effective_utility()).mean())
        mask |= price > -WARM_MARGIN * scale - drift * excess
        mask &= self.allowed
        return self.allowed if mask.sum() > self.allowed.sum() // 2 else mask

    def _z(self, problem: AssignmentProblem) -> Float:
        z = np.zeros(problem.shape)
        if self.z.value is not None:
            z[self.clients, self.experts] = np.clip(self.z.value, 0.0, 1.0)
        return z


@dataclass(frozen=True)
class _Dual:
    """What a warm re-solve starts from: the last relaxation's ``z`` and row duals."""

    z: Float
    duals: dict[str, Float]


def _in_units(problem: AssignmentProblem, unit: float) -> AssignmentProblem:
    """`problem` with its objective divided by `unit` (a power of two: exact) — what the
    relaxation is solved on, so that its solvers see coefficients of order 1."""
    if unit == 1.0:
        return problem
    return problem.replace(
        utility=problem.utility / unit,
        balance_penalty=problem.balance_penalty / unit,
        switch_cost=problem.switch_cost / unit,
    )


def _row_key(name: str) -> str:
    """The constraint (and dual) of budget row `name`."""
    return f"budget:{name}"


def _limit_key(name: str) -> str:
    """The parameter of budget row `name`'s limits."""
    return f"limit:{name}"


def _reduced_costs(
    problem: AssignmentProblem, dual: dict[str, Float], n: np.ndarray, e: np.ndarray
) -> Float:
    """``r = ū + α_n − β_n − Σ_rows κ_n·cost[n, e] + ν_e·w[n, e]`` of the pairs
    ``(n, e)``: what each could add to the relaxation at these duals."""
    r = dual["utility"] * problem.effective_utility()[n, e]
    r += dual["at_least"][n] - dual["at_most"][n] + dual["loads"][e] * problem.weights()[n, e]
    for row in problem.budgets:
        r -= dual[_row_key(row.name)][n] * row.at(n, e)
    return r


def _candidates(problem: AssignmentProblem) -> Bool | None:
    """Each client's best ``max_experts + 8`` experts by utility and cheapest
    ``max_experts`` by storage and compute, its previous ones, and each expert's best
    ``load_min / mean weight + 8`` clients — or None (every allowed pair) when there
    are fewer than 16 experts or the candidates are more than half the pairs."""
    allowed = problem.allowed_mask()
    if problem.n_experts < 16:
        return None
    utility = problem.masked_utility
    mask = _top(utility, problem.most_experts + 8)
    mask |= _top(np.where(allowed, -problem.budget_share, -np.inf), problem.most_experts)
    if problem.previous is not None:
        mask |= problem.previous
    mean_weight = max(float(problem.weights().mean()), 1e-12)
    per_expert = np.ceil(problem.load_min / mean_weight).astype(np.int64) + 8
    mask |= _top(utility.T, per_expert).T
    mask &= allowed
    return mask if mask.sum() <= allowed.sum() // 2 else None


def _top(score: Float, count: np.ndarray) -> Bool:
    """Per row, the `count[row]` highest finite scores."""
    order = np.argsort(-score, axis=1, kind="stable")
    rank = np.arange(score.shape[1])[None, :] < np.asarray(count)[:, None]
    chosen = np.zeros(score.shape, dtype=bool)
    np.put_along_axis(chosen, order, rank, axis=1)
    return chosen & np.isfinite(score)


@dataclass(frozen=True)
class Relaxation:
    """One solve of the relaxation: CVXPY's status and value, ``z`` as (N, E), what the
    pairs outside the candidates could still add, how many pairs it had, and whether it
    started from the last solve's working set."""

    status: str
    value: float
    z: Float
    solver: str
    time: float
    compiled: bool
    warnings: tuple[str, ...] = ()
    pricing_gain: float = 0.0
    pairs: int = 0
    working_set: bool = False
    solves: int = 1
    unit: float = 1.0
    """The unit the solver saw the objective in (``problem.objective_unit``); `value`
    and `pricing_gain` are in the problem's own units."""

    @property
    def bound(self) -> float:
        """An upper bound on the integer optimum, or NaN when the solve proves nothing:
        the value plus the solver's tolerance, relative to the value and to the unit."""
        if self.status != "optimal" or not math.isfinite(self.value + self.pricing_gain):
            return math.nan
        slack = BOUND_SLACK * max(self.unit, abs(self.value))
        return self.value + self.pricing_gain + slack


def _default_solver(problem: AssignmentProblem) -> str:
    """HiGHS for linear programs, Clarabel for the quadratic balance term."""
    import cvxpy as cp

    installed = cp.installed_solvers()
    quadratic = problem.balance_penalty > 0 and problem.balance_metric is BalanceMetric.VARIANCE
    for name in ("CLARABEL", "OSQP") if quadratic else ("HIGHS", "CLARABEL"):
        if name in installed:
            return name
    return str(installed[0])


_CACHE: OrderedDict[tuple[Any, ...], ConvexSolver] = OrderedDict()


def clear_cache() -> None:
    """Forget every compiled relaxation."""
    _CACHE.clear()


def _compiled(
    problem: AssignmentProblem, candidates: bool = False, warm: bool = True
) -> ConvexSolver:
    """The cached relaxation for `problem`'s structure (compiled on first use)."""
    key = (*structure_key(problem), candidates, warm)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    solver = ConvexSolver(problem, candidates=candidates, warm=warm)
    _CACHE[key] = solver
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return solver


# -- solve: relax → round → extract ----------------------------------------------------


def solve(
    problem: AssignmentProblem,
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    solver: str | None = None,
    cache: bool = True,
    candidates: bool = False,
    warm: bool = True,
) -> Assignment:
    """Solve the relaxation, round it to a feasible assignment, bound the gap.

    Parameters
    ----------
    problem : AssignmentProblem
    time_limit : float, optional
        Seconds for relaxation and rounding together.
    seed : int, optional
        Passed to the rounding solver.
    solver : str, optional
        A CVXPY solver name (``"CLARABEL"``, ``"HIGHS"``, ``"OSQP"``, ...). Default:
        HiGHS for linear relaxations, Clarabel with the quadratic balance term.
    cache : bool
        Reuse the compiled relaxation of a problem with the same structure (default).
    candidates : bool
        Solve the relaxation on candidate pairs, certified by pricing (see
        :class:`ConvexSolver`): faster per solve with many experts, but a round whose
        utilities make excluded pairs attractive compiles a larger relaxation again.
    warm : bool
        Start a re-solve of a cached relaxation on the last solve's working set,
        certified by pricing (default; see :class:`ConvexSolver`). ``False`` re-solves
        every pair through the parameters, compiling nothing.

    Returns
    -------
    Assignment
        ``FEASIBLE`` with the relaxation's value as `bound` (never ``OPTIMAL``: this is not
        an exact backend), or ``INFEASIBLE`` when the relaxation is and the exact backend
        (flow, or the MILP without presolve) confirms it on the whole problem — a proof,
        stated in ``info["proof"]``.
    """
    if cache:
        compiled = _compiled(problem, candidates, warm)
    else:
        compiled = ConvexSolver(problem, cache=False, candidates=candidates, warm=warm)
    with _exclusive(compiled, problem) as free:
        return _solve(free, problem, time_limit, seed, solver)


@contextlib.contextmanager
def _exclusive(compiled: ConvexSolver, problem: AssignmentProblem) -> Iterator[ConvexSolver]:
    """`compiled`, held for this solve; or, while a time-limited solve that was
    abandoned still runs on it (:mod:`flexmoe.assign.deadline`), a fresh relaxation of
    `problem` for this solve alone: two solves never share one CVXPY problem."""
    if not compiled.lock.acquire(blocking=False):
        fresh = ConvexSolver(problem, cache=False, candidates=compiled.candidates, warm=False)
        yield fresh
        return
    try:
        yield compiled
    finally:
        compiled.lock.release()


def _solve(
    compiled: ConvexSolver,
    problem: AssignmentProblem,
    time_limit: float | None,
    seed: int | None,
    solver: str | None,
) -> Assignment:
    """Relax with `compiled` (of `problem`'s structure) → round → bound."""
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    progress = current()  # a time-limited solve reports what it finds as it goes
    greedy = _greedy(problem, seed)
    if greedy.has_solution:
        progress.offer(problem, greedy.x, source="greedy:balanced")
    relaxation = compiled.relax(problem, solver=solver, time_limit=seconds_left(deadline))
    progress.tighten(problem, relaxation.bound)
    info = _relaxation_info(relaxation, compiled)
    build_time = float(info.pop("compile_time"))
    tick = time.perf_counter()
    rounded: Assignment | None
    if progress.cancelled:
        rounded, how = None, "none: the time limit passed before the rounding"
    elif relaxation.status == "infeasible":
        exact = _exact(problem, deadline, seed, None)
        if exact.status is Status.INFEASIBLE:
            return _infeasible(relaxation, exact, build_time, info)
        rounded, how = exact, f"full problem: {exact.backend} (the relaxation said infeasible)"
    else:
        rounded, how = _round(problem, relaxation.z, deadline, seed)
    if how.startswith("full") and rounded is not None:
        info["full_problem_bound"] = rounded.bound
    rounded, how = _keep_the_better(rounded, how, greedy)
    info |= {"rounding": how, "rounding_time": time.perf_counter() - tick}
    solve_time = time.perf_counter() - start - build_time
    return _result(problem, relaxation, rounded, build_time, solve_time, info)


def _infeasible(
    relaxation: Relaxation, exact: Assignment, build_time: float, info: dict[str, Any]
) -> Assignment:
    """``INFEASIBLE``: the relaxation is infeasible and the exact backend (flow, or the
    MILP without presolve) confirms it on the whole problem — an interior-point method
    or an LP presolve can call a badly scaled but feasible relaxation infeasible."""
    info["proof"] = (
        f"the continuous relaxation is infeasible ({relaxation.solver}), "
        f"confirmed by {exact.backend} on the whole problem"
    )
    message = (
        "no assignment exists: even fractional assignments cannot meet every constraint "
        f"together (proved by {relaxation.solver} on the relaxation; {exact.backend}: "
        f"{exact.message})"
    )
    solve_time = relaxation.time - build_time + exact.build_time + exact.solve_time
    return Assignment.no_solution(
        Status.INFEASIBLE, NAME, message, build_time=build_time, solve_time=solve_time, info=info
    )


def _relaxation_info(relaxation: Relaxation, compiled: ConvexSolver) -> dict[str, Any]:
    stats = compiled.problem.solver_stats
    inner = stats.solve_time if stats is not None and stats.solve_time is not None else 0.0
    z = relaxation.z
    return {
        "solver": relaxation.solver,
        "relaxation_status": relaxation.status,
        "relaxation_value": relaxation.value,
        "relaxation_time": relaxation.time,
        "compiled": relaxation.compiled,
        "compile_time": max(relaxation.time - inner, 0.0),
        "candidate_pairs": relaxation.pairs,
        "working_set": relaxation.working_set,
        "relaxation_solves": relaxation.solves,
        "pricing_gain": relaxation.pricing_gain,
        "support_pairs": int((z > SUPPORT).sum()),
        "fractional_pairs": int(((z > SUPPORT) & (z < 1 - SUPPORT)).sum()),
        "solver_warnings": list(relaxation.warnings),
    }


def _round(
    problem: AssignmentProblem, z: Float, deadline: float | None, seed: int | None
) -> tuple[Assignment | None, str]:
    """An exact solve on the relaxation's support, then a wider one, then the full problem."""
    allowed = problem.allowed_mask()
    for how, mask in (("support", z > SUPPORT), ("widened support", _widened(problem, z))):
        restricted = problem.replace(allowed=mask & allowed)
        if infeasibility_reason(restricted) is not None:
            continue
        result = _exact(restricted, deadline, seed, ROUNDING_TIME)
        if result.has_solution:
            current().offer(problem, result.x, source=f"the rounding ({how})")
            return result, f"{how}: {result.backend} on {int((mask & allowed).sum())} pairs"
        out_of_time = deadline is not None and time.perf_counter() >= deadline
        if result.status is Status.LIMIT_NO_SOLUTION and out_of_time:
            return None, f"{how}: time limit before a feasible assignment"
    result = _exact(problem, deadline, seed, None)
    return result, f"full problem: {result.backend}"


def _exact(
    problem: AssignmentProblem, deadline: float | None, seed: int | None, cap: float | None
) -> Assignment:
    """Flow when the structure allows, else the MILP stopped at `ROUNDING_GAP` (the
    sibling backends, called directly, their answer checked by the verifier): the
    rounding needs a good assignment, the relaxation already certifies the gap."""
    from flexmoe.assign.backends import flow, milp

    limit = seconds_left(deadline)
    if cap is not None:
        limit = cap if limit is None else min(limit, cap)
    if flow.unsupported(problem) is None and flow.VARIANTS[0].available:
        return _verified(problem, flow.solve(problem, time_limit=limit, seed=seed))
    result = milp.solve(problem, time_limit=limit, seed=seed, mip_gap=ROUNDING_GAP)
    return _verified(problem, result)


def _verified(problem: AssignmentProblem, result: Assignment) -> Assignment:
    """`result`, or an ``ERROR`` when the independent checker rejects its assignment."""
    if result.x is None:
        return result
    verdict = verify(problem, result.x, objective=result.objective, bound=result.bound)
    if verdict.ok:
        return result
    return result.replace(status=Status.ERROR, message=f"verifier: {verdict.reason}")


def _greedy(problem: AssignmentProblem, seed: int | None) -> Assignment:
    """``greedy balanced`` on the whole problem (the sibling, called directly), checked."""
    from flexmoe.assign.backends import greedy

    return _verified(problem, greedy.solve(problem, seed=seed, method="balanced"))


def _keep_the_better(
    rounded: Assignment | None, how: str, greedy: Assignment
) -> tuple[Assignment | None, str]:
    """The rounding, or `greedy` (``greedy balanced`` on the whole problem) when that is
    better: a restricted MILP stopped at its cap can hold an incumbent far below
    (weighted loads with the variance term: −171,095 against greedy's 4,460 at
    1,000 × 64)."""
    if not greedy.has_solution:
        return rounded, how
    if rounded is None or not rounded.has_solution or greedy.objective > rounded.objective:
        had = (
            "nothing" if rounded is None or not rounded.has_solution else f"{rounded.objective:.6g}"
        )
        return greedy, f"greedy balanced on every pair ({how} gave {had})"
    return rounded, how


def _widened(problem: AssignmentProblem, z: Float) -> Bool:
    """The support plus each client's best (by relaxation, then utility) and cheapest
    (by storage and compute) ``max_experts + 2`` experts."""
    count = np.minimum(problem.most_experts + 2, problem.n_experts)
    rank = np.arange(problem.n_experts)[None, :] < count[:, None]
    mask = z > SUPPORT
    scores = [-(z + 1e-3 * problem.effective_utility())]
    if problem.budget_share.any():
        scores.append(problem.budget_share)
    for score in scores:
        order = np.argsort(np.where(problem.allowed_mask(), score, np.inf), axis=1)
        chosen = np.zeros(problem.shape, dtype=bool)
        np.put_along_axis(chosen, order, rank, axis=1)
        mask |= chosen
    return mask


def _result(
    problem: AssignmentProblem,
    relaxation: Relaxation,
    rounded: Assignment | None,
    build_time: float,
    solve_time: float,
    info: dict[str, Any],
) -> Assignment:
    """The rounded assignment with the relaxation's bound; never ``OPTIMAL``."""
    times: dict[str, Any] = {"build_time": build_time, "solve_time": solve_time, "info": info}
    bound = relaxation.bound
    full = info.get("full_problem_bound", math.nan)
    if math.isfinite(full):  # the MILP's dual bound on the whole problem is valid too
        bound = full if math.isnan(bound) else min(bound, full)
    if rounded is None or rounded.x is None or not rounded.has_solution:
        status = Status.LIMIT_NO_SOLUTION if rounded is None else rounded.status
        if status is Status.FEASIBLE or status is Status.OPTIMAL:
            status = Status.ERROR
        if rounded is not None and status is Status.INFEASIBLE:
            info["proof"] = f"{rounded.backend} on the whole problem: {rounded.message}"
            bound = math.nan  # nothing to bound
        message = info["rounding"] if rounded is None else rounded.message
        return Assignment.no_solution(status, NAME, message, bound=bound, **times)
    message = ""
    if relaxation.status != "optimal":
        message = f"relaxation {relaxation.status} ({relaxation.solver}): no bound from it"
    result = Assignment.from_x(
        problem,
        rounded.x,
        status=Status.FEASIBLE,
        bound=bound,
        backend=NAME,
        message=message,
        **times,
    )
    if result.objective > bound:
        note = "the rounded objective exceeds the relaxation's value (solver inaccuracy)"
        return result.replace(bound=math.nan, message=f"{note}; no bound reported")
    return result


#: The backend's session class (see :class:`flexmoe.assign.Solver`).
SESSION = ConvexSolver
