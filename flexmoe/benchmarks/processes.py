"""The processes a benchmark starts, and how every one of them is ended.

A run's child process carries a tag in its environment (:data:`TAG_VARIABLE`), which
every process it starts inherits — also one a plugin backend starts in a new session
(``start_new_session=True``, ``setsid``), where a process-group kill misses it.
:func:`kill_tree` ends the child, its descendants (found through ``/proc``) and every
process with the tag, and reaps those that are children of the caller. The solver child
makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so that what its
solver daemonises stays in its tree while it runs, and asks to be killed when its parent
dies (``PR_SET_PDEATHSIG``); both are Linux-only and do nothing elsewhere. The benchmark
process itself is never made a subreaper: it would adopt every orphan of the process it
runs in (Ray's daemons, in a test session, then never notice that their parent ended).
:func:`end_tagged` ends every process with a tag gracefully (SIGTERM, then SIGSTOP and
SIGKILL), for a tagged group with no single root — the Flower launcher's federations.

:func:`interruptible` turns SIGINT and SIGTERM into :class:`Interrupted`, so that a sweep
ends its children, writes what finished and exits with one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

__all__ = [
    "TAG_VARIABLE",
    "Interrupted",
    "alive",
    "become_subreaper",
    "descendants",
    "die_with_parent",
    "end_tagged",
    "interruptible",
    "kill_tree",
    "new_tag",
    "tagged",
    "tagging",
]

logger = logging.getLogger(__name__)

#: Environment variable whose value marks every process of one run.
TAG_VARIABLE = "FLEXMOE_BENCH_RUN"

_PROC = Path("/proc")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; :attr:`signum` says which.

    A ``BaseException`` like ``KeyboardInterrupt``, so that no ``except Exception``
    in a solver or a plugin swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail = ""
        """What was kept, set by the sweep that caught it on its way out."""

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT)."""
        return 128 + self.signum


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGINT or SIGTERM inside the block (main thread).

    After the first signal, repeats are ignored until the block ends, so that the
    clean-up (ending children, writing finished rows) runs to its end. A signal this
    process ignores (SIGINT in a shell's background job, ``nohup``) stays ignored.
    Outside the main thread (where Python cannot set handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = tuple(s for s in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(s) is not signal.SIG_IGN)  # fmt: skip

    def handler(signum: int, frame: FrameType | None) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def tagging(tag: str) -> Iterator[None]:
    """Processes started inside the block carry `tag` (in this process's environment
    meanwhile, which a started process inherits)."""
    previous = os.environ.get(TAG_VARIABLE)
    os.environ[TAG_VARIABLE] = tag
    try:
        yield
    finally:
        if previous is None:
            del os.environ[TAG_VARIABLE]
        else:
            os.environ[TAG_VARIABLE] = previous


def new_tag() -> str:
    """A fresh value for :data:`TAG_VARIABLE`."""
    return uuid.uuid4().hex


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where there is none (not Linux)."""
    name = ctypes.util.find_library("c")
    if not name or not _PROC.is_dir():
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants of this process are re-parented to it (Linux). For a
    short-lived process that owns all it starts (the solver child), never a host."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> bool:
    """This process gets SIGKILL when its parent dies (Linux)."""
    return _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), None
    when `pid` is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of `pid`, None when it is gone."""
    fields = _fields(pid)
    return None if fields is None else (fields[0], int(fields[1]))


def _pids() -> list[int]:
    try:
        return [int(entry.name) for entry in _PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """`pid` exists and is not a zombie (a zombie has ended; only its entry is left)."""
    stat = _stat(pid)
    if stat is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _PROC.is_dir()
    return stat[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children, their children, ...)."""
    return _descendants([pid])


def _descendants(roots: list[int]) -> list[int]:
    """Every live descendant of any of `roots` (one pass over ``/proc``)."""
    children: dict[int, list[int]] = {}
    for child in _pids():
        stat = _stat(child)
        if stat is not None and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append(child)
    found, todo = [], [child for root in roots for child in children.get(root, [])]
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _started(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot), None when it is gone: with the pid,
    it names one process even after the pid is reused."""
    fields = _fields(pid)
    return None if fields is None else int(fields[19])


def tagged(tag: str, variable: str = TAG_VARIABLE) -> list[int]:
    """Live processes, other than this one, whose environment holds ``variable=tag``
    (Linux ``/proc``; elsewhere none are found)."""
    needle = f"{variable}={tag}".encode()
    found = []
    for pid in _pids():
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(pid) and pid != os.getpid():
            found.append(pid)
    return found


def end_tagged(
    tag: str,
    variable: str = TAG_VARIABLE,
    *,
    grace: float = 3.0,
    settle: float = 0.5,
    timeout: float = 30.0,
) -> list[int]:
    """End every process tagged `tag` (``variable=tag``) and every descendant of one,
    gracefully first.

    A descendant counts even when its own environment does not show the tag: a process
    that retitles itself (``setproctitle``, as Ray's agents do) overwrites what
    ``/proc/<pid>/environ`` reads, and one may start with an environment of its own. Once
    seen, a process stays a target until it ends, also after its parent has gone.
    SIGTERM for `grace` seconds; then each round SIGSTOP to every one left (a stopped
    process cannot fork) and SIGKILL. It returns once none has been seen for `settle`
    seconds — one that a parent forked just before it ended is still found — or after
    `timeout` seconds, logging the pids still there. Those that are this process's
    children are reaped. Returns the pids it signalled.
    """
    seen: dict[int, int | None] = {}  # pid → when it started
    signalled: set[int] = set()

    def live() -> list[int]:
        return [p for p, began in seen.items()
                if p != os.getpid() and _started(p) == began and alive(p)]  # fmt: skip

    start = time.monotonic()
    quiet_since: float | None = None
    while (now := time.monotonic()) - start < timeout:
        found = tagged(tag, variable)
        for pid in (*found, *_descendants(found)):
            seen.setdefault(pid, _started(pid))
        pids = live()
        if not pids:
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= settle:
                break
        else:
            quiet_since = None
            graceful = now - start < grace
            for sig in (signal.SIGTERM,) if graceful else (signal.SIGSTOP, signal.SIGKILL):
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            signalled.update(pids)
        time.sleep(0.05)
    else:
        logger.warning("processes tagged %s=%s (or descended from one) still running after "
                       "%.0f s: %s", variable, tag, timeout, live())  # fmt: skip
    _reap(signalled, block=False)
    return sorted(signalled)


def kill_tree(pid: int | None, tag: str | None = None, *, timeout: float = 2.0) -> list[int]:
    """SIGKILL `pid`, its process group, its descendants and every process tagged `tag`.

    Repeats until none is left (a process may fork while it is being killed) or
    `timeout` seconds have passed, then reaps those that are children of this process
    (only direct children can be); `pid` itself is left for its caller to reap.
    Returns the pids it signalled.
    """
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        tree = descendants(pid) if pid is not None else []
        targets = set(tree) | set(tagged(tag) if tag else ())
        targets.discard(os.getpid())
        if not targets or time.monotonic() > deadline:
            break
        for target in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGKILL)
        killed.extend(targets)
        time.sleep(0.01)
    _reap(set(killed) - {pid} if pid is not None else set(killed))
    return killed


def _reap(pids: set[int], *, block: bool = True) -> None:
    """Wait for those of `pids` that are this process's children (never anyone else's);
    without `block`, reap only those that have ended."""
    for pid in pids:
        stat = _stat(pid)
        if stat is not None and stat[1] == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0 if block else os.WNOHANG)
