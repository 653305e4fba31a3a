"""The MILP of an assignment problem as sparse arrays (see :mod:`..milp` for the math).

Data → variables → constraints → objective, vectorised with numpy: one ``x`` column per
allowed pair, the loads ``L``, and the balance variables; one row block per constraint
family, every budget row of the problem through the same block. No solver is involved.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from flexmoe.assign.problem import AssignmentProblem, BalanceMetric, Bool, Float, Int
from flexmoe.assign.verify import expert_loads

__all__ = ["Cuts", "MilpModel", "formulate", "load_scale"]

#: With at most this many grid segments per expert, every secant goes in up front.
FULL_GRID = 64
#: Secants on each side of the warm start's load otherwise.
WINDOW = 8


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
    ``scale²``. The objective is in units of `unit` (``problem.objective_unit``, a power
    of two): the true objective of column values ``v`` is ``unit · cost·v``."""

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
    unit: float = 1.0

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
        assert self.cuts is not None
        rows, lo, hi = self.cut_rows(*self.cuts.add(expert, slope, intercept))
        self.append_rows(rows, lo, hi)
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

    def append_rows(self, rows: Any, lo: Float, hi: Float) -> None:
        """Append rows ``lo <= rows·v <= hi`` (``rows`` sparse, one column per model column)."""
        from scipy import sparse

        self.matrix = sparse.vstack([self.matrix, rows], format="csr")
        self.row_lo = np.concatenate([self.row_lo, lo])
        self.row_hi = np.concatenate([self.row_hi, hi])

    def dual_bound(self, row_dual: Float) -> tuple[float, Float]:
        r"""An upper bound on ``cost·v`` over the LP relaxation from any row prices `y`,
        and the reduced costs ``r = cost − matrixᵀ·y``.

        Weak duality, checked term by term rather than trusted from the solver: for every
        ``v`` within the rows and column bounds, ``cost·v = r·v + y·(matrix·v) <=
        Σ_j max(r_j·col_lo_j, r_j·col_hi_j) + Σ_i max(y_i·row_lo_i, y_i·row_hi_i)``. A
        price whose row has no bound on the side it needs is set to 0 first, and every
        column has finite bounds, so the bound is finite for any `y`; its floating-point
        error is added on top (a few ulps per term). Fixing ``x_j`` to the bound it does
        not sit at costs at least ``|r_j|``: any ``v`` with ``x_j = 1`` where ``r_j < 0``
        has ``cost·v <= bound + r_j`` (the reduced-cost fixing of :mod:`.root`).
        """
        y = np.asarray(row_dual, dtype=np.float64)
        y = np.where((y > 0) & np.isfinite(self.row_hi), y, np.where(
            (y < 0) & np.isfinite(self.row_lo), y, 0.0))  # fmt: skip
        reduced = self.cost - self.matrix.T @ y
        cols = np.maximum(reduced * self.col_lo, reduced * self.col_hi)
        rows = y * np.where(y > 0, self.row_hi, np.where(y < 0, self.row_lo, 0.0))
        # rounding: each r_j is a sum of (entries in column j) + 1 products, each term
        # below is one more product, and fsum adds them exactly rounded
        depth = int(np.diff(self.matrix.tocsc().indptr).max(initial=0)) + 3
        width = np.maximum(np.abs(self.col_lo), np.abs(self.col_hi))
        size = (np.abs(self.cost) + abs(self.matrix).T @ np.abs(y)) @ width
        eps = float(np.finfo(np.float64).eps)
        error = 1.01 * depth * eps * (float(size) + float(np.abs(rows).sum()))
        total = math.fsum(np.concatenate([cols, rows]).tolist())
        return total + 2 * eps * abs(total) + error, reduced

    def restrict(self, keep: Bool) -> MilpModel:
        """The model without the ``x`` columns where `keep` is False (pairs fixed to 0):
        their rows stay, the other columns shift down."""
        from scipy import sparse

        x = self.columns["x"]
        mask = np.ones(self.cost.size, dtype=bool)
        mask[x] = keep
        kept = int(np.count_nonzero(keep))
        shift = x.stop - kept
        columns = {
            name: slice(0, kept) if name == "x" else slice(s.start - shift, s.stop - shift)
            for name, s in self.columns.items()
        }
        matrix = sparse.csr_array(self.matrix.tocsc()[:, np.flatnonzero(mask)])
        return replace(
            self, cost=self.cost[mask], col_lo=self.col_lo[mask], col_hi=self.col_hi[mask],
            integer=self.integer[mask], matrix=matrix, clients=self.clients[keep],
            experts=self.experts[keep], columns=columns, cuts=copy.deepcopy(self.cuts),
        )  # fmt: skip

    def with_x_bounds(self, lo: Float, hi: Float) -> MilpModel:
        """A copy with the bounds of the ``x`` columns replaced (a sub-MIP's fixings)."""
        col_lo, col_hi = self.col_lo.copy(), self.col_hi.copy()
        col_lo[self.columns["x"]], col_hi[self.columns["x"]] = lo, hi
        return replace(self, col_lo=col_lo, col_hi=col_hi, cuts=copy.deepcopy(self.cuts))


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


def _columns_data(
    problem: AssignmentProblem, columns: dict[str, slice], clients: Int, experts: Int, scale: float
) -> tuple[Float, Float, Float, Bool]:
    """Objective, bounds and integrality of every column (loads in units of `scale`).

    Every continuous column gets finite bounds implied by the rows, so that a dual bound
    computed from any row prices (:meth:`MilpModel.dual_bound`) is finite: ``L[e] <=
    reach[e]`` (``Σ_n w[n, e]`` over the clients allowed it), ``top`` and ``bottom``
    within the loads' bounds, and ``t[e] <= max((L_lo − c_hi)², (L_hi − c_lo)²)``, the
    largest squared deviation the bounds of ``L[e]`` and the mean ``c`` allow. At every
    feasible assignment ``t[e]`` is at most ``(L[e] − c)²`` (the lines lie under the
    square at the loads an assignment can have), so no assignment is cut off.
    """
    n_cols = max(s.stop for s in columns.values())
    cost, lo, hi = np.zeros(n_cols), np.zeros(n_cols), np.full(n_cols, np.inf)
    integer = np.zeros(n_cols, dtype=bool)
    lam = problem.balance_penalty
    x = columns["x"]
    cost[x], hi[x], integer[x] = problem.effective_utility()[clients, experts], 1.0, True
    load_lo, load_hi = problem.load_min / scale, np.minimum(problem.load_max, problem.reach) / scale
    lo[columns["L"]], hi[columns["L"]] = load_lo, load_hi
    if "c" in columns:
        c_lo, c_hi = (t / (problem.n_experts * scale) for t in problem.total_range)
        lo[columns["c"]], hi[columns["c"]] = c_lo, c_hi
        hi[columns["t"]] = np.maximum((load_lo - c_hi) ** 2, (load_hi - c_lo) ** 2)
        cost[columns["t"]] = -lam * scale**2
    if "top" in columns:
        lo[columns["top"]], hi[columns["top"]] = load_lo.max(), load_hi.max()
        lo[columns["bottom"]], hi[columns["bottom"]] = load_lo.min(), load_hi.min()
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
    # every budget row (storage, compute, ...): Σ_e cost[n, e]·x[n, e] ≤ limit[n]
    for budget in problem.budgets:
        rows.add(clients, x, budget.at(clients, experts), none, budget.limit)
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
    if problem.weighted_loads:
        return None, 0.0
    if problem.fixed_total is not None:
        return 1.0 / scale, -problem.fixed_total / (problem.n_experts * scale)
    return 1.0 / (problem.n_experts * scale), 0.0


def _initial_lines(
    problem: AssignmentProblem, cuts: Cuts, d0: Float, scale: float
) -> tuple[Int, Float, Float]:
    """Lines around the warm start's deviations `d0`: every grid secant when the grid is
    small, else a window of them, plus tangents on a doubling ladder across the range."""
    lo, hi = problem.load_range
    c_lo, c_hi = (total / problem.n_experts for total in problem.total_range)
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
    step = (1.0 if cuts.grid is not None else load_scale(problem)) / scale  # no weight > 0: 1
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
    return problem.load_unit


def formulate(problem: AssignmentProblem, warm: Bool | None = None) -> MilpModel:
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
    # the objective in units of its largest coefficient: the engines' absolute
    # tolerances become relative ones, at utilities of 1e-300 as of 1e300
    unit = problem.objective_unit
    cost = cost / unit
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
    model.unit = unit
    return model
