"""Conformance: the kit of :mod:`flexmoe.assign.testing` on every registered built-in
backend (and variant), and the kit itself on a deliberately broken backend.

The contract lives in the kit so third-party backends run the same checks.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flexmoe.assign import (
    Assignment,
    Status,
    available_backends,
    register,
    registered_backends,
    solve,
)
from flexmoe.assign import registry as registry_module
from flexmoe.assign.testing import (
    CHECKS,
    REFERENCE,
    ContractError,
    check_backend,
    conformance_tests,
)

SPECS = [spec for name in available_backends() for spec in registered_backends()[name].specs()]

#: (spec, check) pairs allowed to fail the contract, with the reason. Keep it short.
EXPECTED_FAILURES: dict[tuple[str, str], str] = {}

test_builtin_backend = conformance_tests(*SPECS, expected_failures=EXPECTED_FAILURES)


def test_every_builtin_backend_is_available():
    assert available_backends() == list(registered_backends()), (
        "the project installs every vendor library"
    )


@pytest.mark.parametrize("name", list(registered_backends()))
def test_unknown_option_names_backend_and_option(name):
    with pytest.raises(TypeError, match=f"backend '{name}' does not take option `no_such_option`"):
        solve(REFERENCE[0].problem, backend=name, no_such_option=1)


# -- the kit on a broken backend --------------------------------------------------------


@pytest.fixture
def broken():
    """Registers ``broken``: exact answers through milp, except that it reports a wrong
    objective on 'identity', ignores the seed on ties, claims OPTIMAL for greedy's answer
    (with a writeable x) whenever a time limit is set, and swallows unknown options."""
    saved = dict(registry_module._REGISTRY)
    calls = itertools.count()

    def solve_(problem, *, time_limit=None, seed=None, **ignored):
        if time_limit is not None:
            greedy = solve(problem, "greedy")
            x = np.array(greedy.x)  # writeable
            return Assignment(
                Status.OPTIMAL, x, greedy.objective, greedy.objective, "broken", greedy.loads
            )
        exact = solve(problem, "milp", seed=seed)
        if problem.name == "identity":
            return exact.replace(objective=exact.objective + 1.0)
        if exact.x is not None and np.ptp(problem.utility) == 0:  # ties: a new answer each call
            x = np.roll(exact.x, next(calls), axis=0)
            return Assignment.from_x(problem, x, status=Status.OPTIMAL, bound=exact.bound,
                                     backend="broken")  # fmt: skip
        return exact

    register("broken", solve_, exact=True)
    yield "broken"
    registry_module._REGISTRY.clear()
    registry_module._REGISTRY.update(saved)


def test_a_broken_backend_fails_every_check_it_breaks_not_just_the_first(broken):
    report = check_backend(broken)
    failed = {r.check for r in report.failures}
    assert failed == {
        "reference:identity",
        "determinism",
        "unknown-option",
        "result-contract",
        "time-limit",
        "session",
    }, str(report)
    assert not report.ok and not report
    assert set(report.passed) == set(CHECKS) - failed
    messages = {r.check: r.message for r in report.failures}
    assert "objective: reported 4.0 but recomputed 3.0" in messages["reference:identity"]
    assert "two different assignments" in messages["determinism"]
    assert "`no_such_option` was accepted silently" in messages["unknown-option"]
    assert "x is writeable" in messages["result-contract"]
    assert "claims OPTIMAL at" in messages["time-limit"]
    with pytest.raises(ContractError) as err:
        report.raise_if_failed()
    assert all(check in str(err.value) for check in failed)


def test_expected_failures_are_reported_with_their_reason(broken):
    expected = {
        ("broken", "session"): "identity breaks the session too",
        ("broken", "reference:contested"): "wrongly listed",
        ("other", "time-limit"): "another backend's entry",
    }
    report = check_backend(broken, expected_failures=expected)
    assert report.outcome("session") == "expected failure"
    assert "identity breaks the session too" in next(
        r.message for r in report.results if r.check == "session"
    )
    assert report.outcome("reference:contested") == "unexpected pass"
    assert "reference:contested" in {r.check for r in report.failures}
    with pytest.raises(KeyError, match="no check 'speed'"):
        check_backend(broken, expected_failures={("broken", "speed"): "no such check"})


def test_the_pytest_helper_marks_expected_failures_strict():
    test = conformance_tests("greedy", "flow", expected_failures={("flow", "session"): "why"})
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    params = {p.id: p for p in mark.args[1]}
    assert set(params) == {f"{s}-{c}" for s in ("greedy", "flow") for c in CHECKS}
    (xfail,) = params["flow-session"].marks
    assert xfail.name == "xfail" and xfail.kwargs["reason"] == "why" and xfail.kwargs["strict"]
    assert not params["greedy-session"].marks


def test_unsupported_instances_are_skipped_not_failed():
    report = check_backend("flow")
    assert report.ok, str(report)
    assert report.outcome("reference:storage") == "skipped"
    assert report.outcome("reference:count-budget") == "passed"
