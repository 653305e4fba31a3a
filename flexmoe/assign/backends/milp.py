r"""Exact MILP for every constraint, with the solver's dual bound as a certified gap.

One formulation, built as sparse arrays with numpy, handed to an engine:

* ``highs`` (default): the arrays go straight into HiGHS through ``highspy`` — the fast
  path (no per-variable Python objects), warm-started from ``greedy:balanced``;
* ``pulp``: the same rows through PuLP, for breadth: CBC (bundled) by default, or any
  solver PuLP finds (``solver="HiGHS"``, ``"GUROBI_CMD"``, ``"CPLEX_CMD"``, ...);
* ``scipy``: ``scipy.optimize.milp`` (SciPy's own HiGHS), a fallback.

Notes
-----
Data: pairs ``(n, e)`` with ``allowed[n, e]`` (forbidden pairs get no variable),
effective utility ``ū = utility − μ·(1 − previous)``, load weights ``w`` (ones for
count loads). Variables: ``x[n, e] ∈ {0, 1}`` and loads ``L[e]``; with a variance penalty
the mean load ``c`` and epigraph variables ``t[e]``; with a range penalty ``top``, ``bottom``.

.. math::

    \max \; \sum_{n,e} ū_{ne} x_{ne} - λ \sum_e t_e
    \quad\text{or}\quad \ldots - λ\,(top - bottom)

subject to

* ``min_experts[n] ≤ Σ_e x[n, e] ≤ max_experts[n]``;
* ``Σ_e expert_size[e]·x[n, e] ≤ storage[n]`` and ``Σ_e compute_cost[n, e]·x[n, e] ≤
  compute_budget[n]`` when given;
* ``L[e] = Σ_n w[n, e]·x[n, e]`` with ``load_min[e] ≤ L[e] ≤ load_max[e]``;
* range: ``bottom ≤ L[e] ≤ top`` — exact;
* variance: ``E·c = Σ_e L[e]`` and ``t[e] ≥ s_k·(L[e] − c) + b_k`` for a family of lines
  under ``d ↦ d²``. Since ``Σ_e (L_e − L̄)² = Σ_e (L_e − c)²`` at ``c = L̄``, the model
  is a relaxation of the true objective (its dual bound is a valid upper bound) and it is
  exact wherever some line touches ``d²`` at ``d = L[e] − c``.

Which lines: with count loads ``d`` only takes values on a grid — step 1 (shifted by the
fixed mean) when every client holds a fixed number of experts, step ``1/E`` otherwise — so
the secants between consecutive grid points are valid and exact at every integer
solution. With weighted loads ``d`` is continuous and the lines are tangents. Either
way the model starts with lines around the warm start's loads (all of them when the
grid is small) and an outer-approximation loop adds the lines through the incumbent's
loads and re-solves until the true objective of the best assignment is within `mip_gap`
of the dual bound; ``info["balance_model"]`` says which case applied and
``info["rounds"]`` how many solves it took.

``OPTIMAL`` means the solver finished and ``(bound − objective) / max(|objective|,
|bound|) ≤ mip_gap`` (default 1e-6), where `objective` is recomputed in float64 from
``x`` and `bound` is the solver's dual bound; a bound within 1e-9·max(1, |objective|)
plus 1e-6 (the row feasibility tolerance) times the objective weight of the continuous
balance columns counts as equal. A time limit gives ``FEASIBLE`` with that bound (or, if
the solver proved none yet, each client's best experts ignoring every coupling), or
``LIMIT_NO_SOLUTION``; never ``OPTIMAL``.

Examples
--------
>>> import numpy as np
>>> from flexmoe.assign import AssignmentProblem, solve
>>> p = AssignmentProblem([[6.0, 1.0], [5.0, 4.0], [1.0, 6.0]], max_experts=1,
...                       load_weight=[[3, 2], [2, 2], [2, 3]], load_max=4)
>>> r = solve(p, backend="milp")
>>> r.status, r.objective, r.gap
(<Status.OPTIMAL: 'optimal'>, 7.0, 0.0)
>>> solve(p, backend="milp:pulp").objective
7.0
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexmoe.assign.errors import BackendUnavailableError
from flexmoe.assign.problem import AssignmentProblem, BalanceMetric, Bool, Float, Int
from flexmoe.assign.result import Assignment, Status, relative_gap
from flexmoe.assign.verify import expert_loads, objective_value, verify

__all__ = ["DEFAULT_MIP_GAP", "MilpModel", "build_model", "quiet_stdout", "solve"]

NAME = "milp"
EXACT = True
REQUIRED_MODULES = ("highspy",)
VARIANT_OPTION = "engine"
VARIANTS = ("highs", "pulp", "scipy")

#: Relative gap at which a finished solve counts as optimal.
DEFAULT_MIP_GAP = 1e-6
#: The solver stops at this share of `mip_gap`, so its own gap definition (relative to
#: the incumbent, or with an absolute floor) and float noise stay inside ours.
SOLVER_GAP_SHARE = 0.5
#: A bound this close (times max(1, |objective|)) to the objective is reported as equal,
#: and so is one within the solvers' row feasibility tolerance `FEASIBILITY` times the
#: objective weight of the continuous (balance) columns, which may each sit that far off
#: their rows: with λ·(top − bottom), λ = 3, HiGHS proves −0.499999 for an optimum of −0.5.
BOUND_SNAP = 1e-9
FEASIBILITY = 1e-6
#: Most solves of the outer-approximation loop for the variance term.
MAX_ROUNDS = 30
#: With at most this many grid segments per expert, every secant goes in up front.
FULL_GRID = 64
#: Secants on each side of the warm start's load otherwise.
WINDOW = 8


# -- quiet vendor libraries ---------------------------------------------------------


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send the C-level stdout (file descriptor 1) to the null device for a moment.

    HiGHS prints its banner from C++ when the first ``Highs`` object of a process is
    made, before any option can be set.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


@functools.cache
def silence_highs_banner() -> None:
    """Make (and drop) one ``Highs`` object with stdout closed: HiGHS prints its banner
    once per process, so no later ``Highs`` — ours, PuLP's or CVXPY's — prints it."""
    import highspy

    with quiet_stdout():
        highspy.Highs()


def new_highs() -> Any:
    """A silent ``highspy.Highs``."""
    import highspy

    silence_highs_banner()
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    return highs


# -- the model as sparse arrays -------------------------------------------------------


@dataclass
class Cuts:
    """Lines ``t[e] ≥ slope·(L[e] − c) + intercept``, each under ``d ↦ d²``.

    `grid` is the spacing of ``d = L[e] − c`` at integer solutions, `offset` a grid
    point; ``grid is None``: ``d`` is continuous (weighted loads) and lines are tangents.
    """

    grid: float | None
    offset: float
    expert: Int = field(default_factory=lambda: np.zeros(0, np.int64))
    slope: Float = field(default_factory=lambda: np.zeros(0))
    intercept: Float = field(default_factory=lambda: np.zeros(0))

    def at(self, d: Float) -> Float:
        """The model's ``t[e]``: the highest line of each expert at ``d[e]``."""
        value = self.slope * d[self.expert] + self.intercept
        out = np.full(d.shape, -np.inf)
        np.maximum.at(out, self.expert, value)
        return out

    def lines_through(self, d: Float) -> tuple[Int, Float, Float]:
        """Lines exact at ``d[e]`` for every expert: the two grid secants around it, or
        the tangent there."""
        experts = np.arange(d.size)
        if self.grid is None:
            return experts, 2 * d, -(d**2)
        h = self.grid
        a = self.offset + np.round((d - self.offset) / h) * h
        left, right = a - h, a
        starts = np.concatenate([left, right])
        return np.tile(experts, 2), 2 * starts + h, -starts * (starts + h)

    def add(self, expert: Int, slope: Float, intercept: Float) -> tuple[Int, Float, Float]:
        """Keep the lines not already present; returns those kept."""
        known = set(zip(self.expert.tolist(), self.slope.round(9).tolist(), strict=True))
        keep = np.array(
            [
                (e, s) not in known
                for e, s in zip(expert.tolist(), slope.round(9).tolist(), strict=True)
            ],
            dtype=bool,
        )
        keep &= _first_occurrence(expert, slope.round(9))
        expert, slope, intercept = expert[keep], slope[keep], intercept[keep]
        self.expert = np.concatenate([self.expert, expert])
        self.slope = np.concatenate([self.slope, slope])
        self.intercept = np.concatenate([self.intercept, intercept])
        return expert, slope, intercept


def _first_occurrence(expert: Int, slope: Float) -> Bool:
    pairs = np.stack([expert.astype(np.float64), slope], axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    keep = np.zeros(expert.size, dtype=bool)
    keep[first] = True
    return keep


@dataclass
class MilpModel:
    r"""``max cost·v`` s.t. ``row_lo ≤ matrix·v ≤ row_hi``, ``col_lo ≤ v ≤ col_hi``,
    ``v[integer]`` integral. Column ``j < len(clients)`` is ``x[clients[j], experts[j]]``;
    `columns` names the slices of the other variables (``L``, ``c``, ``t``, ``top``,
    ``bottom``); loads, the mean, top and bottom are in units of `scale`, ``t`` in
    ``scale²``."""

    cost: Float
    col_lo: Float
    col_hi: Float
    integer: Bool
    matrix: Any
    row_lo: Float
    row_hi: Float
    clients: Int
    experts: Int
    columns: dict[str, slice]
    scale: float
    cuts: Cuts | None = None
    balance_model: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.matrix.shape
        return int(rows), int(cols)

    def assignment(self, values: Float, shape: tuple[int, int]) -> Bool:
        """``x`` from a vector of column values (rounded: solvers return 1 − 1e-9)."""
        x = np.zeros(shape, dtype=bool)
        chosen = values[self.columns["x"]] > 0.5
        x[self.clients[chosen], self.experts[chosen]] = True
        return x

    def cut_rows(self, expert: Int, slope: Float, intercept: Float) -> tuple[Any, Float, Float]:
        """Rows ``t[e] − slope·L[e] + slope·c ≥ intercept``."""
        from scipy import sparse

        k = expert.size
        t, load, c = self.columns["t"], self.columns["L"], self.columns["c"]
        rows = np.repeat(np.arange(k), 3)
        cols = np.stack([t.start + expert, load.start + expert, np.full(k, c.start)], 1)
        vals = np.stack([np.ones(k), -slope, slope], axis=1)
        matrix = sparse.csr_array((vals.ravel(), (rows, cols.ravel())), shape=(k, self.cost.size))
        return matrix, intercept.astype(np.float64), np.full(k, np.inf)

    def add_cuts(self, expert: Int, slope: Float, intercept: Float) -> tuple[Any, Float, Float]:
        """Append new lines to the model; returns their rows for the engine."""
        from scipy import sparse

        assert self.cuts is not None
        rows, lo, hi = self.cut_rows(*self.cuts.add(expert, slope, intercept))
        self.matrix = sparse.vstack([self.matrix, rows], format="csr")
        self.row_lo = np.concatenate([self.row_lo, lo])
        self.row_hi = np.concatenate([self.row_hi, hi])
        return rows, lo, hi

    def start(self, problem: AssignmentProblem, x: Bool) -> Float:
        """Column values for assignment `x` (a warm start): loads, mean, epigraph, range."""
        values = np.zeros(self.cost.size)
        values[self.columns["x"]] = x[self.clients, self.experts]
        loads = expert_loads(problem, x) / self.scale
        values[self.columns["L"]] = loads
        if "c" in self.columns:
            mean = loads.mean()
            values[self.columns["c"]] = mean
            values[self.columns["t"]] = (loads - mean) ** 2
        if "top" in self.columns:
            values[self.columns["top"]] = loads.max()
            values[self.columns["bottom"]] = loads.min()
        return values


class _Rows:
    """Row blocks collected as coordinates, stacked once."""

    def __init__(self) -> None:
        self.parts: list[tuple[Int, Int, Float]] = []
        self.lo: list[Float] = []
        self.hi: list[Float] = []
        self.count = 0

    def add(self, row: Int, col: Int, val: Float | float, lo: np.ndarray, hi: np.ndarray) -> None:
        val = np.broadcast_to(np.asarray(val, dtype=np.float64), row.shape)
        self.parts.append((row + self.count, col, val))
        self.lo.append(np.broadcast_to(np.asarray(lo, np.float64), (len(lo),)))
        self.hi.append(np.broadcast_to(np.asarray(hi, np.float64), (len(lo),)))
        self.count += len(lo)

    def matrix(self, n_cols: int) -> tuple[Any, Float, Float]:
        from scipy import sparse

        row, col, val = (np.concatenate(part) for part in zip(*self.parts, strict=True))
        matrix = sparse.csr_array((val, (row, col)), shape=(self.count, n_cols))
        return matrix, np.concatenate(self.lo), np.concatenate(self.hi)


def _layout(problem: AssignmentProblem, n_pairs: int) -> dict[str, slice]:
    """Column slices: ``x`` (one per allowed pair), ``L``, and the balance variables."""
    sizes = {"x": n_pairs, "L": problem.n_experts}
    if problem.balance_penalty > 0 and problem.balance_metric is BalanceMetric.VARIANCE:
        sizes |= {"c": 1, "t": problem.n_experts}
    elif problem.balance_penalty > 0:
        sizes |= {"top": 1, "bottom": 1}
    columns, start = {}, 0
    for name, size in sizes.items():
        columns[name] = slice(start, start + size)
        start += size
    return columns


def _load_range(problem: AssignmentProblem) -> tuple[Float, Float, float, float]:
    """Bounds on each load ``L[e]`` and on the mean load ``c`` implied by the data."""
    reach = np.where(problem.allowed_mask(), problem.weights(), 0.0).sum(axis=0)
    lo, hi = problem.load_min.copy(), np.minimum(problem.load_max, reach)
    total_lo, total_hi = lo.sum(), hi.sum()
    if not problem.weighted_loads:
        lo, hi = np.ceil(lo - 1e-9), np.floor(hi + 1e-9)
        allowed = problem.allowed_mask().sum(axis=1)
        total_lo = max(lo.sum(), problem.min_experts.sum())
        total_hi = min(hi.sum(), np.minimum(problem.max_experts, allowed).sum())
    e = problem.n_experts
    return lo, np.maximum(hi, lo), total_lo / e, max(total_hi, total_lo) / e


def _columns_data(
    problem: AssignmentProblem, columns: dict[str, slice], clients: Int, experts: Int, scale: float
) -> tuple[Float, Float, Float, Bool]:
    """Objective, bounds and integrality of every column (loads in units of `scale`)."""
    n_cols = max(s.stop for s in columns.values())
    cost, lo, hi = np.zeros(n_cols), np.zeros(n_cols), np.full(n_cols, np.inf)
    integer = np.zeros(n_cols, dtype=bool)
    lam = problem.balance_penalty
    x = columns["x"]
    cost[x], hi[x], integer[x] = problem.effective_utility()[clients, experts], 1.0, True
    lo[columns["L"]], hi[columns["L"]] = problem.load_min / scale, problem.load_max / scale
    if "c" in columns:
        _, _, c_lo, c_hi = _load_range(problem)
        lo[columns["c"]], hi[columns["c"]] = c_lo / scale, c_hi / scale
        cost[columns["t"]] = -lam * scale**2
    if "top" in columns:
        cost[columns["top"]], cost[columns["bottom"]] = -lam * scale, lam * scale
    return cost, lo, hi, integer


def _constraint_rows(
    problem: AssignmentProblem, columns: dict[str, slice], clients: Int, experts: Int, scale: float
) -> _Rows:
    """Every constraint family except the variance lines."""
    rows, x = _Rows(), np.arange(columns["x"].start, columns["x"].stop)
    n_e, load = problem.n_experts, np.arange(columns["L"].start, columns["L"].stop)
    none = np.full(problem.n_clients, -np.inf)
    # each client holds between min_experts and max_experts experts
    rows.add(clients, x, 1.0, problem.min_experts, problem.max_experts)
    # storage: Σ_e expert_size[e]·x[n, e] ≤ storage[n]
    if problem.expert_size is not None and problem.storage is not None:
        rows.add(clients, x, problem.expert_size[experts], none, problem.storage)
    # compute: Σ_e compute_cost[n, e]·x[n, e] ≤ compute_budget[n]
    if problem.compute_cost is not None and problem.compute_budget is not None:
        rows.add(clients, x, problem.compute_cost[clients, experts], none, problem.compute_budget)
    # load: L[e] − Σ_n w[n, e]·x[n, e] = 0 (the band load_min..load_max is on L's bounds;
    # L, c, top and bottom are in units of `scale`, t in scale²)
    weight = problem.weights()[clients, experts] / scale
    rows.add(
        np.concatenate([experts, np.arange(n_e)]),
        np.concatenate([x, load]),
        np.concatenate([-weight, np.ones(n_e)]),
        np.zeros(n_e),
        np.zeros(n_e),
    )
    # variance: E·c − Σ_e L[e] = 0, c is the mean load
    if "c" in columns:
        zero = np.zeros(1)
        cols = np.append(load, columns["c"].start)
        rows.add(np.zeros(n_e + 1, np.int64), cols, np.append(-np.ones(n_e), n_e), zero, zero)
    # range: top − L[e] ≥ 0 and L[e] − bottom ≥ 0
    if "top" in columns:
        each, ones = np.tile(np.arange(n_e), 2), np.ones(n_e)
        signs, zeros, inf = np.concatenate([ones, -ones]), np.zeros(n_e), np.full(n_e, np.inf)
        top, bottom = np.full(n_e, columns["top"].start), np.full(n_e, columns["bottom"].start)
        rows.add(each, np.concatenate([top, load]), signs, zeros, inf)
        rows.add(each, np.concatenate([load, bottom]), signs, zeros, inf)
    return rows


def _grid(problem: AssignmentProblem, scale: float) -> tuple[float | None, float]:
    """Spacing and one point of the grid that ``d = (L[e] − c) / scale`` lies on at
    integer solutions: ``(1, −c)/scale`` when the mean is fixed, ``(1/E, 0)/scale`` for
    other count loads, ``(None, 0)`` for weighted loads (continuous)."""
    _, _, c_lo, c_hi = _load_range(problem)
    if problem.weighted_loads:
        return None, 0.0
    if math.isclose(c_lo, c_hi, rel_tol=0.0, abs_tol=1e-12):
        return 1.0 / scale, -c_lo / scale
    return 1.0 / (problem.n_experts * scale), 0.0


def _initial_lines(
    problem: AssignmentProblem, cuts: Cuts, d0: Float, scale: float
) -> tuple[Int, Float, Float]:
    """Lines around the warm start's deviations `d0`: every grid secant when the grid is
    small, else a window of them, plus tangents on a doubling ladder across the range."""
    lo, hi, c_lo, c_hi = _load_range(problem)
    d_lo, d_hi = (lo - c_hi) / scale, (hi - c_lo) / scale
    experts = np.arange(problem.n_experts)
    parts: list[tuple[Int, Float, Float]] = []
    if cuts.grid is not None:
        h, o = cuts.grid, cuts.offset
        first = o + np.floor((d_lo - o) / h + 1e-9) * h
        segments = np.maximum(np.ceil((d_hi - first) / h - 1e-9), 1).astype(np.int64)
        if segments.max() <= FULL_GRID:
            e = np.repeat(experts, segments)
            a = first[e] + h * (
                np.arange(e.size) - np.repeat(np.cumsum(segments) - segments, segments)
            )
        else:
            centre = o + np.round((d0 - o) / h) * h
            offsets = h * np.arange(-WINDOW, WINDOW)
            e = np.repeat(experts, offsets.size)
            a = np.clip(centre[e] + np.tile(offsets, experts.size), first[e], d_hi[e])
        parts.append((e, 2 * a + h, -a * (a + h)))
    weights = problem.weights()
    step = (1.0 if cuts.grid is not None else float(np.median(weights[weights > 0]))) / scale
    span = max(float((d_hi - d_lo).max()), step)
    ladder = step * 2.0 ** np.arange(int(np.ceil(np.log2(span / step))) + 1)
    steps = np.concatenate([[0.0], ladder, -ladder, step * np.arange(-4, 5)])
    e = np.repeat(experts, steps.size)
    p = np.clip(d0[e] + np.tile(steps, experts.size), d_lo[e], d_hi[e])
    parts.append((e, 2 * p, -(p**2)))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]


def _balance_model(problem: AssignmentProblem, cuts: Cuts | None) -> str:
    if problem.balance_penalty == 0:
        return "none"
    if cuts is None:
        return "range: exact (top/bottom variables)"
    if cuts.grid is None:
        return "variance: tangent lines under (L − mean)², refined at each incumbent until mip_gap"
    return (
        f"variance: exact at integer loads (secants on the grid of step {cuts.grid:g}), "
        "added around each incumbent until mip_gap"
    )


def load_scale(problem: AssignmentProblem) -> float:
    """The unit of the load columns: the median load weight (1 for count loads), so that
    deviations from the mean — and the variance lines through them — stay moderate
    whatever the weights. Unscaled, 1,000 × 64 with data-volume weights put 4e8 in the
    rows and HiGHS spent 130 s on the root LP, past a 60 s limit."""
    weights = problem.weights()
    positive = weights[weights > 0]
    return float(np.median(positive)) if positive.size else 1.0


def build_model(problem: AssignmentProblem, warm: Bool | None = None) -> MilpModel:
    """The MILP of `problem` as sparse arrays (see the module Notes); no solver involved.

    `warm` (an assignment) centres the first variance lines on its loads.
    """
    # data: one x column per allowed pair
    clients, experts = np.nonzero(problem.allowed_mask())
    clients, experts = clients.astype(np.int64), experts.astype(np.int64)
    columns = _layout(problem, clients.size)
    scale = load_scale(problem)
    # variables and objective
    cost, col_lo, col_hi, integer = _columns_data(problem, columns, clients, experts, scale)
    # constraints
    rows = _constraint_rows(problem, columns, clients, experts, scale)
    matrix, row_lo, row_hi = rows.matrix(cost.size)
    model = MilpModel(
        cost, col_lo, col_hi, integer, matrix, row_lo, row_hi, clients, experts, columns, scale
    )
    if "c" in columns:
        model.cuts = Cuts(*_grid(problem, scale))
        d0 = np.zeros(problem.n_experts)
        if warm is not None:
            loads = expert_loads(problem, warm)
            d0 = (loads - loads.mean()) / scale
        model.add_cuts(*_initial_lines(problem, model.cuts, d0, scale))
    model.balance_model = _balance_model(problem, model.cuts)
    return model


# -- engines --------------------------------------------------------------------------


#: HiGHS options changed from HiGHS's defaults, because they break the time limit at
#: 1,000 × 64 (HiGHS 1.16; its issues #885, #2226, #3237): the sub-MIP heuristics (RINS,
#: RENS, root reduced cost) check neither the time limit nor the interrupt callback — one
#: ran 100 s past a 20 s limit with weighted loads, where plain branching reached a 1e-7
#: gap inside the limit — and the MIP presolve's probing ran 60–90 s past a 20 s limit
#: with storage and compute rows. The model has no forbidden-pair columns to remove, so
#: presolve buys little here. Override with ``highs_options``.
HIGHS_DEFAULTS: dict[str, Any] = {
    "presolve": "off",
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
    "mip_heuristic_run_root_reduced_cost": False,
}


@dataclass(frozen=True)
class _Settings:
    """What every engine is told: the solver's own gap (a share of `mip_gap`), threads,
    seed, the PuLP solver and extra HiGHS options."""

    solver_gap: float
    threads: int | None = None
    seed: int = 0
    solver: Any = None
    highs_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """One solver run: outcome ∈ {optimal, limit, infeasible, error}, the incumbent's
    column values (None without one), the dual bound (max sense; NaN if unknown)."""

    outcome: str
    values: Float | None
    bound: float
    native: str


_HIGHS_OUTCOME = {
    "kOptimal": "optimal",
    "kInfeasible": "infeasible",
    "kUnboundedOrInfeasible": "infeasible",  # every column is bounded: not unbounded
    "kTimeLimit": "limit",
    "kIterationLimit": "limit",
    "kSolutionLimit": "limit",
    "kInterrupt": "limit",
    "kHighsInterrupt": "limit",
    "kMemoryLimit": "limit",
    "kObjectiveBound": "limit",
    "kObjectiveTarget": "limit",
}


def _highs_run(highs: Any, sign: float) -> _Run:
    """Read a finished HiGHS run; `sign` = −1 when HiGHS minimised the negated objective."""
    import highspy

    status = highs.getModelStatus()
    info = highs.getInfo()
    feasible = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    values = np.asarray(highs.getSolution().col_value, dtype=np.float64) if feasible else None
    outcome = _HIGHS_OUTCOME.get(status.name, "error")
    bound = sign * info.mip_dual_bound
    if not math.isfinite(bound):
        bound = sign * info.objective_function_value if outcome == "optimal" else math.nan
    return _Run(outcome, values, bound, highs.modelStatusToString(status))


class _HighsEngine:
    """The arrays straight into HiGHS with ``passModel``: no per-variable objects."""

    def __init__(self, model: MilpModel, settings: _Settings):
        self.highs = new_highs()
        options: dict[str, Any] = {
            "mip_rel_gap": settings.solver_gap,
            "mip_abs_gap": BOUND_SNAP,
            "random_seed": settings.seed,
            **HIGHS_DEFAULTS,
        }
        if settings.threads is not None:
            options["threads"] = settings.threads
        for key, value in {**options, **settings.highs_options}.items():
            if self.highs.setOptionValue(key, value).name != "kOk":
                raise ValueError(f"HiGHS rejects option {key!r} = {value!r}")
        self.highs.passModel(self._lp(model))
        self.cost = model.cost
        self.solver = f"HiGHS {self.highs.version()}"

    @staticmethod
    def _lp(model: MilpModel) -> Any:
        import highspy

        csc = model.matrix.tocsc()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = model.shape[1], model.shape[0]
        lp.col_cost_, lp.col_lower_, lp.col_upper_ = model.cost, model.col_lo, model.col_hi
        lp.row_lower_, lp.row_upper_ = model.row_lo, model.row_hi
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_ = csc.indptr, csc.indices
        lp.a_matrix_.value_ = csc.data
        kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
        lp.integrality_ = [kinds[i] for i in model.integer.tolist()]
        lp.sense_ = highspy.ObjSense.kMaximize
        return lp

    def add_rows(self, rows: Any, lo: Float, hi: Float) -> None:
        self.highs.addRows(
            rows.shape[0], lo, hi, rows.nnz, rows.indptr[:-1], rows.indices, rows.data
        )

    def set_start(self, values: Float) -> None:
        self.highs.setSolution(values.size, np.arange(values.size, dtype=np.int32), values)

    def run(self, time_limit: float | None) -> _Run:
        self.highs.setOptionValue("time_limit", math.inf if time_limit is None else time_limit)
        self.highs.run()
        run = _highs_run(self.highs, sign=1.0)
        reported = self.highs.getInfo().objective_function_value
        if run.values is not None and not math.isclose(
            float(self.cost @ run.values), reported, rel_tol=1e-9, abs_tol=1e-9
        ):
            # HiGHS 1.16 hands back the user's start instead of the solution when presolve
            # solves the model outright; solving again without the start fixes it.
            self.highs.clearSolver()
            self.highs.run()
            run = _highs_run(self.highs, sign=1.0)
        return run


class _ScipyEngine:
    """``scipy.optimize.milp`` on the same arrays (SciPy's HiGHS; no warm start)."""

    def __init__(self, model: MilpModel, settings: _Settings):
        self.model, self.mip_gap = model, settings.solver_gap
        self.solver = "scipy.optimize.milp (HiGHS)"

    def add_rows(self, rows: Any, lo: Float, hi: Float) -> None:
        """Nothing to do: every run reads the model's current rows."""

    def set_start(self, values: Float) -> None:
        """SciPy's ``milp`` takes no starting point."""

    def run(self, time_limit: float | None) -> _Run:
        from scipy.optimize import Bounds, LinearConstraint, milp

        m = self.model
        options: dict[str, Any] = {"disp": False, "mip_rel_gap": self.mip_gap}
        if time_limit is not None:
            options["time_limit"] = time_limit
        res = milp(
            -m.cost,
            integrality=m.integer.astype(np.uint8),
            bounds=Bounds(m.col_lo, m.col_hi),
            constraints=LinearConstraint(m.matrix, m.row_lo, m.row_hi),
            options=options,
        )
        outcome = {0: "optimal", 1: "limit", 2: "infeasible"}.get(res.status, "error")
        dual = getattr(res, "mip_dual_bound", None)
        bound = -dual if dual is not None and math.isfinite(dual) else math.nan
        if math.isnan(bound) and outcome == "optimal":
            bound = -res.fun
        values = None if res.x is None else np.asarray(res.x, dtype=np.float64)
        return _Run(outcome, values, bound, res.message)


def _pulp_names(model: MilpModel) -> list[str]:
    """Readable column names: ``x_n_e``, ``L_e``, ``c``, ``t_e``, ``top``, ``bottom``."""
    names = [
        f"x_{n}_{e}" for n, e in zip(model.clients.tolist(), model.experts.tolist(), strict=True)
    ]
    for key, cols in model.columns.items():
        if key != "x":
            size = cols.stop - cols.start
            names += [key] if size == 1 else [f"{key}_{i}" for i in range(size)]
    return names


#: PuLP solvers tried, in order, when none is named: CBC as PuLP 4 wants it (``COIN_CMD``,
#: a CBC on the PATH), else HiGHS through highspy. PuLP 3.3 deprecates its bundled
#: ``PULP_CBC_CMD``; it still works when named, with PuLP's deprecation warning.
PULP_DEFAULTS = ("COIN_CMD", "HiGHS")


def _pulp_solver(
    solver: Any, *, time_limit: float | None, mip_gap: float, threads: int | None
) -> Any:
    """A PuLP solver: an instance as given, or one made by name (see
    :data:`PULP_DEFAULTS`) with the options its class takes."""
    import pulp

    if isinstance(solver, pulp.LpSolver):
        return solver
    available = pulp.listSolvers(onlyAvailable=True)
    name = solver or next(n for n in PULP_DEFAULTS if n in available)
    if name not in pulp.listSolvers():
        known = ", ".join(pulp.listSolvers())
        raise ValueError(f"unknown PuLP solver {name!r}; PuLP knows: {known}")
    if name not in available:
        raise BackendUnavailableError(
            f"PuLP solver {name!r} is not available here; available: {', '.join(available)}"
        )
    cls = getattr(pulp, name)
    wanted = {"msg": False, "timeLimit": time_limit, "gapRel": mip_gap, "threads": threads}
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in wanted.items() if k in accepted})


class _PulpEngine:
    """The same rows through PuLP: CBC (bundled), HiGHS, or any solver PuLP finds."""

    def __init__(self, model: MilpModel, settings: _Settings):
        import pulp

        self.model, self.mip_gap, self.threads = model, settings.solver_gap, settings.threads
        self.choice = settings.solver
        self.prob = pulp.LpProblem("flexmoe_assignment", pulp.LpMaximize)
        cat = {True: pulp.LpInteger, False: pulp.LpContinuous}
        self.vars = [
            self.prob.add_variable(name, _finite(lo), _finite(hi), cat[bool(i)])
            for name, lo, hi, i in zip(
                _pulp_names(model), model.col_lo, model.col_hi, model.integer, strict=True
            )
        ]
        nonzero = np.flatnonzero(model.cost)
        self.prob += pulp.LpAffineExpression(
            [(self.vars[j], float(model.cost[j])) for j in nonzero]
        )
        self.add_rows(model.matrix, model.row_lo, model.row_hi)
        self.solver = str(settings.solver or "PuLP default")

    def add_rows(self, rows: Any, lo: Float, hi: Float) -> None:
        import pulp

        for i in range(rows.shape[0]):
            span = slice(rows.indptr[i], rows.indptr[i + 1])
            terms = zip(rows.indices[span].tolist(), rows.data[span].tolist(), strict=True)
            expr = pulp.LpAffineExpression([(self.vars[j], v) for j, v in terms])
            if lo[i] == hi[i]:
                self.prob += expr == float(lo[i])
                continue
            if math.isfinite(lo[i]):
                self.prob += expr >= float(lo[i])
            if math.isfinite(hi[i]):
                self.prob += expr <= float(hi[i])

    def set_start(self, values: Float) -> None:
        """No MIP start through PuLP: CBC has returned a start as "Optimal" without
        searching (seen on 4 × 2 problems), which would be a wrong certificate."""

    def run(self, time_limit: float | None) -> _Run:
        import pulp

        silence_highs_banner()
        solver = _pulp_solver(self.choice, time_limit=time_limit, mip_gap=self.mip_gap,
                              threads=self.threads)  # fmt: skip
        self.solver = solver.name
        with tempfile.TemporaryDirectory(prefix="flexmoe-pulp-") as tmp:
            log = _redirect_files(solver, tmp)
            try:
                self.prob.solve(solver)
            except pulp.PulpSolverError as err:
                return _Run("error", None, math.nan, f"PuLP: {err}")
            if isinstance(solver, pulp.HiGHS):
                run = _highs_run(self.prob.solverModel, sign=-1.0)
                run.values = None if run.values is None else self._values()
                return run
            return self._read(log)

    def _values(self) -> Float:
        return np.array([v.varValue or 0.0 for v in self.vars], dtype=np.float64)

    def _read(self, log: str | None) -> _Run:
        """Map PuLP's status pair explicitly (PuLP reports a time limit as "Optimal")."""
        import pulp

        status, solution = self.prob.status, self.prob.sol_status
        native = f"{pulp.LpStatus[status]} / solution {solution}"
        values = self._values() if solution in (1, 2) else None
        value = pulp.value(self.prob.objective) if values is not None else math.nan
        logged = _cbc_bound(log)
        if solution == pulp.LpSolutionOptimal:
            bound = value + self.mip_gap * abs(value) if logged is None else logged
            return _Run("optimal", values, max(bound, value), native)
        if status == pulp.LpStatusInfeasible:
            return _Run("infeasible", None, math.nan, native)
        if status in (pulp.LpStatusOptimal, pulp.LpStatusNotSolved):
            return _Run("limit", values, math.nan if logged is None else logged, native)
        return _Run("error", values, math.nan, native)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _redirect_files(solver: Any, tmp: str) -> str | None:
    """Point a command-line solver's temporary files (and CBC's log) into `tmp`."""
    if hasattr(solver, "tmpDir"):
        solver.tmpDir = tmp
    if type(solver).__name__ in ("PULP_CBC_CMD", "COIN_CMD") and not solver.msg:
        log = os.path.join(tmp, "cbc.log")
        solver.optionsDict["logPath"] = log
        return log
    return None


def _cbc_bound(log: str | None) -> float | None:
    """CBC's dual bound from its log ("Upper bound: 102.020" when stopped), rounded up
    by half a unit of the last printed digit."""
    if log is None or not os.path.exists(log):
        return None
    with open(log) as fh:
        match = re.search(r"^Upper bound:\s+(-?[\d.]+(?:e[-+]?\d+)?)", fh.read(), re.MULTILINE)
    if match is None:
        return None
    text = match.group(1)
    decimals = len(text.partition(".")[2]) if "e" not in text else 12
    return float(text) + 0.5 * 10.0**-decimals


_ENGINES: dict[str, Any] = {"highs": _HighsEngine, "pulp": _PulpEngine, "scipy": _ScipyEngine}


# -- solve: warm start → build → run (outer-approximation loop) → extract --------------


def solve(
    problem: AssignmentProblem,
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    engine: str | None = None,
    solver: Any = None,
    mip_gap: float = DEFAULT_MIP_GAP,
    threads: int | None = None,
    warm_start: bool = True,
    highs_options: dict[str, Any] | None = None,
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
    engine : {"highs", "pulp", "scipy"}, optional
        Default ``"highs"``, or ``"pulp"`` when `solver` is given.
    solver : str or pulp.LpSolver, optional
        For the ``pulp`` engine: a PuLP solver name (``"PULP_CBC_CMD"`` by default,
        ``"HiGHS"``, ``"GUROBI_CMD"``, ``"CPLEX_CMD"``, ...) or a configured instance.
    mip_gap : float
        Relative gap at which the solve is optimal (default 1e-6).
    threads : int, optional
        Solver threads.
    warm_start : bool
        Start from ``greedy:balanced`` when that backend is registered and its answer is
        feasible.
    highs_options : dict, optional
        Extra HiGHS options for the ``highs`` engine, over :data:`HIGHS_DEFAULTS`.

    Returns
    -------
    Assignment
        `bound` is the solver's dual bound, so `gap` is certified (up to the solver's
        feasibility tolerances).
    """
    start = time.perf_counter()
    engine = _check_options(engine, solver, mip_gap, threads, highs_options)
    deadline = None if time_limit is None else start + time_limit
    warm, warm_note = _warm_start(problem, seed) if warm_start else (None, "off")
    warm_time = time.perf_counter() - start
    model = build_model(problem, warm)
    settings = _Settings(
        SOLVER_GAP_SHARE * mip_gap, threads, seed or 0, solver, highs_options or {}
    )
    runner = _ENGINES[engine](model, settings)
    if warm is not None:
        runner.set_start(model.start(problem, warm))
    build_time = time.perf_counter() - start - warm_time
    outcome = _optimise(problem, model, runner, deadline, mip_gap, warm)
    info = {
        "engine": engine,
        "solver": runner.solver,
        "warm_start": warm_note,
        "warm_start_time": warm_time,
        **outcome.info(model),
    }
    return _result(problem, outcome, mip_gap, build_time=build_time, info=info)


def _check_options(
    engine: str | None, solver: Any, mip_gap: float, threads: int | None, highs: dict | None
) -> str:
    engine = engine or ("pulp" if solver is not None else "highs")
    if highs and engine != "highs":
        raise ValueError(f"`highs_options` are for engine='highs'; got {engine!r}")
    if engine not in _ENGINES:
        raise ValueError(f"`engine` must be one of {', '.join(VARIANTS)}; got {engine!r}")
    if solver is not None and engine != "pulp":
        raise ValueError(f"`solver` picks a PuLP solver and needs engine='pulp'; got {engine!r}")
    if not (isinstance(mip_gap, int | float) and 0 <= mip_gap < 1):
        raise ValueError(f"`mip_gap` must be a number in [0, 1); got {mip_gap!r}")
    if threads is not None and not (isinstance(threads, int) and threads > 0):
        raise ValueError(f"`threads` must be a positive integer; got {threads!r}")
    return engine


def _warm_start(problem: AssignmentProblem, seed: int | None) -> tuple[Bool | None, str]:
    """``greedy:balanced``'s answer when that backend exists and the answer is feasible."""
    from flexmoe.assign.registry import registered_backends

    greedy = registered_backends().get("greedy")
    if greedy is None or "balanced" not in greedy.variants:
        return None, "greedy:balanced is not registered"
    result = greedy.solve(problem, seed=seed, **{greedy.variant_option or "method": "balanced"})
    if result.x is None or not verify(problem, result.x):
        return None, f"greedy:balanced gave no feasible start ({result.status})"
    return np.asarray(result.x, dtype=bool), "greedy:balanced"


@dataclass
class _Outcome:
    """What the loop ended with: the last run, the best assignment and the bound."""

    last: _Run
    x: Bool | None
    value: float
    bound: float
    rounds: int
    solve_time: float
    tolerance: float = 0.0

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
) -> _Outcome:
    """Run the solver; with variance lines, add the lines through each incumbent's loads
    and run again until the best true objective is within `mip_gap` of the bound."""
    best, value = warm, -math.inf if warm is None else objective_value(problem, warm)
    bound, rounds, spent = math.inf, 0, 0.0
    while True:
        rounds += 1
        tick = time.perf_counter()
        run = runner.run(None if deadline is None else max(deadline - tick, 1e-3))
        spent += time.perf_counter() - tick
        bound = bound if math.isnan(run.bound) else min(bound, run.bound)
        x = None if run.values is None else model.assignment(run.values, problem.shape)
        if x is not None and objective_value(problem, x) > value:
            best, value = x, objective_value(problem, x)
        if run.outcome != "optimal" or x is None or model.cuts is None:
            break
        if relative_gap(value, bound) <= mip_gap or rounds >= MAX_ROUNDS:
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
    tolerance = FEASIBILITY * float(np.abs(model.cost[~model.integer]).sum())
    return _Outcome(run, best, value, bound, rounds, spent, tolerance)


def _trivial_bound(problem: AssignmentProblem) -> float:
    """Each client's best allowed experts by effective utility (its first `min_experts`,
    then any positive ones up to `max_experts`), ignoring every coupling and the balance
    penalty: a valid bound when the solver stopped before proving one."""
    utility = np.where(problem.allowed_mask(), problem.effective_utility(), -np.inf)
    ranked = -np.sort(-utility, axis=1)
    rank = np.arange(problem.n_experts)[None, :]
    take = (rank < problem.min_experts[:, None]) | (
        (rank < problem.max_experts[:, None]) & (ranked > 0)
    )
    return float(np.where(take, ranked, 0.0).sum())


def _result(
    problem: AssignmentProblem, out: _Outcome, mip_gap: float, *, build_time: float, info: dict
) -> Assignment:
    """Map the loop's outcome to a status explicitly; a limit is never ``OPTIMAL``."""
    times: dict[str, Any] = {"build_time": build_time, "solve_time": out.solve_time, "info": info}
    native = f"{info['solver']}: {out.last.native}"
    if out.x is None:
        if out.last.outcome == "infeasible":
            return Assignment.no_solution(
                Status.INFEASIBLE, NAME, _infeasible(problem, native), **times
            )
        if out.last.outcome == "limit":
            message = f"limit reached before any feasible assignment ({native})"
            return Assignment.no_solution(
                Status.LIMIT_NO_SOLUTION, NAME, message, bound=out.bound, **times
            )
        return Assignment.no_solution(Status.ERROR, NAME, f"solver failed ({native})", **times)
    bound = out.bound
    if abs(bound - out.value) <= BOUND_SNAP * max(1.0, abs(out.value)) + out.tolerance:
        bound = out.value
    gap = relative_gap(out.value, bound)
    if out.last.outcome == "optimal" and gap <= mip_gap:
        status, message = Status.OPTIMAL, ""
    elif out.last.outcome == "limit":
        status, message = Status.FEASIBLE, f"limit reached ({native}); certified gap {gap:.3g}"
    else:
        status = Status.FEASIBLE
        message = f"stopped after {out.rounds} round(s) at certified gap {gap:.3g} ({native})"
    return Assignment.from_x(problem, out.x, status=status, bound=bound, backend=NAME,
                             message=message, **times)  # fmt: skip


def _infeasible(problem: AssignmentProblem, native: str) -> str:
    """The reason of an infeasible result: which constraint families were in play."""
    families = [
        f"experts per client {problem.min_experts.min()}..{problem.max_experts.max()}",
        "load band [load_min, load_max]",
    ]
    if problem.has_storage:
        families.append("storage")
    if problem.has_compute:
        families.append("compute budget")
    if problem.allowed is not None:
        families.append("allowed mask")
    return (
        f"no assignment satisfies {', '.join(families)} together (proved by {native}), "
        "although every aggregate precheck passes"
    )
