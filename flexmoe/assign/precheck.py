"""Cheap aggregate feasibility checks, run before any solver.

Each check is a necessary condition; the first that fails becomes the reason of an
``INFEASIBLE`` result. Passing them all proves nothing.
"""

from __future__ import annotations

import numpy as np

from flexmoe.assign.problem import AssignmentProblem, Float

__all__ = ["infeasibility_reason"]


def infeasibility_reason(problem: AssignmentProblem) -> str | None:
    """The first aggregate reason `problem` cannot be feasible, or None.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> from flexmoe.assign.precheck import infeasibility_reason
    >>> infeasibility_reason(AssignmentProblem(np.ones((5, 8)), max_experts=1, load_min=1))
    'Σ max_experts = 5 < Σ load_min = 8 (every holder counts 1)'
    """
    for check in (_clients, _counts, _experts, _storage, _compute):
        reason = check(problem)
        if reason:
            return reason
    return None


def _allowed_per_client(problem: AssignmentProblem) -> np.ndarray:
    if problem.allowed is None:
        return np.full(problem.n_clients, problem.n_experts)
    return problem.allowed.sum(axis=1)


def _clients(problem: AssignmentProblem) -> str | None:
    available = _allowed_per_client(problem)
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
    most = int(np.minimum(problem.max_experts, _allowed_per_client(problem)).sum())
    lo = np.ceil(problem.load_min - 1e-9)
    hi = np.floor(problem.load_max + 1e-9)
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
    reach: Float = np.where(problem.allowed_mask(), problem.weights(), 0.0).sum(axis=0)
    short = reach < problem.load_min - 1e-9 * np.maximum(1, problem.load_min)
    if short.any():
        e = int(np.argmax(short))
        return (
            f"expert {e} can reach a load of at most {reach[e]:g} (every allowed client "
            f"holding it) < load_min = {problem.load_min[e]:g}"
        )
    return None


def _cheapest_fill(cost: Float, allowed: np.ndarray | None, counts: np.ndarray) -> Float:
    """Per client: the smallest total cost of `counts[n]` allowed experts."""
    cost = np.broadcast_to(cost, allowed.shape if allowed is not None else cost.shape)
    if allowed is not None:
        cost = np.where(allowed, cost, np.inf)
    ordered = np.sort(cost, axis=-1)
    prefix = np.concatenate([np.zeros((*ordered.shape[:-1], 1)), np.cumsum(ordered, axis=-1)], -1)
    if prefix.ndim == 1:
        return prefix[counts]
    return prefix[np.arange(len(counts)), counts]


def _capacity(problem: AssignmentProblem, name: str, cost: Float, cap: Float) -> str | None:
    need = _cheapest_fill(cost, problem.allowed, problem.min_experts)
    short = need > cap + 1e-9 * np.maximum(1, cap)
    if short.any():
        n = int(np.argmax(short))
        return (
            f"client {n}: its {problem.min_experts[n]} cheapest allowed experts need {name} "
            f"{need[n]:g} > its budget {cap[n]:g} ({int(short.sum())} client(s) like it)"
        )
    return None


def _storage(problem: AssignmentProblem) -> str | None:
    if problem.expert_size is None or problem.storage is None:
        return None
    return _capacity(problem, "storage", problem.expert_size, problem.storage)


def _compute(problem: AssignmentProblem) -> str | None:
    if problem.compute_cost is None or problem.compute_budget is None:
        return None
    return _capacity(problem, "compute", problem.compute_cost, problem.compute_budget)
