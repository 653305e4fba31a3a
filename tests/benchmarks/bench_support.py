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
    import os
    import subprocess
    import time
    from pathlib import Path

    import numpy as np

    from flexmoe.assign import Assignment, Status, register

    HERE = Path(__file__).parent


    def _record(name, *pids):
        """Say which processes a backend runs in: HERE/pids/<name>-<pid>.pid."""
        (HERE / "pids").mkdir(exist_ok=True)
        path = HERE / "pids" / f"{name}-{os.getpid()}.pid"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(" ".join(str(p) for p in (os.getpid(), *pids)))
        tmp.replace(path)


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


    def gate(problem, *, time_limit=None, seed=None):
        """Waits while HERE/gate exists (the test holds it shut), then answers."""
        _record("gate")
        while (HERE / "gate").exists():
            time.sleep(0.02)
        return favourite(problem)


    def _daemon():
        """A process in a session of its own: a process-group kill misses it."""
        return subprocess.Popen(["sleep", "600"], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


    def daemon(problem, *, time_limit=None, seed=None):
        """Leaves a daemon behind and answers."""
        _record("daemon", _daemon().pid)
        return favourite(problem)


    def daemon_hang(problem, *, time_limit=None, seed=None):
        """Leaves a daemon behind and hangs."""
        _record("daemon_hang", _daemon().pid)
        time.sleep(600)


    def picky(problem, *, time_limit=None, seed=None):
        raise AssertionError("never called: it declines every problem")


    for name, solve in [("t_favourite", favourite), ("t_sleepy", sleepy), ("t_liar", liar),
                        ("t_hog", hog), ("t_crash", crash), ("t_gate", gate),
                        ("t_daemon", daemon), ("t_daemon_hang", daemon_hang)]:
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


def recorded_pids(plugin: str, name: str) -> list[list[int]]:
    """The processes each call of plugin backend `name` ran in (and started)."""
    folder = Path(plugin).parent / "pids"
    return [[int(p) for p in f.read_text().split()] for f in sorted(folder.glob(f"{name}-*.pid"))]


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
