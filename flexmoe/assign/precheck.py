"""Cheap aggregate feasibility checks, run before any solver.

Each check is a necessary condition; the first that fails becomes the reason of an
``INFEASIBLE`` result. Passing them all proves nothing. The checks read the quantities
derived on the problem (:mod:`flexmoe.assign.derived`), with its one slack.
"""

from __future__ import annotations

import numpy as np

from flexmoe.assign.derived import SLACK, whole_ceil, whole_floor
from flexmoe.assign.problem import AssignmentProblem, BudgetRow, Float

__all__ = ["infeasibility_reason"]


def infeasibility_reason(problem: AssignmentProblem) -> str | None:
    """The first aggregate reason `problem` cannot be feasible, or None.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem, BudgetRow
    >>> from flexmoe.assign.precheck import infeasibility_reason
    >>> infeasibility_reason(AssignmentProblem(np.ones((5, 8)), max_experts=1, load_min=1))
    'Σ max_experts = 5 < Σ load_min = 8 (every holder counts 1)'
    >>> download = BudgetRow("download", cost=[[3.0, 1.0], [2.0, 2.0]], limit=[4.0, 1.0])
    >>> infeasibility_reason(AssignmentProblem(np.ones((2, 2)), max_experts=1, budgets=[download]))
    'client 1: its 1 cheapest allowed experts need download 2 > its budget 1 (1 client(s) like it)'
    """
    for check in (_clients, _counts, _experts, _budgets):
        reason = check(problem)
        if reason:
            return reason
    return None


def _clients(problem: AssignmentProblem) -> str | None:
    available = problem.allowed_count
    short = problem.min_experts > available
    if short.any():
        n = int(np.argmax(short))
        return (
            f"client {n} must hold min_experts = {problem.min_experts[n]} experts but only "
            f"{available[n]} are allowed ({int(short.sum())} client(s) like it)"
        )
    return None


def _counts(problem: AssignmentProblem) -> str | None:
    if problem.weighted_loads:
        return None
    most = int(problem.most_experts.sum())
    lo, hi = whole_ceil(problem.load_min), whole_floor(problem.load_max)
    if (lo > hi).any():
        e = int(np.argmax(lo > hi))
        return (
            f"expert {e}: no whole number of holders lies in "
            f"[load_min, load_max] = [{problem.load_min[e]:g}, {problem.load_max[e]:g}]"
        )
    if most < lo.sum():
        return f"Σ max_experts = {most} < Σ load_min = {int(lo.sum())} (every holder counts 1)"
    least = int(problem.min_experts.sum())
    if np.isfinite(hi).all() and least > hi.sum():
        return f"Σ min_experts = {least} > Σ load_max = {int(hi.sum())} (every holder counts 1)"
    return None


def _experts(problem: AssignmentProblem) -> str | None:
    reach = problem.reach
    short = reach < problem.load_min - SLACK * np.maximum(1, problem.load_min)
    if short.any():
        e = int(np.argmax(short))
        return (
            f"expert {e} can reach a load of at most {reach[e]:g} (every allowed client "
            f"holding it) < load_min = {problem.load_min[e]:g}"
        )
    return None


def _cheapest_fill(problem: AssignmentProblem, row: BudgetRow) -> Float:
    """Per client: the smallest total cost of `min_experts[n]` allowed experts."""
    cost = np.broadcast_to(row.cost, problem.shape)
    if problem.allowed is not None:
        cost = np.where(problem.allowed, cost, np.inf)
    ordered = np.sort(cost, axis=-1)
    prefix = np.concatenate([np.zeros((problem.n_clients, 1)), np.cumsum(ordered, axis=-1)], -1)
    return prefix[np.arange(problem.n_clients), problem.min_experts]


def _budgets(problem: AssignmentProblem) -> str | None:
    """Every budget row: a client's cheapest `min_experts` allowed experts must fit."""
    for row in problem.budgets:
        need, cap = _cheapest_fill(problem, row), row.limit
        short = need > cap + SLACK * np.maximum(1, cap)
        if short.any():
            n = int(np.argmax(short))
            return (
                f"client {n}: its {problem.min_experts[n]} cheapest allowed experts need "
                f"{row.name} {need[n]:g} > its budget {cap[n]:g} "
                f"({int(short.sum())} client(s) like it)"
            )
    return None
