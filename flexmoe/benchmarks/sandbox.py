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
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flexmoe.benchmarks.processes import TAG_VARIABLE, kill_tree, new_tag
from flexmoe.benchmarks.records import Outcome

__all__ = ["DEFAULT_STARTUP", "ChildOutcome", "Limits", "SolverJob", "run_isolated", "try_plugins"]

logger = logging.getLogger(__name__)

_POLL = 0.02

#: Seconds a child may take to import the plugins and libraries and load the problem.
DEFAULT_STARTUP = 120.0
_MEMORY_SIGNS = re.compile(r"MemoryError|bad_alloc|Cannot allocate memory|[Oo]ut of memory")


@dataclass(frozen=True)
class SolverJob:
    """What a child process solves; travels as JSON."""

    problem: str
    """Path of the ``.npz`` problem (empty: only import the plugins)."""
    backend: str
    """Backend spec (empty: only import the plugins, answer the backends they add)."""
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
        Seconds allowed to import the plugins and the libraries and to load the problem.
    """

    time_limit: float | None
    grace: float | None = None
    startup: float = DEFAULT_STARTUP

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
    """Run `job` in a fresh Python process; stdout and stderr go to `log`.

    However the run ends — answered, timed out, crashed, or :class:`Interrupted` — the
    child and every process it started are killed and reaped before this returns (or
    re-raises).
    """
    job_path = Path(job.result).with_suffix(".job.json")
    job_path.write_text(job.to_json())
    Path(job.result).unlink(missing_ok=True)
    tag = new_tag()
    read_fd, write_fd = os.pipe()
    command = [sys.executable, "-m", "flexmoe.benchmarks.child", str(job_path), str(write_fd)]
    start = time.monotonic()
    proc = None
    try:
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=_child_env(tag),
            )
        os.close(write_fd)
        write_fd = -1
        killed = _supervise(proc, read_fd, limits)
    finally:
        # The child (a zombie at most: not reaped yet), its descendants, whatever it
        # started in another session: all killed, then the child reaped.
        kill_tree(proc.pid if proc is not None else None, tag)
        status, usage = (0, None) if proc is None else os.wait4(proc.pid, 0)[1:]
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    assert proc is not None  # Popen raised otherwise
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - start
    peak = usage.ru_maxrss / 1024 if usage is not None else float("nan")
    return _outcome(job, killed, status, peak, elapsed, log, limits)


def try_plugins(plugins: tuple[str, ...], limit: float = DEFAULT_STARTUP) -> list[str]:
    """Import `plugins` in a child process first, killed after `limit` seconds.

    A plugin that hangs at import, or starts processes, then cannot hang or outlive the
    caller, which imports the plugins itself only after this returns. Returns the
    backends they register.

    Raises
    ------
    ImportError
        A plugin cannot be imported (the message says which and why), or the import
        did not finish within `limit` seconds.
    """
    if not plugins:
        return []
    with tempfile.TemporaryDirectory(prefix="flexmoe-plugins-") as tmp:
        job = SolverJob(problem="", backend="", result=str(Path(tmp) / "plugins.json"),
                        plugins=plugins)  # fmt: skip
        outcome = run_isolated(job, Limits(None, startup=limit), Path(tmp) / "plugins.log")
    names = ", ".join(repr(p) for p in plugins)
    answer = outcome.answer or {}
    if answer.get("status") == "imported":
        return list(answer.get("backends", []))
    if outcome.status == Outcome.TIMEOUT:
        raise ImportError(f"importing {names} did not finish within {limit:g} s; nothing ran")
    raise ImportError(f"cannot import {names}: {answer.get('message') or outcome.message}")


def _child_env(tag: str) -> dict[str, str]:
    """The parent's environment, with this flexmoe importable in the child, and the tag
    that marks every process of this run."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env[TAG_VARIABLE] = tag
    return env


def _supervise(proc: subprocess.Popen[bytes], read_fd: int, limits: Limits) -> str | None:
    """Wait until `proc` exits or passes its deadline; what it was killed for, if it was.

    The child is not reaped here (``WNOWAIT``): its pid stays ours until the caller has
    killed what it left behind.
    """
    deadline = time.monotonic() + limits.startup
    waiting_ready = True
    while not _exited(proc.pid):
        now = time.monotonic()
        if now >= deadline:
            return "startup" if waiting_ready else "timeout"
        if waiting_ready and _ready(read_fd, min(_POLL, deadline - now)):
            waiting_ready = False
            kill_after = limits.kill_after
            deadline = time.monotonic() + (kill_after if kill_after is not None else 1e12)
        elif not waiting_ready:
            time.sleep(min(_POLL, max(0.0, deadline - now)))
    return None


def _exited(pid: int) -> bool:
    """`pid` (a child) has exited; it stays a zombie until someone waits for it."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None and info.si_pid == pid


def _ready(read_fd: int, timeout: float) -> bool:
    readable, _, _ = select.select([read_fd], [], [], max(0.0, timeout))
    if not readable:
        return False
    if not os.read(read_fd, 16):  # EOF: the child exited before signalling
        time.sleep(timeout)
        return False
    return True


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
