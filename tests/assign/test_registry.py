"""The registry and `solve()`: names, options, availability, and the verifier on every result."""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign import (
    Assignment,
    AssignmentProblem,
    BackendUnavailableError,
    Status,
    UnknownBackendError,
    available_backends,
    exact_backends,
    get_backend,
    register,
    registered_backends,
    solve,
)
from flexmoe.assign import registry as registry_module


@pytest.fixture
def scratch_registry():
    """Register throw-away backends without leaking them into other tests."""
    saved = dict(registry_module._REGISTRY)
    yield
    registry_module._REGISTRY.clear()
    registry_module._REGISTRY.update(saved)


@pytest.fixture
def problem():
    return AssignmentProblem(
        np.array([[3.0, 1.0], [2.0, 0.5], [1.0, 2.0]]), max_experts=1, load_min=1
    )


def constant(x_rows, *, status=Status.FEASIBLE, objective=None, bound=np.inf):
    """A backend that always answers `x_rows` (optionally lying about the objective)."""

    def solve_(problem, *, time_limit=None, seed=None):
        x = np.zeros(problem.shape, bool)
        for n, row in enumerate(x_rows):
            x[n, row] = True
        result = Assignment.from_x(problem, x, status=status, bound=bound, backend="fake")
        return result if objective is None else result.replace(objective=objective)

    return solve_


def test_builtin_order_and_derived_lists():
    names = list(registered_backends())
    assert names == [n for n in registry_module.BUILTIN], "registry order is BUILTIN order"
    assert exact_backends() == [n for n, b in registered_backends().items() if b.exact]
    assert set(available_backends()) <= set(names)


def test_unknown_backend_lists_valid_ones(problem):
    with pytest.raises(
        UnknownBackendError, match=r"unknown backend 'simplex'; valid backends: auto"
    ):
        solve(problem, backend="simplex")
    with pytest.raises(UnknownBackendError):
        get_backend("simplex")


def test_option_a_backend_does_not_take(problem, scratch_registry):
    register("fake", constant([[0], [1], [0]]), exact=False)
    with pytest.raises(
        TypeError,
        match=r"backend 'fake' does not take option `gap`; it takes: "
        r"time_limit, seed",
    ):
        solve(problem, backend="fake", gap=0.1)
    with pytest.raises(UnknownBackendError, match="backend 'fake' has no variants; got 'fake:x'"):
        solve(problem, backend="fake:x")


def test_register_refuses_duplicates_and_bad_names(scratch_registry):
    register("fake", constant([]), exact=False)
    with pytest.raises(ValueError, match="already registered"):
        register("fake", constant([]), exact=False)
    for bad in ("", "auto", "a:b"):
        with pytest.raises(ValueError, match="backend name"):
            register(bad, constant([]), exact=False)


def test_missing_vendor_module(problem, scratch_registry):
    register("vendor", constant([]), exact=True, required_modules=("no_such_module_xyz",))
    assert "vendor" not in available_backends()
    with pytest.raises(BackendUnavailableError, match="needs no_such_module_xyz"):
        solve(problem, backend="vendor")


def test_verifier_turns_a_false_claim_into_error(problem, scratch_registry):
    register("liar", constant([[0], [0], [0]], status=Status.OPTIMAL, bound=6.0), exact=True)
    result = solve(problem, backend="liar")
    assert result.status is Status.ERROR
    assert "verifier rejected the fake answer: load_min: expert 1 has 0 < 1" in result.message
    register("wrong-objective", constant([[0], [1], [0]], objective=99.0), exact=False)
    assert "objective: reported 99.0" in solve(problem, backend="wrong-objective").message
    register("bad-bound", constant([[0], [1], [0]], status=Status.OPTIMAL, bound=1.0), exact=True)
    assert "exceeds the claimed upper bound" in solve(problem, backend="bad-bound").message
    unchecked = solve(problem, backend="liar", check=False)
    assert unchecked.status is Status.OPTIMAL


def test_relaxed_answers_keep_their_violations(problem, scratch_registry):
    register("relaxed", constant([[0], [0], [0]], status=Status.RELAXED), exact=False)
    result = solve(problem, backend="relaxed")
    assert result.status is Status.RELAXED and not result.has_solution
    assert result.message.startswith("violates load_min: expert 1 has 0 < 1")
    register("lucky", constant([[0], [1], [0]], status=Status.RELAXED), exact=False)
    assert solve(problem, backend="lucky").status is Status.FEASIBLE


def test_infeasible_is_a_status_with_reason(problem):
    p = problem.replace(load_min=2)
    result = solve(p, backend=available_backends()[0])
    assert result.status is Status.INFEASIBLE and result.x is None
    assert result.message == "Σ max_experts = 3 < Σ load_min = 4 (every holder counts 1)"


def test_bad_arguments(problem):
    with pytest.raises(TypeError, match="`problem` must be an AssignmentProblem; got ndarray"):
        solve(np.eye(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`time_limit` must be a positive number of seconds"):
        solve(problem, time_limit=0)
