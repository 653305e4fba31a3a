r"""Valid inequalities for the budget rows: covers lifted by the experts-per-client bounds.

A client ``n`` holds between ``m = min_experts[n]`` and ``M = max_experts[n]`` experts
and every budget row caps ``Σ_e cost[n, e]·x[n, e] <= b = limit[n]``, with costs ``>= 0``.
For any set ``C`` of the client's allowed experts let

.. math::

    f(j) = \underbrace{\textstyle\sum \text{of the } j \text{ cheapest costs in } C}_{}
         + \sum \text{of the } \max(0, m - j) \text{ cheapest costs outside } C

(``+∞`` when ``C`` has fewer than ``j`` experts or the rest fewer than ``m − j``) and
``k_C = max{j <= min(|C|, M) : f(j) <= b'}`` with ``b' = b + BUDGET_SLACK·max(1, b)``.

**Claim.** Every assignment whose budgets hold within ``BUDGET_SLACK`` satisfies the cover
``Σ_{e∈C} x[n, e] <= k_C``.

*Proof.* Let ``j = |{e ∈ C : x[n, e] = 1}|``. Then ``j <= |C|`` and ``j <= Σ_e x[n, e] <=
M``. The client holds ``j`` experts of ``C``, which cost at least the ``j`` cheapest of
``C``, and at least ``m − j`` experts outside ``C`` (it holds ``>= m`` in all), which cost
at least the ``max(0, m − j)`` cheapest outside ``C``; every other cost is ``>= 0``. So
``f(j) <= Σ_e cost[n, e]·x[n, e] <= b'``, ``j`` is one of the numbers whose maximum is
``k_C``, and ``j <= k_C``. ∎

With ``m = 0`` this is the textbook cover (``C`` too expensive to hold whole); the
``m − j`` term lifts it when the client must hold experts anyway: with exactly four
experts of compute costs 2.09, 2.03, 2.28, 2.33 and a budget of 8.45 the four cannot go
together, and a fifth, cheaper expert cannot replace one of them below the cheapest
completion either. ``BUDGET_SLACK`` is twice the checker's tolerance, so that an
assignment :func:`~flexmoe.assign.verify` accepts is never cut off; the sums themselves
carry rounding errors of a few ulps, far below it.

:func:`separate` finds covers that the LP point violates: for each client with a
fractional ``x`` and each budget row it ranks the client's experts three ways (by ``x``,
by ``(1 − x)/cost`` — the greedy of the cover knapsack — and by cost) and tries every
prefix of each ranking as ``C``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from flexmoe.assign.problem import AssignmentProblem, Bool, Float, Int
from flexmoe.assign.verify import TOLERANCE

if TYPE_CHECKING:
    from flexmoe.assign.backends.milp.model import MilpModel

__all__ = ["BUDGET_SLACK", "capacity", "separate"]

#: The covers hold for every assignment within this relative slack of its budgets.
BUDGET_SLACK = 2 * TOLERANCE
#: A cover enters when the LP point exceeds its right-hand side by more than this.
MIN_VIOLATION = 1e-4
#: A value this close to 0 or 1 counts as integral.
INTEGRAL = 1e-6


def capacity(cost: Float, limit: Float, low: Int, high: Int, members: Bool, allowed: Bool) -> Int:
    """``k_C`` of each row (one client each; see the module docstring): the most experts
    of `members` a client can hold within `limit`, or −1 when it can hold none of the
    allowed combinations at all.

    Examples
    --------
    >>> cost = np.array([[2.09, 2.03, 2.28, 2.33, 1.0]])
    >>> four = np.array([[True, True, True, True, False]])
    >>> everything = np.ones((1, 5), dtype=bool)
    >>> capacity(cost, np.array([8.45]), np.array([4]), np.array([4]), four, everything)
    array([3])
    """
    rows, n_experts = cost.shape
    inside = np.sort(np.where(members & allowed, cost, np.inf), axis=1)
    outside = np.sort(np.where(~members & allowed, cost, np.inf), axis=1)
    zero = np.zeros((rows, 1))
    cheapest_in = np.concatenate([zero, np.cumsum(inside, axis=1)], axis=1)
    cheapest_out = np.concatenate([zero, np.cumsum(outside, axis=1)], axis=1)
    j = np.arange(n_experts + 1)[None, :]
    rest = np.maximum(low[:, None] - j, 0)
    least = cheapest_in + np.take_along_axis(cheapest_out, np.minimum(rest, n_experts), axis=1)
    least[rest > n_experts] = np.inf
    fits = (least <= limit[:, None]) & (j <= high[:, None])
    return np.where(fits, j, -1).max(axis=1).astype(np.int64)


def _rankings(x: Float, cost: Float, allowed: Bool) -> list[Int]:
    """Each client's allowed experts in three orders (disallowed ones last): by ``x``
    (ties: costlier first), by ``(1 − x)/cost`` (cheapest to cover first), by cost. The
    covers tried are the prefixes: of the first two up to one past the LP's support (a
    prefix of experts the LP does not hold adds nothing to the left-hand side), of the
    third all of them (the threshold sets ``{e : cost[n, e] >= θ}``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        per_cost = np.where(cost > 0, (1 - x) / cost, np.inf)
    keys = [-x - 1e-9 * cost, per_cost, -cost]
    return [np.argsort(np.where(allowed, key, np.inf), axis=1, kind="stable") for key in keys]


def _violated(
    problem: AssignmentProblem, x: Float, clients: Int, cost: Float, limit: Float
) -> list[tuple[int, tuple[int, ...], int]]:
    """Covers of one budget row violated by `x` (rows: `clients`), as (client, set, k)."""
    allowed = problem.allowed_mask()[clients]
    low, high = problem.min_experts[clients], problem.max_experts[clients]
    n_experts = problem.n_experts
    support = int((x > INTEGRAL).sum(axis=1).max())
    found: dict[tuple[int, tuple[int, ...]], int] = {}
    for order, longest in zip(_rankings(x, cost, allowed), (support, support, n_experts),
                              strict=True):  # fmt: skip
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n_experts)[None, :], axis=1)
        for size in range(1, min(longest + 1, n_experts) + 1):
            members = (rank < size) & allowed
            k = capacity(cost, limit, low, high, members, allowed)
            excess = (x * members).sum(axis=1) - k
            useful = (k >= 0) & (excess > MIN_VIOLATION)
            for row in np.flatnonzero(useful):
                key = (int(clients[row]), tuple(np.flatnonzero(members[row]).tolist()))
                found.setdefault(key, int(k[row]))
    return [(client, members, k) for (client, members), k in found.items()]


def separate(
    problem: AssignmentProblem, model: MilpModel, values: Float
) -> tuple[Any, Float, Float] | None:
    """Rows ``Σ_{e∈C} x[n, e] <= k_C`` violated by the column values `values` of `model`
    (an LP point), for every budget row; None when there is none."""
    from scipy import sparse

    x = np.zeros(problem.shape)
    x[model.clients, model.experts] = values[model.columns["x"]]
    fractional = np.flatnonzero(((x > INTEGRAL) & (x < 1 - INTEGRAL)).any(axis=1))
    if fractional.size == 0 or not problem.budgets:
        return None
    column = np.full(problem.shape, -1, dtype=np.int64)
    column[model.clients, model.experts] = np.arange(model.clients.size)
    covers = []
    for budget in problem.budgets:
        cost = np.broadcast_to(budget.cost, problem.shape)[fractional]
        limit = budget.limit[fractional]
        limit = limit + BUDGET_SLACK * np.maximum(1.0, limit)
        covers += _violated(problem, x[fractional], fractional, cost, limit)
    if not covers:
        return None
    sizes = [len(members) for _, members, _ in covers]
    rows = np.repeat(np.arange(len(covers)), sizes)
    cols = np.concatenate([column[client, list(members)] for client, members, _ in covers])
    matrix = sparse.csr_array(
        (np.ones(cols.size), (rows, cols)), shape=(len(covers), model.cost.size)
    )
    k = np.array([k for _, _, k in covers], dtype=np.float64)
    return matrix, np.full(k.size, -np.inf), k
