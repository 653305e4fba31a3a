"""Quantities derived from an :class:`~flexmoe.assign.AssignmentProblem`, with one slack.

The precheck and every backend read these through the problem's cached properties
(``problem.most_experts``, ``problem.holder_band``, ...), so that each is computed once
and means the same everywhere. The independent checker :func:`~flexmoe.assign.verify`
does not use them: it recomputes every constraint from the raw data.

A float ``v`` counts as the whole number ``k`` when ``|v − k| <= SLACK·max(1, |v|)``:
``load_min = 2.0000000001`` asks for 2 holders, a budget of 0.3 holds three experts of
size 0.1 (``0.3 / 0.1 = 2.9999999999999996``).

>>> import numpy as np
>>> from flexmoe.assign import AssignmentProblem
>>> p = AssignmentProblem(np.ones((4, 3)), max_experts=3, min_experts=1,
...                       expert_size=[2.0, 2.0, 2.0], storage=[4, 6, 2, 9],
...                       load_min=1.0000000001, load_max=2.5)
>>> p.most_experts.tolist(), p.count_equivalent
([2, 3, 1, 3], True)
>>> [band.tolist() for band in p.holder_band]
[[1, 1, 1], [2, 2, 2]]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from flexmoe.assign.problem import AssignmentProblem, BudgetRow

__all__ = [
    "SLACK",
    "allowed_count",
    "budget_share",
    "count_caps",
    "count_equivalent",
    "fixed_total",
    "holder_band",
    "load_range",
    "load_unit",
    "masked_utility",
    "most_experts",
    "objective_unit",
    "power_of_two_at_most",
    "reach",
    "total_range",
    "whole_ceil",
    "whole_floor",
]

Float = NDArray[np.float64]
Int = NDArray[np.int64]
Bool = NDArray[np.bool_]

#: The one relative slack of every derived rounding and aggregate comparison.
SLACK = 1e-9


def whole_floor(values: Float) -> Float:
    """``floor(v)``, counting ``v`` within :data:`SLACK` below a whole number as it."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.floor(values + SLACK * np.maximum(1.0, np.abs(values)))


def whole_ceil(values: Float) -> Float:
    """``ceil(v)``, counting ``v`` within :data:`SLACK` above a whole number as it."""
    values = np.asarray(values, dtype=np.float64)
    return np.ceil(values - SLACK * np.maximum(1.0, np.abs(values)))


def allowed_count(problem: AssignmentProblem) -> Int:
    """Experts each client may hold by the allowed mask."""
    if problem.allowed is None:
        return np.full(problem.n_clients, problem.n_experts, dtype=np.int64)
    return problem.allowed.sum(axis=1).astype(np.int64)


def _row_extremes(problem: AssignmentProblem, row: BudgetRow) -> tuple[Float, Float]:
    """Each client's smallest and largest cost of this row over its allowed experts
    (``inf`` and ``-inf`` for a client allowed none)."""
    cost = np.broadcast_to(row.cost, problem.shape)
    where = True if problem.allowed is None else problem.allowed
    low = np.min(cost, axis=1, where=where, initial=np.inf)
    high = np.max(cost, axis=1, where=where, initial=-np.inf)
    return low, high


def count_caps(problem: AssignmentProblem) -> tuple[Int, ...]:
    """Per budget row: for each client whose allowed experts all cost it the same
    ``c > 0``, the row is exactly ``Σ_e x[n, e] <= floor(limit[n] / c)`` (with
    :data:`SLACK`); that cap, and ``n_experts`` for the other clients."""
    caps = []
    for row in problem.budgets:
        low, high = _row_extremes(problem, row)
        capped = (low == high) & (low > 0)
        ratio = np.divide(row.limit, low, out=np.zeros(problem.n_clients), where=capped)
        cap = np.minimum(whole_floor(ratio), problem.n_experts)
        caps.append(np.where(capped, cap, problem.n_experts).astype(np.int64))
    return tuple(caps)


def count_equivalent(problem: AssignmentProblem) -> tuple[bool, ...]:
    """Per budget row: whether it costs each client the same for all its allowed
    experts, so that it only caps how many experts the client holds (folded into
    :func:`most_experts`)."""
    out = []
    for row in problem.budgets:
        low, high = _row_extremes(problem, row)
        out.append(bool(((low == high) | np.isinf(low)).all()))
    return tuple(out)


def most_experts(problem: AssignmentProblem) -> Int:
    """``min(max_experts, allowed count, the count caps of the budget rows)``."""
    return np.minimum.reduce(
        [problem.max_experts, allowed_count(problem), *problem.count_caps]
    ).astype(np.int64)


def reach(problem: AssignmentProblem) -> Float:
    """Each expert's load when every client allowed it holds it."""
    if problem.load_weight is None:
        if problem.allowed is None:
            return np.full(problem.n_experts, float(problem.n_clients))
        return problem.allowed.sum(axis=0).astype(np.float64)
    if problem.allowed is None:
        return problem.load_weight.sum(axis=0)
    return np.sum(problem.load_weight, axis=0, where=problem.allowed)


def holder_band(problem: AssignmentProblem) -> tuple[Int, Int]:
    """Whole holder counts per expert: ``ceil(load_min)`` and ``min(floor(load_max),
    clients allowed it, Σ most_experts)`` (the band of count loads; may be empty)."""
    holders = problem.n_clients if problem.allowed is None else problem.allowed.sum(axis=0)
    total = int(problem.most_experts.sum())
    hi = np.minimum(whole_floor(problem.load_max), np.minimum(holders, total))
    return whole_ceil(problem.load_min).astype(np.int64), hi.astype(np.int64)


def load_range(problem: AssignmentProblem) -> tuple[Float, Float]:
    """Bounds on each expert's load in any feasible assignment, ``lo <= hi``: the holder
    band for count loads, ``load_min`` and ``min(load_max, reach)`` for weighted loads."""
    if problem.load_weight is None:
        lo, hi = (band.astype(np.float64) for band in problem.holder_band)
    else:
        lo, hi = problem.load_min, np.minimum(problem.load_max, problem.reach)
    return lo, np.maximum(hi, lo)


def total_range(problem: AssignmentProblem) -> tuple[float, float]:
    """Bounds on the total load ``Σ_e L_e``: those of :func:`load_range`, and for count
    loads also ``Σ min_experts .. Σ most_experts`` (``lo <= hi``)."""
    lo, hi = problem.load_range
    least, most = float(lo.sum()), float(hi.sum())
    if problem.load_weight is None:
        least = max(least, float(problem.min_experts.sum()))
        most = min(most, float(problem.most_experts.sum()))
    return least, max(least, most)


def fixed_total(problem: AssignmentProblem) -> int | None:
    """The number of holders of every feasible assignment, when the data fix it (count
    loads): the bounds of :func:`total_range` meet (or cross, which leaves no feasible
    assignment at all)."""
    if problem.load_weight is not None:
        return None
    least, most = problem.total_range
    return int(least) if least == most else None


def masked_utility(problem: AssignmentProblem) -> Float:
    """The effective utility, ``-inf`` where a pair is not allowed (no copy without a
    mask or switch cost)."""
    utility = problem.effective_utility()
    if problem.allowed is None:
        return utility
    masked = np.where(problem.allowed, utility, -np.inf)
    masked.setflags(write=False)
    return masked


def budget_share(problem: AssignmentProblem) -> Float:
    """``Σ_rows cost[n, e] / max(limit[n], SLACK)`` of every pair."""
    share = np.zeros(problem.shape)
    for row in problem.budgets:
        share += row.cost / np.maximum(row.limit, SLACK)[:, None]
    share.setflags(write=False)
    return share


def load_unit(problem: AssignmentProblem) -> float:
    """The typical load of one holder: the median positive load weight (1 for count
    loads, and when no weight is positive)."""
    if problem.load_weight is None:
        return 1.0
    positive = problem.load_weight[problem.load_weight > 0]
    return float(np.median(positive)) if positive.size else 1.0


def power_of_two_at_most(value: float) -> float:
    """The largest power of two ``<= value`` (1 for 0 or a non-finite value); dividing
    by it is exact.

    >>> power_of_two_at_most(3e-7), power_of_two_at_most(5.0), power_of_two_at_most(0.0)
    (2.384185791015625e-07, 4.0, 1.0)
    """
    if not (value > 0 and np.isfinite(value)):
        return 1.0
    return math.ldexp(1.0, math.frexp(value)[1] - 1)


def objective_unit(problem: AssignmentProblem) -> float:
    """The unit the solvers see the objective in: a power of two at or below its largest
    coefficient — ``|effective utility|`` of an allowed pair, ``λ·w²`` (variance) or
    ``λ·w`` (range) with ``w`` the :func:`load_unit`. In these units the top
    coefficient lies in [1, 2), so the solvers' absolute tolerances (a dual feasibility
    of 1e-7, an absolute gap) act as relative ones at utilities of 1e-300 as of 1e300.
    """
    utility = problem.masked_utility
    top = float(np.abs(utility[np.isfinite(utility)]).max(initial=0.0))
    if problem.balance_penalty > 0:
        w = load_unit(problem)
        variance = problem.balance_metric == "variance"
        top = max(top, problem.balance_penalty * (w * w if variance else w))
    return power_of_two_at_most(top)
