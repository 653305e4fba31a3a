"""A Flower strategy (Message API) around flexmoe's own round driver.

:class:`FlexMoEStrategy` delegates every decision to
:class:`~flexmoe.fedloop.MoEStrategy` and its per-round
:class:`~flexmoe.fedloop.Round` — the same code the in-process loop runs, fed by the
same seeded generator in the same order — so both engines give the same assignments
and the same :class:`~flexmoe.fedloop.RoundRecord` for the same seed. Each of Flower's
four callbacks is one step of the round; what is added here is only transport: records
in and out of Flower messages, and the mapping from Flower node ids to client indices (a
``query`` hello at the start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from flexmoe.fedloop.history import History
from flexmoe.fedloop.loop import RoundHook
from flexmoe.fedloop.strategy import MoEStrategy, Round, ServerState
from flexmoe.flower._flwr import (
    ArrayRecord,
    ConfigRecord,
    Grid,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
    Strategy,
    require_flwr,
)
from flexmoe.flower.protocol import from_record, plan_to_config, reply_from_content, to_record
from flexmoe.models import shared_keys

__all__ = ["FlexMoEStrategy", "StoppableGrid"]

log = logging.getLogger(__name__)

#: The splits a client evaluates on, as its evaluation record names them.
SPLITS = ("test", "val", "pooled_test", "pooled_val")


class FlexMoEStrategy(Strategy):
    """Load-balanced expert assignment for Flower: one assignment solve per round.

    Each round the wrapped strategy samples participants and solves the assignment with
    :mod:`flexmoe.assign` (any registered backend); each node is sent ψ and only its
    assigned experts plus their ids; each expert is averaged over its holders weighted
    by routed samples; the fitness is updated from the per-expert feedback. Clients keep
    their gates; evaluation asks every client for its personalised accuracy.

    Parameters
    ----------
    strategy : MoEStrategy
        The server (method, capacities, budgets, fitness, sampling, seed); build it with
        ``MoEStrategy(config, federation_spec)``, as ``flexmoe.fedloop.run`` does.
    history : History, optional
        Receives one record per round (as ``flexmoe.fedloop.run`` writes them).
    hooks : sequence of callables
        ``hook(round, state, history)`` after every round.
    node_timeout : float
        Seconds to wait for every client's node to connect.

    Notes
    -----
    Node ↔ client: before round 1 every node is sent a ``query`` message and answers
    with its client index (see :mod:`flexmoe.flower.protocol`).
    """

    def __init__(
        self,
        strategy: MoEStrategy,
        *,
        history: History | None = None,
        hooks: Sequence[RoundHook] = (),
        node_timeout: float = 120.0,
    ) -> None:
        require_flwr()
        self.moe = strategy
        self.n_clients = strategy.n_clients
        self.history = history if history is not None else History({})
        self.hooks = list(hooks)
        self.node_timeout = node_timeout
        self.state: ServerState | None = None
        self.nodes: dict[int, int] = {}
        self.stopped = threading.Event()
        self._round: Round | None = None

    def summary(self) -> None:
        """Log the configuration."""
        config = self.moe.config
        log.info("FlexMoEStrategy: method %s, backend %s, %d clients, %d experts",
                 config.method, config.backend, self.n_clients, self.moe.n_experts)  # fmt: skip

    def stop(self) -> None:
        """Abandon the run: waits for nodes (and, through a :class:`StoppableGrid`, for
        replies) end with an error. For the engine to call when the simulation died."""
        self.stopped.set()

    def _current(self) -> Round:
        if self._round is None:
            raise RuntimeError("FlexMoEStrategy has no round open: configure_train comes first")
        return self._round

    def _handshake(self, grid: Grid) -> dict[int, int]:
        """Wait for the nodes, then ask each for its client index: client → node id."""
        deadline = time.monotonic() + self.node_timeout
        while len(ids := list(grid.get_node_ids())) < self.n_clients:
            if self.stopped.is_set():
                raise RuntimeError("the Flower run was stopped while waiting for nodes")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(ids)} of {self.n_clients} Flower nodes "
                                   f"connected within {self.node_timeout:g} s")  # fmt: skip
            time.sleep(0.05)
        hello = RecordDict({"config": ConfigRecord({"action": "hello"})})
        messages = [Message(hello, dst_node_id=i, message_type=MessageType.QUERY) for i in ids]
        nodes = {}
        for reply in grid.send_and_receive(messages, timeout=self.node_timeout):
            if reply.has_error():
                raise RuntimeError(f"node {reply.metadata.src_node_id} failed the hello: "
                                   f"{reply.error.reason}")  # fmt: skip
            nodes[int(reply.content.config_records["client"]["client"])] = (  # type: ignore[arg-type]
                reply.metadata.src_node_id
            )
        missing = sorted(set(range(self.n_clients)) - set(nodes))
        if missing:
            raise RuntimeError(f"no Flower node answered for client(s) {missing}")
        return nodes

    def _message(self, client: int, kind: str, config: ConfigRecord, rnd: int) -> Message:
        """ψ and the experts in ``config["experts"]`` for `client`, with `config`."""
        assert self.state is not None
        weights = self.state.weights
        experts = [int(e) for e in config["experts"]]  # type: ignore[union-attr]
        arrays = to_record({k: weights[k] for k in shared_keys(weights, experts)})
        content = RecordDict({"arrays": arrays, "config": config})
        return Message(content, dst_node_id=self.nodes[client], message_type=kind,
                       group_id=str(rnd))  # fmt: skip

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Open the round (sample, assign, plan); send each client ψ and its experts."""
        if not self.nodes:
            self.nodes = self._handshake(grid)
        if self.state is None:
            self.state = self.moe.initial_state(from_record(arrays))
        current = self._round = self.moe.open_round(self.state, server_round - 1)
        return [
            self._message(p.client, MessageType.TRAIN, plan_to_config(p), current.number)
            for p in current.train_plans
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate ψ and experts; update fitness, deficit and holdings."""
        current = self._current()
        ok = _successful(list(replies), f"training round {server_round}")
        self.state = current.aggregate([reply_from_content(m.content) for m in ok])
        metrics: dict[str, Any] = dict(current.train_summary())
        return to_record(self.state.weights), MetricRecord(metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask every client to evaluate ψ and its held experts with its own gate."""
        current = self._current()
        return [
            self._message(n, MessageType.EVALUATE,
                          ConfigRecord({"client": n, "experts": list(experts)}), current.number)
            for n, experts in current.evaluation_plans()
        ]  # fmt: skip

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Personalised and global accuracy; close the round into its record."""
        current = self._current()
        ok = _successful(list(replies), f"evaluation round {server_round}")
        results = {int(m.content.metric_records["evaluation"]["client"]):  # type: ignore[arg-type]
                   m.content.metric_records["evaluation"] for m in ok}  # fmt: skip
        current.evaluate([_counts(results[n]) for n in sorted(results)])
        record = current.close()
        self.history.rounds.append(record)
        for hook in self.hooks:
            hook(current.number, current.state, self.history)
        accuracies: dict[str, Any] = {k: v for k, v in record.to_dict().items()
                      if k.endswith("_acc") and isinstance(v, float)}  # fmt: skip
        return MetricRecord(accuracies)


def _counts(result: Any) -> dict[str, tuple[int, int]]:
    """A client's evaluation record as (correct, total) per split."""
    return {s: (int(result[f"{s}_correct"]), int(result[f"{s}_total"])) for s in SPLITS}


def _successful(replies: list[Message], what: str) -> list[Message]:
    """The replies without an error; a warning per failed node, an error if all failed."""
    failed = [m for m in replies if m.has_error()]
    for m in failed:
        log.warning("%s: node %s failed: %s", what, m.metadata.src_node_id, m.error.reason)
    if failed and len(failed) == len(replies):
        raise RuntimeError(f"{what}: every node failed; first error: {failed[0].error.reason}")
    return [m for m in replies if not m.has_error()]


class StoppableGrid:
    """A :class:`~flwr.serverapp.Grid` whose waits for replies end when `stopped` is set.

    Flower's in-memory grid polls for replies until its timeout even after the
    simulation engine has died, which would keep the process alive; this wrapper
    polls the same way and gives up once `stopped` is set.
    """

    def __init__(self, grid: Grid, stopped: threading.Event, poll: float = 0.05) -> None:
        self._grid, self._stopped, self._poll = grid, stopped, poll

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push `messages`, then collect their replies until all came or `timeout`."""
        pending = set(self._grid.push_messages(messages))
        end = time.monotonic() + timeout if timeout is not None else float("inf")
        replies: list[Message] = []
        while pending and time.monotonic() < end:
            if self._stopped.is_set():
                raise RuntimeError("the Flower run was stopped while waiting for replies")
            received = list(self._grid.pull_messages(pending))
            replies += received
            pending -= {m.metadata.reply_to_message_id for m in received}
            if pending:
                time.sleep(self._poll)
        return replies
