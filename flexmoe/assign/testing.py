"""Conformance checks for assignment backends, built-in or your own.

Small named reference instances whose optima are proven by hand (each docstring says
how), and :func:`check_backend`, which runs a registered backend on all of them. The
project's test suite runs it on every registered backend; run it on yours after
:func:`~flexmoe.assign.register`:

>>> from flexmoe.assign.testing import check_backend
>>> report = check_backend("greedy")
>>> sorted(report)[:2]
['capped-favourite', 'compute-budget']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexmoe.assign.errors import UnsupportedProblemError
from flexmoe.assign.problem import AssignmentProblem
from flexmoe.assign.registry import get_backend, solve
from flexmoe.assign.result import Assignment, Status

__all__ = ["REFERENCE", "ReferenceInstance", "check_backend", "check_instance"]

#: Relative tolerance on objectives (float scaling inside solvers must stay within it).
RTOL = 1e-9


@dataclass(frozen=True)
class ReferenceInstance:
    """A problem with a proven optimum (None: proven infeasible)."""

    name: str
    problem: AssignmentProblem
    optimum: float | None
    proof: str


def _ref(
    name: str, optimum: float | None, proof: str, utility: list[list[float]], **kw: Any
) -> ReferenceInstance:
    problem = AssignmentProblem(np.array(utility, float), name=name, **kw)
    return ReferenceInstance(name, problem, optimum, proof)


REFERENCE: tuple[ReferenceInstance, ...] = (
    _ref(
        "identity",
        3.0,
        "each client takes its own unit-utility expert",
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        max_experts=1,
        load_min=1,
    ),
    _ref(
        "contested",
        5.0,
        "load_min=1 with one each is a permutation; best of 3! is (0, 2, 1)",
        [[3, 1, 0], [2, 0, 1], [2.5, 1, 0]],
        max_experts=1,
        load_min=1,
    ),
    _ref(
        "capped-favourite",
        9.0,
        "load_max[0]=2: the two largest gains u0−u1 (3, 2) go to expert 0; 4 + 3 + 1 + 1",
        [[4, 1], [3, 1], [2, 1], [1, 1]],
        max_experts=1,
        load_max=[2, 4],
    ),
    _ref(
        "two-each",
        19.0,
        "loads must all be 2, so each expert is dropped by exactly one client: the cheapest "
        "drop permutation costs 9 of the total 28",
        [[5, 4, 0], [5, 4, 0], [5, 4, 1]],
        max_experts=2,
        load_max=2,
    ),
    _ref(
        "stay-put",
        2.0,
        "switching one client nets 1.2 − 0.5 < 1; staying gives 1 + 1",
        [[1.0, 1.2], [1.2, 1.0]],
        max_experts=1,
        previous=np.eye(2, dtype=bool),
        switch_cost=0.5,
    ),
    _ref(
        "variance-split",
        1.8,
        "both on expert 0: 2 − 0.2·Σ(L−L̄)² = 2 − 0.2·2 = 1.6 < 1.8 split",
        [[1.0, 0.8], [1.0, 0.8]],
        max_experts=1,
        balance_penalty=0.2,
    ),
    _ref(
        "variance-tolerated",
        1.9,
        "both on expert 0: 2 − 0.05·2 = 1.9 > 1.8 split",
        [[1.0, 0.8], [1.0, 0.8]],
        max_experts=1,
        balance_penalty=0.05,
    ),
    _ref(
        "forbidden-pair",
        10.0,
        "client 0 may only host expert 1 (1); client 1 takes 9",
        [[9, 1], [9, 1]],
        max_experts=1,
        allowed=[[0, 1], [1, 1]],
    ),
    _ref(
        "optional-experts",
        4.0,
        "min 0, max 2: take exactly the positive utilities 1 + 3",
        [[1, -1], [-2, 3]],
        max_experts=2,
        min_experts=0,
    ),
    _ref(
        "linear-assignment",
        -13.0,
        "classic 4×4 assignment (costs as negative utilities); Hungarian optimum 2+6+1+4",
        [[-9, -2, -7, -8], [-6, -4, -3, -7], [-5, -8, -1, -8], [-7, -6, -9, -4]],
        max_experts=1,
        load_min=1,
        load_max=1,
    ),
    _ref(
        "infeasible-counting",
        None,
        "3 experts need a holder each; 2 clients hold 1 each",
        [[1, 1, 1], [1, 1, 1]],
        max_experts=1,
        load_min=1,
    ),
    _ref(
        "infeasible-hidden",
        None,
        "both clients may only host expert 0, whose load_max is 1 (passes the precheck)",
        [[1, 1], [1, 1]],
        max_experts=1,
        allowed=[[1, 0], [1, 0]],
        load_max=[1, 2],
    ),
    _ref(
        "storage",
        6.0,
        "sizes 3, 2, 2 in storage 4: {0} gives 5, {1, 2} gives 6",
        [[5, 3, 3]],
        max_experts=2,
        min_experts=1,
        expert_size=[3, 2, 2],
        storage=[4],
    ),
    _ref(
        "compute-budget",
        2.0,
        "each client can afford only its cost-1 expert (utility 1)",
        [[10, 1], [1, 10]],
        max_experts=1,
        compute_cost=[[2, 1], [1, 2]],
        compute_budget=[1, 1],
    ),
    _ref(
        "generalized-assignment",
        7.0,
        "GAP, one expert each, weighted capacity 4: of the 8 maps only {c1, c2}→0, c0→1 (7) "
        "and c2→0, {c0, c1}→1 (6) fit",
        [[6, 1], [5, 4], [1, 6]],
        max_experts=1,
        load_weight=[[3, 2], [2, 2], [2, 3]],
        load_max=4,
    ),
    _ref(
        "range-balance",
        4.4,
        "λ=0.6·(max−min): 3/0 gives 6 − 1.8, 2/1 gives 5 − 0.6, 1/2 gives 4 − 0.6",
        [[2, 1], [2, 1], [2, 1]],
        max_experts=1,
        balance_penalty=0.6,
        balance_metric="range",
    ),
)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= RTOL * max(1.0, abs(a), abs(b))


def check_instance(spec: str, instance: ReferenceInstance, *, seed: int = 0) -> Assignment | None:
    """Run backend `spec` on one reference instance and assert the contract.

    Returns the result, or None when the backend declares the instance unsupported.
    Exact backends must be ``OPTIMAL`` at the proven optimum (``INFEASIBLE`` with a reason
    where none exists); every backend's objective is at most the optimum and its bound at
    least it; heuristics never claim ``OPTIMAL`` nor ``INFEASIBLE``.
    """
    exact = get_backend(spec.partition(":")[0]).exact
    try:
        result = solve(instance.problem, backend=spec, seed=seed)
    except UnsupportedProblemError:
        return None
    where = f"{spec} on {instance.name!r}"
    assert result.status is not Status.ERROR, f"{where}: {result.message}"
    for check in _CHECKS:
        check(where, exact, instance, result)
    return result


def _check_infeasible(where: str, exact: bool, ref: ReferenceInstance, r: Assignment) -> None:
    if ref.optimum is not None:
        return
    assert not r.has_solution, f"{where}: claims a solution of an infeasible problem"
    if exact:
        assert r.status is Status.INFEASIBLE and r.message, f"{where}: {r.status} {r.message!r}"


def _check_exact(where: str, exact: bool, ref: ReferenceInstance, r: Assignment) -> None:
    if not exact or ref.optimum is None:
        return
    assert r.status is Status.OPTIMAL, f"{where}: {r.status} ({r.message})"
    assert _close(r.objective, ref.optimum), f"{where}: objective {r.objective} ≠ {ref.optimum}"
    assert r.gap <= 1e-6, f"{where}: gap {r.gap} at OPTIMAL"


def _check_heuristic(where: str, exact: bool, ref: ReferenceInstance, r: Assignment) -> None:
    if exact:
        return
    assert r.status is not Status.OPTIMAL, f"{where}: a heuristic claims OPTIMAL"
    # a proof: the precheck's aggregate reason, or one the backend states (an infeasible
    # relaxation proves the problem infeasible)
    proof = r.info.get("precheck") or r.info.get("proof")
    assert r.status is not Status.INFEASIBLE or proof, (
        f"{where}: a heuristic claims INFEASIBLE without a proof"
    )


def _check_bounds(where: str, exact: bool, ref: ReferenceInstance, r: Assignment) -> None:
    if ref.optimum is None:
        return
    if r.has_solution:
        assert r.objective <= ref.optimum + RTOL * max(1, abs(ref.optimum)), (
            f"{where}: objective {r.objective} beats the proven optimum {ref.optimum}"
        )
    if r.has_solution and not math.isnan(r.bound):
        assert r.bound >= ref.optimum - RTOL * max(1, abs(ref.optimum)), (
            f"{where}: bound {r.bound} below the proven optimum {ref.optimum}"
        )


_CHECKS: tuple[Callable[[str, bool, ReferenceInstance, Assignment], None], ...] = (
    _check_infeasible,
    _check_exact,
    _check_heuristic,
    _check_bounds,
)


def check_backend(spec: str, *, seed: int = 0) -> dict[str, str]:
    """Run :func:`check_instance` on every reference instance.

    Returns ``{instance name: status}`` (``"unsupported"`` where the backend declines);
    raises :class:`AssertionError` at the first broken contract.
    """
    report = {}
    for instance in REFERENCE:
        result = check_instance(spec, instance, seed=seed)
        report[instance.name] = "unsupported" if result is None else str(result.status)
    return report
