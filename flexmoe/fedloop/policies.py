"""Assignment methods: which experts each participating client holds this round.

``flex`` solves the load-balanced assignment on the fitness utility with
:func:`flexmoe.assign.solve`; ``greedy`` gives each client its top-k by fitness through
the ``greedy:topk`` backend (load ignored); ``random``, ``round_robin`` and ``full``
(every client every expert: the capacity-free upper bound) need no solver.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from flexmoe.assign import AssignmentProblem, solve

__all__ = ["METHODS", "RoundAssignment", "assign_experts", "load_band"]

log = logging.getLogger(__name__)

METHODS = ("flex", "greedy", "random", "round_robin", "full")

Bool = NDArray[np.bool_]


@dataclass(frozen=True)
class RoundAssignment:
    """The assignment of one round, over the participating clients only.

    Attributes
    ----------
    x : ndarray of bool, shape (n_participants, n_experts)
    backend, status, message : str
        The solver's, or the method name with status ``"n/a"`` when no solver ran.
    objective : float
        Σ utility·x of `x`.
    solve_time : float
        Seconds spent in :func:`flexmoe.assign.solve` (0 without a solver).
    load_min, load_max : list of float
        The band the solver was given (empty without one).
    """

    x: Bool
    backend: str
    status: str
    objective: float
    solve_time: float
    message: str = ""
    load_min: tuple[float, ...] = ()
    load_max: tuple[float, ...] = ()


def load_band(
    capacity: NDArray[np.int64], n_experts: int, deficit: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The tightest band on holders per expert: ``floor(T/E) <= L_e <= ceil(T/E)`` with
    ``T = Σ capacity``; `deficit` (optional) raises the lower bound of the most
    under-served experts to the ceiling as far as the ``T`` slots allow.

    Examples
    --------
    >>> lo, hi = load_band(np.array([2, 2, 1]), 2, deficit=np.array([0.0, 1.5]))
    >>> lo.tolist(), hi.tolist()
    ([2.0, 3.0], [3.0, 3.0])
    """
    total = int(capacity.sum())
    lo = np.full(n_experts, float(total // n_experts))
    hi = np.full(n_experts, float(min(math.ceil(total / n_experts), len(capacity))))
    if deficit is not None:
        room = total - lo.sum()
        for e in np.argsort(-deficit, kind="stable"):
            if deficit[e] >= 1 - 1e-9 and lo[e] < hi[e] and room >= 1:
                lo[e] += 1
                room -= 1
    return lo, hi


def _solved(
    problem: AssignmentProblem, backend: str, seed: int | None, band: bool
) -> RoundAssignment:
    start = time.perf_counter()
    result = solve(problem, backend, seed=seed)
    elapsed = time.perf_counter() - start
    if result.x is None:
        raise RuntimeError(
            f"assignment failed ({result.status}, backend {result.backend}): {result.message}"
        )
    return RoundAssignment(
        x=np.array(result.x, dtype=bool),
        backend=result.backend,
        status=str(result.status),
        objective=float(np.sum(problem.utility * result.x)),
        solve_time=elapsed,
        message=result.message,
        load_min=tuple(problem.load_min.tolist()) if band else (),
        load_max=tuple(problem.load_max.tolist()) if band else (),
    )


def _flex(
    problem: AssignmentProblem, backend: str, deficit: np.ndarray | None, seed: int
) -> RoundAssignment:
    lo, hi = load_band(problem.max_experts, problem.n_experts, deficit)
    try:
        return _solved(problem.replace(load_min=lo, load_max=hi), backend, seed, band=True)
    except RuntimeError:
        if deficit is None:
            raise
        log.warning("load band with carried deficit is infeasible; solving without the carry")
        return _flex(problem, backend, None, seed)


def assign_experts(
    method: str,
    utility: NDArray[np.float64],
    capacity: NDArray[np.int64],
    *,
    round: int,
    rng: np.random.Generator,
    backend: str = "auto",
    deficit: NDArray[np.float64] | None = None,
    previous: Bool | None = None,
    switch_cost: float = 0.0,
) -> RoundAssignment:
    """Assign experts to the participating clients (the rows of `utility`).

    Parameters
    ----------
    method : {"flex", "greedy", "random", "round_robin", "full"}
    utility : ndarray, shape (n_participants, n_experts)
        Fitness plus exploration bonus.
    capacity : ndarray of int, shape (n_participants,)
        Experts each client holds (exactly; ``full`` ignores it).
    round : int
    rng : numpy.random.Generator
        Used by ``random`` and to seed the solver.
    backend : str
        Solver for ``flex`` (any :func:`flexmoe.assign.solve` backend; ``auto`` = flow).
    deficit : ndarray, shape (n_experts,), optional
        Carried load deficit that tightens ``flex``'s lower load bounds.
    previous, switch_cost : ndarray of bool (n_participants, n_experts), float
        Last holdings and the churn cost μ of ``flex`` and ``greedy``.

    Examples
    --------
    >>> a = assign_experts("round_robin", np.zeros((4, 4)), np.array([2, 2, 2, 2]), round=0,
    ...                    rng=np.random.default_rng(0))
    >>> a.x.sum(axis=0).tolist()
    [2, 2, 2, 2]
    """
    m, n_experts = utility.shape
    seed = int(rng.integers(2**31))
    if method in ("flex", "greedy"):
        problem = AssignmentProblem(
            utility, max_experts=capacity, previous=previous, switch_cost=switch_cost
        )
        if method == "flex":
            return _flex(problem, backend, deficit, seed)
        return _solved(problem, "greedy:topk", seed, band=False)
    x = np.zeros((m, n_experts), dtype=bool)
    if method == "random":
        for i in range(m):
            x[i, rng.choice(n_experts, int(capacity[i]), replace=False)] = True
    elif method == "round_robin":
        starts = np.concatenate([[0], np.cumsum(capacity)[:-1]]) + round
        for i in range(m):
            x[i, (starts[i] + np.arange(capacity[i])) % n_experts] = True
    elif method == "full":
        x[:] = True
    else:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    objective = float(np.sum(utility * x))
    return RoundAssignment(x, method, "n/a", objective, 0.0)
