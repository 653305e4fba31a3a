"""Independent checker: every constraint and the objective, recomputed from the raw data.

Nothing here is shared with a backend's model, nor with the quantities derived on the
problem (:mod:`flexmoe.assign.derived`): only the raw fields and budget rows are read.
:func:`flexmoe.assign.solve` runs :func:`verify` on every result before returning it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flexmoe.assign.problem import AssignmentProblem, BalanceMetric, Bool, Float

__all__ = [
    "Verification",
    "expert_loads",
    "imbalance",
    "largest_magnitude",
    "objective_and_scale",
    "objective_scale",
    "objective_scale_and_loads",
    "objective_value",
    "verify",
]

#: Relative slack: of the right-hand side (at least 1) for float constraints, of the
#: objective's scale for the objective and the bound.
TOLERANCE = 1e-6


def expert_loads(problem: AssignmentProblem, x: ArrayLike) -> Float:
    """Load of every expert: ``Σ_n w[n, e]·x[n, e]`` (holder counts when unweighted)."""
    x = np.asarray(x, dtype=bool)
    if problem.load_weight is None:
        return x.sum(axis=0).astype(np.float64)
    return np.where(x, problem.load_weight, 0.0).sum(axis=0)


@dataclass(frozen=True)
class _Pairs:
    """The pairs an assignment `x` holds: their flat indices and utilities, found once
    (no (N, E) temporaries), and the expert loads (counted from them when unweighted)."""

    problem: AssignmentProblem
    x: Bool
    held: NDArray[np.intp]
    utility: Float

    @classmethod
    def of(cls, problem: AssignmentProblem, x: Bool) -> _Pairs:
        if x.shape != problem.shape:
            raise ValueError(f"`x` must have shape {problem.shape}; got {x.shape}")
        held = np.flatnonzero(x)
        return cls(problem, x, held, np.take(problem.utility, held))

    @functools.cached_property
    def clients(self) -> NDArray[np.intp]:
        """The client of each held pair."""
        return self.held // self.problem.n_experts

    @functools.cached_property
    def experts(self) -> NDArray[np.intp]:
        """The expert of each held pair (a product and a difference: ``%`` is slower)."""
        return self.held - self.clients * self.problem.n_experts

    @functools.cached_property
    def loads(self) -> Float:
        """:func:`expert_loads` at `x`."""
        if self.problem.load_weight is not None:
            return expert_loads(self.problem, self.x)
        return np.bincount(self.experts, minlength=self.problem.n_experts).astype(np.float64)

    @functools.cached_property
    def counts(self) -> Float:
        """Experts held by each client."""
        return np.bincount(self.clients, minlength=self.problem.n_clients).astype(np.float64)

    @functools.cached_property
    def unswitched(self) -> int:
        """Held pairs that `previous` did not hold (0 without a switch cost)."""
        if not self.problem.switch_cost or self.problem.previous is None:
            return 0
        return int(self.held.size - np.take(self.problem.previous, self.held).sum())


def imbalance(loads: ArrayLike, metric: BalanceMetric | str) -> float:
    """``Σ (L − L̄)²`` for ``variance``, ``max L − min L`` for ``range``."""
    loads = np.asarray(loads, dtype=np.float64)
    if BalanceMetric(metric) is BalanceMetric.VARIANCE:
        return float(((loads - loads.mean()) ** 2).sum())
    return float(loads.max() - loads.min())


def objective_value(problem: AssignmentProblem, x: ArrayLike) -> float:
    """``Σ u·x − λ·imbalance(L) − μ·Σ (1 − previous)·x`` in float64."""
    return _value(_Pairs.of(problem, np.asarray(x, dtype=bool)))


def _value(pairs: _Pairs) -> float:
    """:func:`objective_value` from the held pairs."""
    problem = pairs.problem
    value = float(pairs.utility.sum())
    if problem.balance_penalty:
        value -= problem.balance_penalty * imbalance(pairs.loads, problem.balance_metric)
    if problem.switch_cost and problem.previous is not None:
        value -= problem.switch_cost * float(pairs.unswitched)
    return value


def objective_scale(
    problem: AssignmentProblem, x: ArrayLike, *, largest: float | None = None
) -> float:
    """The scale of the objective at `x`: the magnitude of its terms, ``Σ |ū|·x +
    λ·imbalance(L)`` with ``ū = u − μ·(1 − previous)``, and at least the largest ``|ū|``
    of an allowed pair (`largest`, when the caller has it already: see
    :func:`largest_magnitude`).

    At least ``|objective|``; larger where terms cancel, or where the assignment holds
    only pairs far smaller than the problem's largest (a solver resolves differences
    relative to its largest coefficient, float64 relative to the terms it sums).
    Relative gaps and the verifier's objective and bound checks are relative to it, so
    they mean the same at every scale of the data (utilities of 1e-300 or 1e300).

    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> p = AssignmentProblem([[1.0, -1.0, -3.0]], max_experts=2)
    >>> x = [[True, True, False]]
    >>> objective_value(p, x), objective_scale(p, x)
    (0.0, 3.0)
    """
    return _scale(_Pairs.of(problem, np.asarray(x, dtype=bool)), largest)


def objective_and_scale(
    problem: AssignmentProblem, x: ArrayLike, *, largest: float | None = None
) -> tuple[float, float]:
    """:func:`objective_value` and :func:`objective_scale` at `x`, finding the held pairs
    once.

    >>> from flexmoe.assign import AssignmentProblem
    >>> objective_and_scale(AssignmentProblem([[1.0, -1.0, -3.0]], max_experts=2),
    ...                     [[True, True, False]])
    (0.0, 3.0)
    """
    return objective_scale_and_loads(problem, x, largest=largest)[:2]


def objective_scale_and_loads(
    problem: AssignmentProblem,
    x: ArrayLike,
    *,
    largest: float | None = None,
    counts: ArrayLike | None = None,
) -> tuple[float, float, Float]:
    """:func:`objective_value`, :func:`objective_scale` and :func:`expert_loads` at `x`,
    finding the held pairs once (the loads of a count problem counted from them, or
    `counts`: the holders of each expert in `x`, when the caller keeps them; a problem
    with load weights ignores them).

    >>> from flexmoe.assign import AssignmentProblem
    >>> objective_scale_and_loads(AssignmentProblem([[1.0, -1.0, -3.0]], max_experts=2),
    ...                           [[True, True, False]])
    (0.0, 3.0, array([1., 1., 0.]))
    """
    pairs = _Pairs.of(problem, np.asarray(x, dtype=bool))
    if counts is not None and problem.load_weight is None:
        pairs.__dict__["loads"] = np.asarray(counts, dtype=np.float64)  # the cached property
    return _value(pairs), _scale(pairs, largest), pairs.loads


def _scale(pairs: _Pairs, largest: float | None) -> float:
    """:func:`objective_scale` from the held pairs."""
    problem = pairs.problem
    terms = pairs.utility
    if problem.switch_cost and problem.previous is not None:
        terms = terms - problem.switch_cost * ~np.take(problem.previous, pairs.held)
    value = float(np.abs(terms).sum())
    if problem.balance_penalty:
        value += problem.balance_penalty * imbalance(pairs.loads, problem.balance_metric)
    if largest is None:
        largest = largest_magnitude(problem)
    return max(value, largest)


#: Matrix elements per chunk of :func:`largest_magnitude`'s pass with a switch cost.
_CHUNK = 1 << 17


def largest_magnitude(problem: AssignmentProblem) -> float:
    """The largest ``|ū|`` of an allowed pair, ``ū = u − μ·(1 − previous)`` (0 for none).

    >>> from flexmoe.assign import AssignmentProblem
    >>> largest_magnitude(AssignmentProblem([[1.0, -1.0, -3.0]], max_experts=2))
    3.0
    """
    utility, allowed = problem.utility, problem.allowed
    if not problem.switch_cost or problem.previous is None:
        return _extent(utility, allowed, 0.0)
    largest, step = 0.0, max(1, _CHUNK // max(problem.n_experts, 1))
    for start in range(0, problem.n_clients, step):  # rows at a time: masks of a few rows
        rows = slice(start, start + step)
        held, fresh = problem.previous[rows], ~problem.previous[rows]  # ū = u, or u − μ
        if allowed is not None:
            held, fresh = held & allowed[rows], fresh & allowed[rows]
        largest = max(
            largest,
            _extent(utility[rows], held, 0.0),
            _extent(utility[rows], fresh, problem.switch_cost),
        )
    return largest


def _extent(values: Float, where: Bool | None, shift: float) -> float:
    """The largest ``|v − shift|`` of `values` where `where` (0 for none), from their
    largest and least (no copy of the matrix; ``v − shift`` rounds monotonically, so this
    is the largest of the rounded differences exactly)."""
    mask: Bool | bool = True if where is None else where
    top = float(values.max(where=mask, initial=-math.inf))
    if top == -math.inf:
        return 0.0
    bottom = float(values.min(where=mask, initial=math.inf))
    return max(top - shift, shift - bottom, 0.0)


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found. ``bool(v)`` is ``v.ok``."""

    ok: bool
    violations: tuple[str, ...]
    objective: float
    loads: Float

    def __bool__(self) -> bool:
        return self.ok

    @property
    def reason(self) -> str:
        return "; ".join(self.violations)


def verify(
    problem: AssignmentProblem,
    x: ArrayLike,
    *,
    objective: float | None = None,
    bound: float | None = None,
    tol: float = TOLERANCE,
) -> Verification:
    """Check an assignment against every constraint of `problem`.

    Parameters
    ----------
    problem : AssignmentProblem
    x : array_like of bool, shape (n_clients, n_experts)
    objective : float, optional
        A claimed objective value; flagged when it differs from the recomputed one.
    bound : float, optional
        A claimed upper bound; flagged when the recomputed objective exceeds it by more
        than `tol` times the objective's scale.
    tol : float
        Relative slack on float constraints (of the right-hand side, at least 1) and on
        the objective and bound comparisons (of :func:`objective_scale`, which is at
        least ``|objective|``: no absolute floor, so a bound 60 % below an objective of
        1e-8 is caught).

    Returns
    -------
    Verification
        ``ok``, the list of violations (each naming the constraint, the worst row and
        the amounts), the recomputed objective and the loads.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem, verify
    >>> p = AssignmentProblem(np.eye(2), max_experts=1, load_min=1)
    >>> verify(p, np.eye(2, dtype=bool)).ok
    True
    >>> verify(p, np.array([[1, 0], [1, 0]], bool)).reason
    'load_min: expert 1 has 0 < 1 (1 expert(s) violate it)'
    """
    x = np.asarray(x)
    if x.shape != problem.shape:
        return Verification(
            False,
            (f"`x` must have shape {problem.shape}; got {x.shape}",),
            math.nan,
            np.zeros(problem.n_experts),
        )
    if x.dtype != np.bool_ and not np.isin(x, (0, 1)).all():
        return Verification(False, ("`x` must be 0/1",), math.nan, np.zeros(problem.n_experts))
    x = x.astype(bool, copy=False)
    pairs = _Pairs.of(problem, x)  # the held pairs, found once for all that follows
    loads, value = pairs.loads, _value(pairs)
    violations = [
        *_count_rows(problem, pairs.counts),
        *_capacity_rows(problem, x, tol),
        *_load_rows(problem, loads, tol),
    ]
    if problem.allowed is not None and (x & ~problem.allowed).any():
        n, e = np.argwhere(x & ~problem.allowed)[0]
        count = int((x & ~problem.allowed).sum())
        violations.append(f"allowed: client {n} holds forbidden expert {e} ({count} pair(s))")
    scale = _scale(pairs, None)
    if objective is not None and not abs(objective - value) <= tol * scale:
        violations.append(f"objective: reported {objective!r} but recomputed {value!r}")
    if bound is not None and not math.isnan(bound) and value > bound + tol * scale:
        violations.append(f"bound: objective {value!r} exceeds the claimed upper bound {bound!r}")
    return Verification(not violations, tuple(violations), value, loads)


def _report(name: str, side: str, lhs: Float, rhs: Float, bad: Bool, unit: str) -> list[str]:
    if not bad.any():
        return []
    worst = int(np.argmax(np.where(bad, np.abs(lhs - rhs), -np.inf)))
    return [
        f"{name}: {unit} {worst} has {lhs[worst]:g} {side} {rhs[worst]:g} "
        f"({int(bad.sum())} {unit}(s) violate it)"
    ]


def _count_rows(problem: AssignmentProblem, held: Float) -> list[str]:
    mins, maxs = problem.min_experts.astype(np.float64), problem.max_experts.astype(np.float64)
    return [
        *_report("min_experts", "<", held, mins, held < mins, "client"),
        *_report("max_experts", ">", held, maxs, held > maxs, "client"),
    ]


def _capacity_rows(problem: AssignmentProblem, x: Bool, tol: float) -> list[str]:
    """Every budget row ``Σ_e cost[n, e]·x[n, e] <= limit[n]``, named by the row."""
    out: list[str] = []
    for row in problem.budgets:
        used = np.where(x, row.cost, 0.0).sum(axis=1)
        cap = row.limit
        out += _report(row.name, ">", used, cap, used > cap + tol * np.maximum(1, cap), "client")
    return out


def _load_rows(problem: AssignmentProblem, loads: Float, tol: float) -> list[str]:
    lo, hi = problem.load_min, problem.load_max
    slack_lo = tol * np.maximum(1, lo)
    slack_hi = tol * np.maximum(1, np.where(np.isfinite(hi), hi, 0))
    return [
        *_report("load_min", "<", loads, lo, loads < lo - slack_lo, "expert"),
        *_report("load_max", ">", loads, hi, loads > hi + slack_hi, "expert"),
    ]
