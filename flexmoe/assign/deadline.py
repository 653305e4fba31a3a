"""Time limits as promises: :func:`flexmoe.assign.solve` returns by its limit + 1 s.

A vendor solver does not always honour its own limit (HiGHS 1.16 spent 10 s in one
root-node separation round of a 1 s solve, never calling its interrupt callback), nor
does a Python loop that calls it several times, nor a compile step. So a limited solve
runs its backend in a worker thread, and :func:`within` waits for it until the limit:

1. the backend returns in time: its answer, as it is;
2. it has not: :meth:`Progress.cancel` asks it to stop (the ``milp`` backend interrupts
   HiGHS and leaves its loop, ``convex`` skips the rounding), and waits up to
   :data:`STOP_WAIT` seconds more;
3. it still has not: the worker is left to finish on its own (a daemon thread, told to
   stop; nothing it does later reaches the caller) and the answer is the best
   assignment the backend reported so far through :class:`Progress` — ``FEASIBLE``
   with the best bound it proved, else ``LIMIT_NO_SOLUTION``; never ``OPTIMAL``.

A backend running under a limit reads the :class:`Progress` of its solve with
:func:`current` (a no-op one otherwise) and reports to it as it goes: feasible
assignments with :meth:`~Progress.offer`, proven bounds with :meth:`~Progress.tighten`,
how to interrupt it with :meth:`~Progress.on_cancel`, and :meth:`~Progress.check` in
its own long loops. Reports about another problem (a restricted one, say) are ignored,
so a backend may call its siblings freely.

An abandoned worker stops at its next cancellation point; a vendor step that has none
(HiGHS's root separation, CVXPY's compilation, PuLP writing its model) runs to its end
in the background. Those that hold the interpreter (the Python ones) slow the solves
that follow in the same process: ``benchmarks/time_limits.py`` measures both cases.

>>> import time, numpy as np
>>> from flexmoe.assign import AssignmentProblem
>>> p = AssignmentProblem(np.eye(2), max_experts=1)
>>> def slow():
...     current().offer(p, np.eye(2, dtype=bool), source="a first guess")
...     time.sleep(2.0)
>>> status, found = within(p, 0.1, slow)
>>> status, found.x.astype(int).tolist(), found.source
('abandoned', [[1, 0], [0, 1]], 'a first guess')
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from flexmoe.assign.problem import AssignmentProblem, Bool
from flexmoe.assign.verify import objective_value, verify

__all__ = [
    "EXIT_WAIT",
    "PROMISE",
    "STOP_WAIT",
    "Cancelled",
    "Found",
    "Progress",
    "current",
    "seconds_left",
    "within",
]

#: What :func:`flexmoe.assign.solve` promises: it returns by ``time_limit + PROMISE``.
PROMISE = 1.0
#: Seconds a backend asked to stop at its limit gets to return on its own; the rest of
#: :data:`PROMISE` is for building and verifying the answer.
STOP_WAIT = 0.25
#: Seconds an exiting interpreter waits for abandoned workers still inside a vendor
#: solver: one that returns into a finalizing interpreter aborts the process
#: ("terminate called without an active exception", seen with HiGHS), so the exit
#: waits for them while the interpreter is whole. They were told to stop, and each got
#: its time limit: they end soon after it, save for a vendor step that overruns.
EXIT_WAIT = 60.0

T = TypeVar("T")
log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised by :meth:`Progress.check` in a solve that was asked to stop: it ends
    without an answer of its own, and :func:`within` answers from its reports."""


@dataclass(frozen=True)
class Found:
    """The best a solve reported before it was abandoned: an assignment (or None), its
    objective, the best bound proven (``inf`` if none) and where the assignment came
    from."""

    x: Bool | None
    objective: float
    bound: float
    source: str


class Progress:
    """What a time-limited solve of `problem` has found so far; thread-safe.

    Only reports about `problem` itself (the same object) count; an assignment is kept
    when the independent checker finds it feasible and it beats the best so far.
    """

    def __init__(self, problem: AssignmentProblem | None):
        self.problem = problem
        self._lock = threading.Lock()
        self._x: Bool | None = None
        self._value = -math.inf
        self._bound = math.inf
        self._source = ""
        self._hooks: list[Callable[[], Any]] = []
        self._cancelled = threading.Event()
        self._closed = False

    @property
    def cancelled(self) -> bool:
        """Whether the solve was asked to stop (its limit has passed)."""
        return self._cancelled.is_set()

    def offer(self, problem: AssignmentProblem, x: ArrayLike | None, *, source: str) -> None:
        """Report a candidate assignment of `problem` (found by `source`; None: none)."""
        if x is None or problem is not self.problem or self._closed:
            return
        x = np.array(x, dtype=bool)
        if not verify(problem, x):
            return
        value = objective_value(problem, x)
        with self._lock:
            if value > self._value:
                self._x, self._value, self._source = x, value, source

    def tighten(self, problem: AssignmentProblem, bound: float) -> None:
        """Report a proven upper bound on the optimum of `problem`."""
        if problem is self.problem and not self._closed and not math.isnan(bound):
            with self._lock:
                self._bound = min(self._bound, float(bound))

    def check(self) -> None:
        """Raise :class:`Cancelled` if the solve was asked to stop: a cancellation point
        for a backend's own long Python loops (model building, say)."""
        if self.cancelled:
            raise Cancelled("the time limit passed and the solve was asked to stop")

    def on_cancel(self, hook: Callable[[], Any]) -> None:
        """Call `hook` (no arguments) when the solve is asked to stop; at once if it
        already was."""
        if self.problem is None:
            return
        with self._lock:
            self._hooks.append(hook)
        if self.cancelled:
            _call(hook)

    def cancel(self) -> None:
        """Ask the solve to stop: set :attr:`cancelled` and call every hook."""
        self._cancelled.set()
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            _call(hook)

    def close(self) -> Found:
        """Stop listening (later reports are ignored) and return the best found."""
        with self._lock:
            self._closed = True
            return Found(self._x, self._value, self._bound, self._source)


def _call(hook: Callable[[], Any]) -> None:
    try:
        hook()
    except Exception:  # a failing hook must not break the caller's answer
        log.exception("a cancel hook of a time-limited solve failed")


_CURRENT: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "flexmoe_assign_progress", default=None
)
#: What :func:`current` gives outside a time-limited solve: it ignores every report.
_NOWHERE = Progress(None)


def current() -> Progress:
    """The :class:`Progress` of the time-limited solve running in this thread (one that
    ignores every report when there is none)."""
    return _CURRENT.get() or _NOWHERE


def within(
    problem: AssignmentProblem, time_limit: float, call: Callable[[], T]
) -> tuple[str, T | Found]:
    """Run `call` (a solve of `problem`) in a worker thread for at most `time_limit`
    seconds plus :data:`STOP_WAIT` (see the module docstring).

    Returns ``("done", what call returned)``, or ``("abandoned", Found)`` with the best
    the solve reported through :func:`current`. An exception of `call` is raised here.
    """
    progress = Progress(problem)
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        token = _CURRENT.set(progress)
        try:
            box["value"] = call()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err
        finally:
            _CURRENT.reset(token)
            done.set()

    worker = threading.Thread(target=work, name="flexmoe-solve", daemon=True)
    worker.start()
    if not done.wait(time_limit):
        progress.cancel()
        done.wait(STOP_WAIT)
    if not done.is_set() or isinstance(box.get("error"), Cancelled):
        log.info("a solve gave no answer %.3g s after its limit: abandoned", STOP_WAIT)
        _abandon(worker)
        return "abandoned", progress.close()
    if "error" in box:
        raise box["error"]
    return "done", box["value"]


#: Abandoned workers that may still run, joined at exit (:func:`_join_at_exit`).
_ABANDONED: set[threading.Thread] = set()
_EXIT_HOOK: list[bool] = []


def _abandon(worker: threading.Thread) -> None:
    if worker.is_alive():
        _ABANDONED.add(worker)
    if not _EXIT_HOOK:  # registered late, so it runs before earlier exit handlers
        atexit.register(_join_at_exit)
        _EXIT_HOOK.append(True)


def _join_at_exit() -> None:
    """Wait (up to :data:`EXIT_WAIT` s) for abandoned workers, before the interpreter
    finalizes: see :data:`EXIT_WAIT`."""
    end = time.monotonic() + EXIT_WAIT
    for worker in list(_ABANDONED):
        worker.join(max(0.0, end - time.monotonic()))
    alive = sum(worker.is_alive() for worker in _ABANDONED)
    if alive:
        log.warning("%d abandoned solve(s) still running at exit after %g s", alive, EXIT_WAIT)


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until `deadline` (a :func:`time.perf_counter` value), at least 1 ms; None
    without one."""
    return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
