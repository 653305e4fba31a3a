"""A small pool of spawn worker processes that the parent can end at any moment.

:class:`concurrent.futures.ProcessPoolExecutor` waits for running jobs when it shuts
down and gives no way to kill its workers; its ``Manager`` queue is one more process.
Here each worker talks to the parent over its own pipe (jobs down; progress ticks and
results up), ignores SIGINT (a terminal's Ctrl-C reaches the whole process group: the
parent alone decides), dies with its parent, and carries the pool's tag, so that leaving
the pool — finished, failed or :class:`~flexmoe.benchmarks.processes.Interrupted` —
kills every worker and whatever it started, and reaps them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from flexmoe.benchmarks.processes import die_with_parent, kill_tree, new_tag, tagging

__all__ = ["WorkerDied", "WorkerPool"]

#: A job function: ``work(job, tick)``, where ``tick(n)`` reports progress. It runs in a
#: worker, so it must be importable by name (a module-level function).
Work = Callable[[Any, Callable[[int], None]], Any]


class WorkerDied(RuntimeError):
    """A worker process ended while it ran a job (killed, out of memory, a crash)."""


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    job: Any = None


def _serve(conn: Connection, work: Work) -> None:
    """A worker's loop: run jobs until the parent sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()

    def tick(n: int = 1) -> None:
        conn.send(("tick", n))

    while (job := conn.recv()) is not None:
        conn.send(("done", work(job, tick)))


class WorkerPool:
    """`size` spawn processes running `work` on jobs; use it as a context manager.

    Workers start when the first jobs need them, at most `size`, each running jobs one
    after another; a worker that dies is reported (``"died"``) and replaced.
    """

    def __init__(self, size: int, work: Work) -> None:
        self.size = max(1, size)
        self.work = work
        self.tag = new_tag()
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            for worker in self._workers:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
            for worker in self._workers:
                worker.process.join(timeout=5)
        self.close()

    def close(self) -> None:
        """Kill every worker and what it started; reap the workers."""
        for worker in self._workers:
            if worker.process.exitcode is None:  # not reaped yet: its pid is still ours
                kill_tree(worker.process.pid, self.tag)
        kill_tree(None, self.tag)
        for worker in self._workers:
            worker.process.join()
            worker.conn.close()
        self._workers = []

    def run(self, jobs: list[Any]) -> Iterator[tuple[str, Any]]:
        """Yield ``("tick", n)``, ``("done", (job, result))`` and ``("died", (job,
        WorkerDied))`` while `jobs` run, up to `size` at a time."""
        todo = list(reversed(jobs))
        while todo or any(w.job is not None for w in self._workers):
            self._hand_out(todo)
            busy = {w.conn: w for w in self._workers if w.job is not None}
            for conn in wait(list(busy), timeout=0.5):
                yield from self._receive(busy[conn])  # type: ignore[index]

    def _hand_out(self, todo: list[Any]) -> None:
        while todo:
            idle = next((w for w in self._workers if w.job is None), None)
            if idle is None and len(self._workers) < self.size:
                idle = self._start()
            if idle is None:
                return
            idle.job = todo.pop()
            idle.conn.send(idle.job)

    def _receive(self, worker: _Worker) -> Iterator[tuple[str, Any]]:
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            job, worker.job = worker.job, None
            self._workers.remove(worker)
            worker.process.join()
            code = worker.process.exitcode
            yield "died", (job, WorkerDied(f"worker process ended with status {code}"))
            return
        if kind == "tick":
            yield "tick", value
            return
        job, worker.job = worker.job, None
        yield "done", (job, value)

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child, self.work))
        # Ignore SIGINT from birth (a child inherits it) and carry the tag; the parent's
        # own handler comes back at once. The resource tracker, which the first spawn
        # starts, serves this whole process: started before the tag, so it is not ours.
        resource_tracker.ensure_running()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            with tagging(self.tag):
                process.start()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        child.close()
        worker = _Worker(process, parent)
        self._workers.append(worker)
        return worker
