"""flexmoe's ``ClientApp``: the pure client training of :mod:`flexmoe.fedloop` behind
Flower's message handlers.

:data:`client_app` reads the experiment from ``context.run_config`` (every key of the
App, see :mod:`flexmoe.flower.runconfig`) and its data from ``context.node_config``: the
node holds partition ``partition-id`` of the data set split ``num-partitions`` ways
(:class:`~flexmoe.fedloop.Simulation`, seeded like the in-process run, built once per
worker process). Training is :func:`~flexmoe.fedloop.train_client`, evaluation
:meth:`~flexmoe.fedloop.Simulation.evaluate_client`; the gate lives in
``context.state`` across rounds. It answers the identity query of a
:class:`~flexmoe.flower.FlexMoEStrategy` with ``identify=True`` (its partition id and
profile).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.simulation import Simulation
from flexmoe.fedloop.task import train_client, workspace
from flexmoe.flower._flwr import ClientApp, Context, Message, MetricRecord, RecordDict
from flexmoe.flower.protocol import (
    GATE,
    ProtocolError,
    counts_to_metrics,
    from_record,
    identity_reply,
    is_identity_request,
    plan_from_config,
    reply_to_content,
    to_record,
)
from flexmoe.flower.runconfig import from_run_config

__all__ = ["client_app", "node_simulation"]

State = dict[str, Tensor]


@functools.lru_cache(maxsize=4)
def _parsed(items: tuple[tuple[str, Any], ...]) -> FedConfig:
    return from_run_config(dict(items))[0]


@functools.lru_cache(maxsize=2)
def _simulation(config: FedConfig) -> Simulation:
    sim = Simulation(config)
    sim.initial_weights()  # the seeded initial gates, identical to the in-process run's
    return sim


def node_simulation(
    run_config: Mapping[str, Any], node_config: Mapping[str, Any]
) -> tuple[Simulation, int]:
    """This node's view of the federation, and its client index: the experiment of
    `run_config` over ``num-partitions`` clients, and ``partition-id``."""
    try:
        partition = int(node_config["partition-id"])
        partitions = int(node_config["num-partitions"])
    except KeyError as err:
        raise ProtocolError(
            "flexmoe's ClientApp needs `partition-id` and `num-partitions` in the node "
            f"config; it has {sorted(node_config)}"
        ) from err
    config = _parsed(tuple(sorted(run_config.items())))
    return _simulation(config.replace(clients=partitions)), partition


def _node(context: Context) -> tuple[Simulation, int]:
    return node_simulation(context.run_config, context.node_config)


def _gate(context: Context, sim: Simulation, client: int) -> State:
    """The client's gate: kept in ``context.state``, initially the seeded one."""
    if GATE in context.state.array_records:
        return from_record(context.state.array_records[GATE])
    return sim.gates[client]


def _identify(message: Message, context: Context) -> Message:
    if not is_identity_request(message.content):
        raise ProtocolError("flexmoe's ClientApp answers only the identity query "
                            f"{{'flexmoe': 'identify'}}; got {message.content}")  # fmt: skip
    sim, client = _node(context)
    return Message(identity_reply(client, sim.profiles[client]), reply_to=message)


def _train(message: Message, context: Context) -> Message:
    sim, client = _node(context)
    plan = plan_from_config(message.content.config_records["config"])
    data = sim.clients[client]
    weights = from_record(message.content.array_records["arrays"])
    reply, gate = train_client(sim.spec, weights, _gate(context, sim, client), data.x_train,
                               data.y_train, plan, sim.config.local_training)  # fmt: skip
    context.state[GATE] = to_record(gate)
    return Message(reply_to_content(reply), reply_to=message)


def _evaluate(message: Message, context: Context) -> Message:
    sim, client = _node(context)
    experts = message.content.config_records["config"]["experts"]
    model = workspace(sim.spec)
    state = from_record(message.content.array_records["arrays"])
    model.load_state_dict(state | _gate(context, sim, client), strict=False)
    counts = sim.evaluate_client(model, client, [int(e) for e in experts])  # type: ignore[union-attr]
    metrics = MetricRecord(dict(counts_to_metrics(counts)))
    return Message(RecordDict({"metrics": metrics}), reply_to=message)


def _client_app() -> ClientApp:
    app = ClientApp()
    app.query()(_identify)
    app.train()(_train)
    app.evaluate()(_evaluate)
    return app


#: flexmoe's ``ClientApp`` (the component ``flexmoe.flower:client_app``).
client_app = _client_app()
