"""Shared by the Flower tests (a module, not a conftest: ``--doctest-modules`` would
import two modules named ``conftest``).

:class:`LoopbackGrid` is a Flower ``Grid`` whose nodes are real ``ClientApp`` objects
run in this process, one ``Context`` each, as Flower's simulation runtime runs them —
without Ray, so that the strategy's behaviour on odd grids (more nodes, fewer, crashed,
lost, late) is tested in milliseconds. The same behaviours run on Flower's simulation
runtime in the slow tests.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")
    from flwr.app import Context, Error, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid
    from flwr.supercore.task_identity import TaskIdentity

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "flower-app"
TUTORIAL = Path(__file__).resolve().parent / "tutorial_app"
if str(TUTORIAL) not in sys.path:
    sys.path.insert(0, str(TUTORIAL))


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread, as each simulated client (one CPU): bit-identical training."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def task_identity() -> Iterator[None]:
    """The identity Flower's runtime gives a ServerApp's process (messages read it),
    restored afterwards."""
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class LoopbackGrid(Grid):
    """Nodes in this process: node id → (ClientApp, Context).

    Parameters
    ----------
    app : ClientApp
    n_nodes : int
        Nodes with ``partition-id`` 0 .. n − 1 of ``num-partitions`` = n.
    run_config : dict
    lost : callable, optional
        ``lost(partition_id, message) -> bool``: that message never gets a reply.
    """

    def __init__(
        self,
        app: ClientApp,
        n_nodes: int,
        run_config: dict[str, Any],
        *,
        lost: Callable[[int, Message], bool] | None = None,
        seed: int = 0,
    ) -> None:
        self.app, self.run_config = app, run_config
        self.lost = lost or (lambda partition, message: False)
        self.rng = random.Random(seed)
        self.contexts: dict[int, Context] = {}
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self.add_nodes(n_nodes)

    def add_nodes(self, n: int, partitions: int | None = None) -> list[int]:
        """`n` more nodes (``num-partitions`` = `partitions`, default: every node)."""
        start = len(self.contexts)
        total = partitions or start + n
        ids = []
        for i in range(start, start + n):
            node = self.rng.getrandbits(62) + 1
            config = {"partition-id": i, "num-partitions": total}
            self.contexts[node] = Context(1, node, config, RecordDict(), dict(self.run_config))
            ids.append(node)
        return ids

    def remove(self, node: int) -> None:
        del self.contexts[node]

    def partition(self, node: int) -> int:
        return int(self.contexts[node].node_config["partition-id"])

    # -- Grid --------------------------------------------------------------------------

    def set_run(self, run: Any) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.sent.append(message)
            context = self.contexts.get(message.metadata.dst_node_id)
            if context is None or self.lost(self.partition(message.metadata.dst_node_id), message):
                continue
            try:
                reply = self.app(message, context)
            except Exception as err:  # Flower turns a ClientApp's exception into this
                reply = Message(Error(code=0, reason=f"{type(err).__name__}: {err}"),
                                reply_to=message)  # fmt: skip
            replies.append(reply)
        self.replies += replies
        return replies


MARK = "FLEXMOE_TEST_MARK"


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries ``MARK=mark``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                if (entry / "stat").read_text().rpartition(")")[2].split()[0] not in "ZX":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def describe(pids: list[int]) -> str:
    """`pids` with each one's state, parent and command line (what was left, and whose)."""
    rows = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            rows.append(f"{pid} (state {stat[0]}, parent {stat[1]}): {command[:300]}")
        except OSError:
            rows.append(f"{pid} (gone)")
    return "; ".join(rows)


class Sandbox:
    """A HOME, a short TMPDIR (Ray's socket paths) and a mark, for one test's commands."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.tmp = Path(tempfile.mkdtemp(prefix="fxt-", dir="/tmp"))
        self.mark = uuid.uuid4().hex
        self.env = {**os.environ, "HOME": str(self.home), "TMPDIR": str(self.tmp),
                    MARK: self.mark, "PYTHONPATH": os.pathsep.join(
                        [str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        self.env.pop("FLWR_HOME", None)

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flexmoe.flower", *args], env=self.env,
                              cwd=self.home, capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[str]:
        """:meth:`run` without waiting for it."""
        return subprocess.Popen([sys.executable, "-m", "flexmoe.flower", *args], env=self.env,
                                cwd=self.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip

    def end(self) -> None:
        """SIGKILL every live process with this sandbox's mark."""
        for pid in set(marked(self.mark)) - {os.getpid()}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def assert_clean(self) -> None:
        deadline = time.monotonic() + 10
        while (left := marked(self.mark)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes left running: {describe(left)}"
        assert list(self.home.iterdir()) == [], "written under HOME"
        assert list(self.tmp.iterdir()) == [], "left in the temporary folder"
