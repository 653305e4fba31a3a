"""Conformance: every registered backend (and variant) on every reference instance.

The contract lives in :mod:`flexmoe.assign.testing` so third-party backends can run it too.
"""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign import Assignment, Status, available_backends, registered_backends, solve
from flexmoe.assign.testing import REFERENCE, check_instance

SPECS = [spec for name in available_backends() for spec in registered_backends()[name].specs()]

#: (spec, instance) pairs allowed to fail the contract, with the reason. Keep it short.
EXPECTED_FAILURES: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("instance", REFERENCE, ids=lambda r: r.name)
@pytest.mark.parametrize("spec", SPECS)
def test_reference_instance(spec, instance):
    reason = EXPECTED_FAILURES.get((spec, instance.name))
    if reason:
        pytest.xfail(reason)
    if check_instance(spec, instance) is None:
        pytest.skip(f"{spec} declares {instance.name!r} outside its structure")


def test_every_builtin_backend_is_available():
    assert available_backends() == list(registered_backends()), (
        "the project installs every vendor library"
    )


@pytest.mark.parametrize("spec", SPECS)
def test_same_seed_same_answer(spec):
    problem = REFERENCE[1].problem
    first = solve(problem, backend=spec, seed=3)
    again = solve(problem, backend=spec, seed=3)
    assert first.status == again.status
    if first.x is not None:
        np.testing.assert_array_equal(first.x, again.x)


@pytest.mark.parametrize("spec", SPECS)
def test_result_contract(spec, tmp_path):
    problem = REFERENCE[1].problem
    result = solve(problem, backend=spec, time_limit=30)
    assert result.backend.partition(":")[0] == spec.partition(":")[0]
    assert result.wall_time >= result.solve_time >= 0 and result.build_time >= 0
    assert result.status in set(Status)
    if result.x is not None:
        assert result.x.dtype == np.bool_ and result.x.shape == problem.shape
        assert not result.x.flags.writeable
        np.testing.assert_allclose(result.loads, result.x.sum(axis=0))
    result.save(tmp_path / "r.json")
    back = Assignment.load(tmp_path / "r.json")
    assert back.status == result.status and back.backend == result.backend


@pytest.mark.parametrize("name", list(registered_backends()))
def test_unknown_option_names_backend_and_option(name):
    with pytest.raises(TypeError, match=f"backend '{name}' does not take option `no_such_option`"):
        solve(REFERENCE[0].problem, backend=name, no_such_option=1)
