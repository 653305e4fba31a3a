"""Fixtures of the flexmoe-bench tests: test backends as a plugin file, tiny instances.

Imported by the test modules (not a conftest: `--doctest-modules` would import two
modules named `conftest`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from flexmoe.assign import AssignmentProblem, registry, save_problem

#: Test backends, registered by a plugin file the CLI imports in parent and children.
PLUGIN = textwrap.dedent(
    '''
    import time

    import numpy as np

    from flexmoe.assign import Assignment, Status, register


    def favourite(problem, *, time_limit=None, seed=None):
        """Each client its best expert (optimal on the identity instances)."""
        x = np.zeros(problem.shape, bool)
        x[np.arange(problem.n_clients), problem.utility.argmax(axis=1)] = True
        return Assignment.from_x(problem, x, status=Status.FEASIBLE, bound=np.inf,
                                 backend="t_favourite")


    def sleepy(problem, *, time_limit=None, seed=None):
        """Hangs in C code that holds the GIL, as a stuck extension does: the in-process
        guard of a limited solve (flexmoe.assign.deadline) cannot answer for it, so the
        sandbox must kill it."""
        import ctypes

        ctypes.PyDLL(None).sleep(600)


    def liar(problem, *, time_limit=None, seed=None):
        """Claims optimality for an assignment that breaks every load bound."""
        x = np.zeros(problem.shape, bool)
        x[:, 0] = True
        return Assignment.from_x(problem, x, status=Status.OPTIMAL, bound=1e9,
                                 backend="t_liar")


    def hog(problem, *, time_limit=None, seed=None):
        blocks = [np.ones(2**27) for _ in range(64)]  # 64 GiB
        return blocks


    def crash(problem, *, time_limit=None, seed=None):
        raise RuntimeError("deliberate failure")


    def picky(problem, *, time_limit=None, seed=None):
        raise AssertionError("never called: it declines every problem")


    for name, solve in [("t_favourite", favourite), ("t_sleepy", sleepy), ("t_liar", liar),
                        ("t_hog", hog), ("t_crash", crash)]:
        register(name, solve, exact=False, replace=True)
    register("t_picky", picky, exact=False, replace=True,
             unsupported=lambda problem: "`t_picky` solves nothing; use flow")
    '''
)


@pytest.fixture(name="isolated_registry", autouse=True)
def isolated_registry_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends a test's plugin registers vanish after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture(name="plugin")
def plugin_fixture(tmp_path: Path) -> str:
    path = tmp_path / "bench_plugin.py"
    path.write_text(PLUGIN)
    return str(path)


@pytest.fixture(name="instances")
def instances_fixture(tmp_path: Path) -> Path:
    """Two tiny identity-like problems as .npz files."""
    folder = tmp_path / "problems"
    folder.mkdir()
    for n in (3, 4):
        utility = np.eye(n) + 0.1 * np.arange(n)
        problem = AssignmentProblem(utility, max_experts=1, load_min=1, name=f"eye{n}")
        save_problem(folder / f"eye{n}.npz", problem)
    return folder
