"""A Flower strategy (Message API) around flexmoe's own round driver.

:class:`FlexMoEStrategy` delegates every decision to
:class:`~flexmoe.fedloop.MoEStrategy` and its per-round
:class:`~flexmoe.fedloop.Round` — the same code the in-process loop runs, fed by the
same seeded generator in the same order — so both engines give the same assignments
and the same :class:`~flexmoe.fedloop.RoundRecord` for the same seed. Each of Flower's
four callbacks is one step of the round; what is added here is transport (records in
and out of messages, see :mod:`flexmoe.flower.protocol`) and the grid: which nodes are
there, and which fitness row each of them is.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from torch import Tensor

from flexmoe import params
from flexmoe.fedloop.aggregate import expert_of as flexmoe_expert_of
from flexmoe.fedloop.clients import ClientProfile, client_profiles
from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.history import History
from flexmoe.fedloop.loop import RoundHook
from flexmoe.fedloop.spec import FederationSpec
from flexmoe.fedloop.strategy import MoEStrategy, Round, ServerState
from flexmoe.fedloop.task import ClientPlan, ClientReply
from flexmoe.flower._flwr import (
    ArrayRecord,
    ConfigRecord,
    Grid,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
    Strategy,
    aggregate_metricrecords,
    require_flwr,
)
from flexmoe.flower.model import ExpertOf, expert_rule, expert_sizes
from flexmoe.flower.protocol import (
    COUNTS,
    NUM_EXAMPLES,
    PLAN_KEYS,
    STATS,
    ProtocolError,
    counts_from_metrics,
    from_record,
    identity_from_content,
    identity_request,
    only_record,
    plan_to_config,
    reply_from_content,
    sample_count,
    to_record,
)

__all__ = ["FlexMoEStrategy", "MetricsAggregation"]

log = logging.getLogger(__name__)

#: Flower's metric aggregation functions: ``fn(reply contents, weighted_by_key)``.
MetricsAggregation = Callable[[list[RecordDict], str], MetricRecord]

#: Seconds between looks at the grid while waiting for nodes.
POLL = 0.1

T = TypeVar("T")


class FlexMoEStrategy(Strategy):
    """Load-balanced expert assignment for Flower: one assignment solve per round.

    Each round it samples participants among the nodes the grid has (like ``FedAvg``),
    solves the assignment with :mod:`flexmoe.assign` (any registered backend), sends each
    node the shared parameters and only its assigned experts, averages each expert over
    its holders weighted by routed samples and everything else FedAvg-style, and updates
    the fitness from the replies' per-expert statistics. Build it around a
    :class:`~flexmoe.fedloop.MoEStrategy` (flexmoe's model and data, as ``flexmoe
    train`` does), or with :meth:`for_model` for your own torch model.

    Parameters
    ----------
    strategy : MoEStrategy
        The server (method, capacities, budgets, fitness, sampling, seed).
    fraction_train : float, optional
        Fraction of the connected nodes that train each round (None: the
        configuration's ``participation``).
    fraction_evaluate : float
        Fraction of the connected nodes that evaluate each round (0: none).
    min_available_nodes : int
        Nodes to wait for before the first round (an error after `node_timeout`).
    weighted_by_key : str
        The key of a reply's sample count in its MetricRecord.
    train_metrics_aggr_fn, evaluate_metrics_aggr_fn : callable, optional
        ``fn(list[RecordDict], weighted_by_key) -> MetricRecord``: the clients' metrics
        of a round, as Flower's ``FedAvg`` takes them (default: weighted averages,
        without flexmoe's per-expert ``stats.*`` and ``counts.*``).
    identify : bool
        Ask each node seen for the first time who it is (flexmoe's ClientApp answers
        with its partition id, which becomes its fitness row when that row is free,
        and its profile). Otherwise (or when that row is taken) a new node gets the
        lowest configured row nobody holds, else a fresh one.
    new_client : callable, optional
        ``new_client(row) -> ClientProfile`` for a fresh row of a node that did not say
        (default: the configured capacity, budgets that count experts).
    node_timeout : float
        Seconds to wait for `min_available_nodes`, and for the answers to ``identify``.
    history : History, optional
        Receives one record per round (as ``flexmoe.fedloop.run`` writes them).
    hooks : sequence of callables
        ``hook(round, state, history)`` after every round.

    Notes
    -----
    Node ↔ fitness row: a node seen for the first time gets a row, kept for the run;
    rows of the configuration nobody takes are never sampled, and a node beyond them
    gets a new row (:meth:`~flexmoe.fedloop.MoEStrategy.add_clients`). A node whose
    reply fails or never comes is a dropped client for that round.
    """

    def __init__(
        self,
        strategy: MoEStrategy,
        *,
        fraction_train: float | None = None,
        fraction_evaluate: float = 1.0,
        min_available_nodes: int = 2,
        weighted_by_key: str = NUM_EXAMPLES,
        train_metrics_aggr_fn: MetricsAggregation | None = None,
        evaluate_metrics_aggr_fn: MetricsAggregation | None = None,
        identify: bool = False,
        new_client: Callable[[int], ClientProfile] | None = None,
        node_timeout: float = 60.0,
        history: History | None = None,
        hooks: Sequence[RoundHook] = (),
    ) -> None:
        require_flwr()
        _check_options(fraction_evaluate, min_available_nodes, node_timeout)
        if fraction_train is not None:
            strategy.config = _with_participation(strategy.config, fraction_train)
        self.moe = strategy
        self.fraction_evaluate = fraction_evaluate
        self.min_available_nodes = min_available_nodes
        self.weighted_by_key = weighted_by_key
        self.train_metrics_aggr_fn = train_metrics_aggr_fn
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn
        self.identify = identify
        self.new_client = new_client or _counting_profile(strategy)
        self.node_timeout = node_timeout
        self.history = history if history is not None else History({})
        self.hooks = list(hooks)
        self.state: ServerState | None = None
        self.rows: dict[int, int] = {}
        self._nodes: dict[int, int] = {}
        self._eval_rng = np.random.default_rng([strategy.config.seed, 1])
        self._round: Round | None = None

    @classmethod
    def for_model(
        cls,
        arrays: ArrayRecord | Mapping[str, Tensor],
        *,
        experts: str | ExpertOf = flexmoe_expert_of,
        config: FedConfig | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> FlexMoEStrategy:
        """The strategy for your own model, from its initial parameters.

        Parameters
        ----------
        arrays : ArrayRecord or state dict
            The parameters the server holds (what ``start(initial_arrays=...)`` gets);
            keep the client-only ones (a gate) out.
        experts : str or callable
            Which parameters belong to which expert: a regular expression whose one
            group is the expert id, matched at the start of each name
            (``r"moe\\.(\\d+)\\."``), or ``name -> int or None``. Every other parameter
            is shared, averaged FedAvg-style. Default: flexmoe's ``experts.<e>.*``.
        config : FedConfig or mapping, optional
            Server settings as :class:`~flexmoe.fedloop.FedConfig` fields: ``capacity``
            (experts per node, default 2), ``method``, ``backend``, ``fitness``,
            ``seed``, ``switch_cost``, ...; ``experts`` is the model's.
        **options
            As for the constructor (``fraction_train``, ``min_available_nodes``, ...).

        Examples
        --------
        >>> import torch
        >>> model = torch.nn.ModuleDict({"body": torch.nn.Linear(4, 8), "moe": torch.nn.ModuleList(
        ...     torch.nn.Linear(8, 8) for _ in range(3))})
        >>> strategy = FlexMoEStrategy.for_model(model.state_dict(), experts=r"moe\\.(\\d+)\\.",
        ...                                      config={"capacity": 1})
        >>> strategy.moe.n_experts, strategy.moe.spec.expert_params, strategy.moe.n_clients
        (3, (72, 72, 72), 0)
        """
        state = from_record(arrays) if isinstance(arrays, ArrayRecord) else dict(arrays)
        rule = expert_rule(experts)
        nbytes, nparams, shared = expert_sizes(state, rule)
        values = params.to_flat(config) if isinstance(config, FedConfig) else dict(config or {})
        settings = params.build(FedConfig, {**values, "experts": len(nbytes)})
        spec = FederationSpec(None, (), expert_bytes=nbytes, expert_params=nparams,
                              backbone_bytes=shared)  # fmt: skip
        return cls(MoEStrategy(settings, spec, expert_of=rule), **options)

    def summary(self) -> None:
        """Log the configuration."""
        config = self.moe.config
        log.info("FlexMoEStrategy: method %s, backend %s, %d experts, participation %g, "
                 "evaluate %g", config.method, config.backend, self.moe.n_experts,
                 config.participation, self.fraction_evaluate)  # fmt: skip

    # -- the grid -----------------------------------------------------------------------

    def _connected(self, grid: Grid) -> list[int]:
        """The connected nodes; before the first round, once `min_available_nodes` are
        there and no more are joining."""
        deadline = time.monotonic() + self.node_timeout
        ids = sorted(grid.get_node_ids())
        while len(ids) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids)} Flower node(s) connected within "
                                   f"{self.node_timeout:g} s, fewer than `min_available_nodes` "
                                   f"= {self.min_available_nodes}")  # fmt: skip
            time.sleep(POLL)
            ids = sorted(grid.get_node_ids())
        while not self.rows:
            time.sleep(2 * POLL)
            if (again := sorted(grid.get_node_ids())) == ids:
                break
            ids = again
        return ids

    def _admit(self, grid: Grid, ids: list[int]) -> None:
        """Give every node seen for the first time its fitness row: the one it claims
        (its partition id) when that is a configured row nobody holds, else the lowest
        such row, else a fresh one."""
        new = [i for i in ids if i not in self.rows]
        if not new:
            return
        claims = self._identities(grid, new) if self.identify else {}
        n_rows, taken = self.moe.n_clients, set(self.rows.values())
        rows: dict[int, int] = {}
        for node in sorted(new):  # the claims first
            wanted = claims[node][0] if node in claims else n_rows
            if wanted < n_rows and wanted not in taken:
                rows[node] = wanted
                taken.add(wanted)
        free = iter([r for r in range(n_rows) if r not in taken])
        fresh: list[ClientProfile] = []
        rest = sorted(set(new) - set(rows), key=lambda i: (claims.get(i, (math.inf,))[0], i))
        for node in rest:
            if (row := next(free, -1)) < 0:
                row = n_rows + len(fresh)
                fresh.append(claims[node][1] if node in claims else self.new_client(row))
            if node in claims and claims[node][0] != row:
                log.warning("node %d says it is partition %d; it is fitness row %d", node,
                            claims[node][0], row)  # fmt: skip
            rows[node] = row
        for node, row in rows.items():
            self.rows[node], self._nodes[row] = row, node
        if fresh:
            assert self.state is not None
            log.info("%d node(s) beyond the %d configured clients: new fitness rows %d..%d",
                     len(fresh), n_rows, n_rows, n_rows + len(fresh) - 1)  # fmt: skip
            self.state = self.moe.add_clients(self.state, fresh)
            if "capacity" in self.history.setup:
                self.history.setup.update(self.moe.spec.setup())

    def _identities(self, grid: Grid, nodes: list[int]) -> dict[int, tuple[int, ClientProfile]]:
        """Each answering node's (partition id, profile)."""
        messages = [Message(identity_request(), dst_node_id=i, message_type=MessageType.QUERY)
                    for i in nodes]  # fmt: skip
        claims = {}
        for reply in grid.send_and_receive(messages, timeout=self.node_timeout):
            node = reply.metadata.src_node_id
            try:
                if reply.has_error():
                    raise ProtocolError(reply.error.reason)
                claims[node] = identity_from_content(reply.content)
            except (ProtocolError, KeyError, TypeError, ValueError) as err:
                log.warning("node %d did not say who it is (%s); it gets a free row", node, err)
        return claims

    def _message(
        self, row: int, kind: str, config: dict[str, Any], sent: Iterable[int], rnd: int
    ) -> Message:
        """The shared parameters and the experts `sent` for `row`, with `config`."""
        assert self.state is not None
        weights, chosen = self.state.weights, set(sent)
        keys = [k for k in weights if (e := self.moe.expert_of(k)) is None or e in chosen]
        content = RecordDict({"arrays": to_record({k: weights[k] for k in keys}),
                              "config": ConfigRecord(config)})  # fmt: skip
        return Message(content, dst_node_id=self._nodes[row], message_type=kind,
                       group_id=str(rnd))  # fmt: skip

    def _current(self) -> Round:
        if self._round is None:
            raise RuntimeError("FlexMoEStrategy has no round open: configure_train comes first")
        return self._round

    # -- Flower's four callbacks --------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Admit new nodes, open the round (sample, assign, plan) over the nodes that are
        there; send each participant the shared parameters and the experts it downloads
        (those it trains, then those it only scores: ``ClientPlan.downloads``)."""
        ids = self._connected(grid)
        if self.state is None:
            self.state = self.moe.initial_state(from_record(arrays))
        self._admit(grid, ids)
        present = [self.rows[i] for i in ids]
        current = self._round = self.moe.open_round(self.state, server_round - 1, present)
        base = _user_config(config, "train_config", PLAN_KEYS)
        return [self._message(p.client, MessageType.TRAIN,
                              {**base, **plan_to_config(p), "server-round": server_round},
                              p.downloads, current.number)
                for p in current.train_plans]  # fmt: skip

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the shared parameters and the experts; update fitness, deficit and
        holdings. A failed or malformed reply is a dropped client."""
        current = self._current()
        plans = {p.client: p for p in current.train_plans}

        def convert(message: Message) -> ClientReply:
            plan = plans.get(self.rows.get(message.metadata.src_node_id, -1))
            if plan is None:
                raise ProtocolError("it was not asked to train")
            return self._reply(message.content, plan)

        taken = _usable(list(replies), f"training round {server_round}", convert)
        self.state = _aggregated(current, [reply for _, reply in taken])
        metrics = self._metrics(self.train_metrics_aggr_fn, [m for m, _ in taken])
        metrics.update(current.train_summary())
        return to_record(self.state.weights), MetricRecord(metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the connected nodes (a `fraction_evaluate` sample) to evaluate the shared
        parameters and the experts they hold, each with its own local parts."""
        current = self._current()
        if self.fraction_evaluate == 0:
            return []
        rows = sorted(self.rows[i] for i in grid.get_node_ids() if i in self.rows)
        if self.fraction_evaluate < 1 and rows:
            size = max(1, math.floor(self.fraction_evaluate * len(rows) + 0.5))
            rows = sorted(self._eval_rng.choice(rows, size, replace=False).tolist())
        base = _user_config(config, "evaluate_config", ("client", "experts"))
        return [self._message(n, MessageType.EVALUATE,
                              {**base, "server-round": server_round, "client": n,
                               "experts": list(experts)}, experts, current.number)
                for n, experts in current.evaluation_plans(rows)]  # fmt: skip

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """flexmoe's accuracy (from the replies that carry its counts) and the clients'
        own metrics; close the round into its record."""
        current = self._current()

        def convert(message: Message) -> Any:
            return counts_from_metrics(only_record(message.content.metric_records, "MetricRecord"))

        taken = _usable(list(replies), f"evaluation round {server_round}", convert)
        current.evaluate({self.rows[m.metadata.src_node_id]: counts for m, counts in taken
                          if counts is not None})  # fmt: skip
        record = current.close()
        self.history.rounds.append(record)
        for hook in self.hooks:
            hook(current.number, current.state, self.history)
        metrics = self._metrics(self.evaluate_metrics_aggr_fn, [m for m, _ in taken])
        metrics.update({k: v for k, v in record.to_dict().items()
                        if k.endswith("_acc") and isinstance(v, float)})  # fmt: skip
        return MetricRecord(metrics)

    # -- replies ------------------------------------------------------------------------

    def _reply(self, content: RecordDict, plan: ClientPlan) -> ClientReply:
        """The reply as the round driver takes it: only the parameters the server holds
        and the node was sent, each of the server's shape."""
        assert self.state is not None
        reply = reply_from_content(content, plan.client, plan.experts, self.moe.n_experts,
                                   self.weighted_by_key)  # fmt: skip
        shared, held = self.state.weights, set(plan.experts)
        kept = {k: v for k, v in reply.weights.items()
                if k in shared and ((e := self.moe.expert_of(k)) is None or e in held)}  # fmt: skip
        missing = [k for k in shared if self.moe.expert_of(k) is None and k not in kept]
        if missing:
            raise ProtocolError(f"its ArrayRecord lacks shared parameter(s) {missing[:4]}")
        wrong = [k for k, v in kept.items() if v.shape != shared[k].shape]
        if wrong:
            raise ProtocolError(f"parameter {wrong[0]!r} has shape {tuple(kept[wrong[0]].shape)}, "
                                f"the server's {tuple(shared[wrong[0]].shape)}")  # fmt: skip
        reply.weights = kept
        return reply

    def _metrics(self, fn: MetricsAggregation | None, replies: list[Message]) -> dict[str, Any]:
        """The clients' metrics of `replies`, aggregated by `fn` (default: Flower's
        weighted averages, without flexmoe's own entries)."""
        contents = [m.content for m in replies]
        if fn is None:
            scalars = [_scalars(c, self.weighted_by_key) for c in contents]
            contents = [c for c in scalars if c is not None]
            if not contents or sum(_weight(c, self.weighted_by_key) for c in contents) <= 0:
                return {}
            fn = aggregate_metricrecords
        return dict(fn(contents, self.weighted_by_key)) if contents else {}


def _check_options(fraction_evaluate: float, min_available_nodes: int, timeout: float) -> None:
    if not 0 <= fraction_evaluate <= 1:
        raise ValueError(f"`fraction_evaluate` must be in [0, 1]; got {fraction_evaluate}")
    if type(min_available_nodes) is not int or min_available_nodes < 1:
        raise ValueError(f"`min_available_nodes` must be an integer >= 1; got "
                         f"{min_available_nodes!r}")  # fmt: skip
    if not timeout > 0:
        raise ValueError(f"`node_timeout` must be > 0; got {timeout}")


def _with_participation(config: FedConfig, fraction: float) -> FedConfig:
    try:
        return config.replace(participation=fraction)
    except params.ConfigError as err:
        raise ValueError(str(err).replace("`participation`", "`fraction_train`")) from None


def _counting_profile(strategy: MoEStrategy) -> Callable[[int], ClientProfile]:
    """A fresh row's profile: the configured capacity (tiers in turn), with storage and
    compute budgets that count experts."""
    tiers, spec = strategy.config.capacity.tiers, strategy.spec

    def profile(row: int) -> ClientProfile:
        capacity = np.array([tiers[row % len(tiers)]])
        return client_profiles(capacity, expert_bytes=max(spec.expert_bytes),
                               expert_params=max(spec.expert_params), train_sizes=[1],
                               epochs=1)[0]  # fmt: skip

    return profile


def _user_config(config: ConfigRecord, name: str, reserved: Iterable[str]) -> dict[str, Any]:
    """The user's `config` record as values, refusing the keys the protocol sets."""
    clash = sorted(set(config) & set(reserved))
    if clash:
        raise ValueError(f"`{name}` must not set {clash}: FlexMoEStrategy sends them")
    return dict(config)


def _aggregated(current: Round, replies: list[ClientReply]) -> ServerState:
    """:meth:`Round.aggregate`, a fitness signal that reads a statistic the replies lack
    reported as such."""
    try:
        return current.aggregate(replies)
    except KeyError as err:
        signal = current.strategy.config.fitness.signal
        raise ProtocolError(
            f"the fitness signal `{signal}` reads the per-expert statistic {err}, which the "
            f"train replies lack; send it as `{STATS}{err.args[0]}` (one value per expert) "
            "in the reply's MetricRecord"
        ) from None


def _scalars(content: RecordDict, key: str) -> RecordDict | None:
    """`content`'s MetricRecord without flexmoe's entries (None without `key`)."""
    try:
        metrics = only_record(content.metric_records, "MetricRecord")
        sample_count(metrics, key)
    except ProtocolError:
        return None
    kept = {k: v for k, v in metrics.items() if not k.startswith((STATS, COUNTS))}
    return RecordDict({"metrics": MetricRecord(kept)})


def _weight(content: RecordDict, key: str) -> float:
    return float(next(iter(content.metric_records.values()))[key])  # type: ignore[arg-type]


def _usable(
    replies: list[Message], what: str, convert: Callable[[Message], T]
) -> list[tuple[Message, T]]:
    """The replies `convert` takes, with what it made of them. A failed reply, or one it
    refuses (:class:`ProtocolError`), is dropped with a warning; an error if none is left."""
    usable, failures = [], []
    for message in replies:
        try:
            if message.has_error():
                raise ProtocolError(f"the node failed: {message.error.reason}")
            usable.append((message, convert(message)))
        except ProtocolError as err:
            failures.append(str(err))
            log.warning("%s: the reply of node %s is dropped: %s", what,
                        message.metadata.src_node_id, err)  # fmt: skip
    if failures and not usable:
        raise RuntimeError(f"{what}: no node sent a usable reply; the first: {failures[0]}")
    return usable
