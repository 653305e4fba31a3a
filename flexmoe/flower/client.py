"""The Flower ``ClientApp``: flexmoe's pure client training behind three message handlers.

Each node is one client of a :class:`~flexmoe.fedloop.FedConfig` (its Flower
``partition-id``). Its data come from :class:`~flexmoe.fedloop.Simulation` (built once
per worker process, seeded like the in-process run), its training from
:func:`~flexmoe.fedloop.train_client`, its evaluation from
:meth:`~flexmoe.fedloop.Simulation.evaluate_client`. The gate lives in ``context.state``
across rounds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.simulation import Simulation
from flexmoe.fedloop.task import train_client, workspace
from flexmoe.flower._flwr import (
    ClientApp,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
    require_flwr,
)
from flexmoe.flower.protocol import (
    GATE,
    from_record,
    plan_from_config,
    reply_to_content,
    to_record,
)

__all__ = ["client_app"]

State = dict[str, Tensor]
Handler = Callable[[Message, Context], Message]


@functools.lru_cache(maxsize=2)
def _simulation(config: FedConfig) -> Simulation:
    """This worker's view of the federation: data splits, model spec, initial gates."""
    sim = Simulation(config)
    sim.initial_weights()  # the seeded initial gates, identical to the in-process run's
    return sim


def _client(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _gate(context: Context, sim: Simulation, client: int) -> State:
    """The client's gate: kept in ``context.state``, initially the seeded one."""
    if GATE in context.state.array_records:
        return from_record(context.state.array_records[GATE])
    return sim.gates[client]


def _hello(message: Message, context: Context) -> Message:
    content = RecordDict({"client": ConfigRecord({"client": _client(context)})})
    return Message(content, reply_to=message)


def _train(config: FedConfig, message: Message, context: Context) -> Message:
    sim, client = _simulation(config), _client(context)
    plan = plan_from_config(message.content.config_records["config"])
    if plan.client != client:
        raise ValueError(f"node of client {client} was sent the plan of client {plan.client}")
    data = sim.clients[client]
    weights = from_record(message.content.array_records["arrays"])
    reply, gate = train_client(sim.spec, weights, _gate(context, sim, client), data.x_train,
                               data.y_train, plan, config.local_training)  # fmt: skip
    context.state[GATE] = to_record(gate)
    return Message(reply_to_content(reply), reply_to=message)


def _evaluate(config: FedConfig, message: Message, context: Context) -> Message:
    sim, client = _simulation(config), _client(context)
    experts = message.content.config_records["config"]["experts"]
    model = workspace(sim.spec)
    state = from_record(message.content.array_records["arrays"])
    model.load_state_dict(state | _gate(context, sim, client), strict=False)
    counts = sim.evaluate_client(model, client, [int(e) for e in experts])  # type: ignore[union-attr]
    result = MetricRecord({"client": client})
    for name, (correct, total) in counts.items():
        result[f"{name}_correct"], result[f"{name}_total"] = correct, total
    return Message(RecordDict({"evaluation": result}), reply_to=message)


def _threaded(threads: int | None, handler: Handler) -> Handler:
    """`handler` with torch limited to `threads` intra-op threads (None: as it is)."""

    def run(message: Message, context: Context) -> Message:
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return handler(message, context)

    return run


def client_app(config: FedConfig, *, threads: int | None = None) -> ClientApp:
    """A Flower ``ClientApp`` for the clients of `config` (node ``partition-id`` = client).

    Parameters
    ----------
    config : FedConfig
        The experiment; every node rebuilds its own data split from it (seeded).
    threads : int, optional
        Torch threads per client (match the CPUs Ray reserves per client; the same
        thread count as the in-process run gives bit-identical training).

    Returns
    -------
    flwr.clientapp.ClientApp
        Handles ``query`` (hello), ``train`` and ``evaluate`` messages of
        :class:`~flexmoe.flower.FlexMoEStrategy` (see :mod:`flexmoe.flower.protocol`).
    """
    require_flwr()
    app = ClientApp()
    app.query()(_hello)
    app.train()(_threaded(threads, functools.partial(_train, config)))
    app.evaluate()(_threaded(threads, functools.partial(_evaluate, config)))
    return app
