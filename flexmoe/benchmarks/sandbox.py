"""Run one backend on one instance in a child process, under a time and a memory limit.

The child (:mod:`flexmoe.benchmarks.child`) lowers its address-space limit, imports the
plugins, loads the ``.npz`` problem and the backend's libraries, then signals "ready"
on a pipe; only then does the solve clock of the parent start. A child still running
``time_limit + grace`` seconds after "ready" is killed with its whole process group
and recorded as a timeout; its peak memory comes from ``wait4``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flexmoe.benchmarks.records import Outcome

__all__ = ["ChildOutcome", "Limits", "SolverJob", "run_isolated"]

logger = logging.getLogger(__name__)

_POLL = 0.02
_MEMORY_SIGNS = re.compile(r"MemoryError|bad_alloc|Cannot allocate memory|[Oo]ut of memory")


@dataclass(frozen=True)
class SolverJob:
    """What a child process solves; travels as JSON."""

    problem: str
    """Path of the ``.npz`` problem."""
    backend: str
    result: str
    """Path where the child writes its JSON answer."""
    time_limit: float | None = None
    seed: int | None = None
    memory_limit_gib: float | None = None
    plugins: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SolverJob:
        data = json.loads(text)
        data["plugins"] = tuple(data.get("plugins", ()))
        return cls(**data)


@dataclass(frozen=True)
class Limits:
    """When the parent kills a child.

    Attributes
    ----------
    time_limit : float, optional
        Seconds the solver is given; None waits without limit.
    grace : float, optional
        Seconds past `time_limit` before the kill; default ``max(2, time_limit / 2)``.
    startup : float
        Seconds allowed to import libraries and load the problem.
    """

    time_limit: float | None
    grace: float | None = None
    startup: float = 120.0

    @property
    def kill_after(self) -> float | None:
        """Seconds after "ready" at which the child is killed."""
        if self.time_limit is None:
            return None
        grace = max(2.0, self.time_limit / 2) if self.grace is None else self.grace
        return self.time_limit + grace


@dataclass(frozen=True)
class ChildOutcome:
    """What the parent saw of one child."""

    answer: dict[str, Any] | None
    """The child's JSON answer, or None when it wrote none (killed, crashed)."""
    status: str | None
    """An :class:`Outcome` when the parent decided it (timeout, memory, crash)."""
    message: str
    peak_mib: float
    elapsed: float


def run_isolated(job: SolverJob, limits: Limits, log: Path) -> ChildOutcome:
    """Run `job` in a fresh Python process; stdout and stderr go to `log`."""
    job_path = Path(job.result).with_suffix(".job.json")
    job_path.write_text(job.to_json())
    Path(job.result).unlink(missing_ok=True)
    read_fd, write_fd = os.pipe()
    command = [sys.executable, "-m", "flexmoe.benchmarks.child", str(job_path), str(write_fd)]
    start = time.monotonic()
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
            env=_child_env(),
        )
    os.close(write_fd)
    try:
        killed, status, usage = _supervise(proc, read_fd, limits)
    finally:
        os.close(read_fd)
    elapsed = time.monotonic() - start
    peak = usage.ru_maxrss / 1024 if usage is not None else float("nan")
    return _outcome(job, killed, status, peak, elapsed, log, limits)


def _child_env() -> dict[str, str]:
    """The parent's environment, with this flexmoe importable in the child."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _supervise(
    proc: subprocess.Popen[bytes], read_fd: int, limits: Limits
) -> tuple[str | None, int, Any]:
    """Wait for `proc`, killing it past its deadline: (killed-for, wait status, rusage)."""
    deadline = time.monotonic() + limits.startup
    waiting_ready = True
    killed = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        if now >= deadline:
            killed = "startup" if waiting_ready else "timeout"
            _kill_group(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            break
        if waiting_ready and _ready(read_fd, min(_POLL, deadline - now)):
            waiting_ready = False
            kill_after = limits.kill_after
            deadline = time.monotonic() + (kill_after if kill_after is not None else 1e12)
        elif not waiting_ready:
            time.sleep(min(_POLL, max(0.0, deadline - now)))
    proc.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(proc.pid)  # grandchildren a solver may have left behind
    return killed, status, usage


def _ready(read_fd: int, timeout: float) -> bool:
    readable, _, _ = select.select([read_fd], [], [], max(0.0, timeout))
    if not readable:
        return False
    if not os.read(read_fd, 16):  # EOF: the child exited before signalling
        time.sleep(timeout)
        return False
    return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(
    job: SolverJob,
    killed: str | None,
    status: int,
    peak: float,
    elapsed: float,
    log: Path,
    limits: Limits,
) -> ChildOutcome:
    """Turn what happened to the child into an answer or an :class:`Outcome`."""
    result = Path(job.result)
    if killed is None and result.exists():
        return ChildOutcome(json.loads(result.read_text()), None, "", peak, elapsed)
    tail = _tail(log)
    if killed == "timeout":
        message = f"killed after {limits.kill_after:g} s (time limit {limits.time_limit:g} s)"
        return ChildOutcome(None, Outcome.TIMEOUT, message, peak, elapsed)
    if killed == "startup":
        message = f"killed: not ready to solve after {limits.startup:g} s of start-up"
        return ChildOutcome(None, Outcome.TIMEOUT, message, peak, elapsed)
    code = os.waitstatus_to_exitcode(status)
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    if _MEMORY_SIGNS.search(tail) or code == -signal.SIGKILL:
        limit = job.memory_limit_gib
        where = f" (memory limit {limit:g} GiB)" if limit else ""
        return ChildOutcome(None, Outcome.MEMORY, f"{how}{where}: {tail}", peak, elapsed)
    return ChildOutcome(None, Outcome.CRASH, f"{how}: {tail}", peak, elapsed)


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])[-600:]
