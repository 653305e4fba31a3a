"""FlexMoEStrategy on grids it did not expect, with flexmoe's ClientApp (no Ray).

The nodes are real ``ClientApp`` objects run in this process by a ``Grid`` (see
:mod:`flower_support`); ``Strategy.start`` drives the rounds as in any ServerApp.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")
    from flwr.app import ConfigRecord, Message
    from flwr.clientapp import ClientApp

from flower_support import LoopbackGrid, one_torch_thread, task_identity

from flexmoe.fedloop import FedConfig, MoEStrategy, Simulation, run
from flexmoe.fedloop.loop import new_history
from flexmoe.fedloop.policies import METHODS
from flexmoe.flower import FlexMoEStrategy, client_app, run_config, to_record

CONFIG = FedConfig(
    clients=4, experts=4, rounds=2, capacity="2", partition="dirichlet:0.3", width=16,
    expert_hidden=8, min_size=10, seed=3, train={"epochs": 1},
)  # fmt: skip


@pytest.fixture(autouse=True)
def _identity():  # type: ignore[no-untyped-def]
    with task_identity():
        yield


def _strategy(config: FedConfig, **options: object) -> tuple[FlexMoEStrategy, Simulation]:
    sim = Simulation(config)
    strategy = FlexMoEStrategy(MoEStrategy(config, sim.federation), history=new_history(sim),
                               **options)  # type: ignore[arg-type]  # fmt: skip
    return strategy, sim


def _start(strategy: FlexMoEStrategy, sim: Simulation, grid: LoopbackGrid, rounds: int) -> None:
    strategy.start(grid=grid, initial_arrays=to_record(sim.initial_weights()), num_rounds=rounds)


def test_four_nodes_give_the_local_engines_history() -> None:
    config = CONFIG.replace(participation=0.75, dropout=0.2)
    strategy, sim = _strategy(config, identify=True)
    with one_torch_thread():
        _start(strategy, sim, LoopbackGrid(client_app, 4, run_config(config)), config.rounds)
        local = run(config)
    assert strategy.history.series("assignment.experts") == local.series("assignment.experts")
    assert strategy.history.series("dropped") == local.series("dropped") != [[], []]
    assert strategy.history.without_timings() == local.without_timings()


def test_a_fifth_node_gets_a_new_row_and_trains() -> None:
    strategy, sim = _strategy(CONFIG, identify=True)
    grid = LoopbackGrid(client_app, 5, run_config(CONFIG))
    _start(strategy, sim, grid, 2)
    assert sorted(strategy.rows.values()) == [0, 1, 2, 3, 4]
    assert all(strategy.rows[n] == grid.partition(n) for n in grid.contexts)
    history = strategy.history
    assert history.series("participants") == [[0, 1, 2, 3, 4]] * 2
    assert [len(e) for e in history.series("assignment.experts")] == [5, 5]
    assert len(history.setup["capacity"]) == 5 and len(history.rounds[-1].client_acc) == 5
    assert strategy.state is not None and strategy.state.fitness.q.shape == (5, 4)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_fifth_node_gets_a_row_with_every_method(method: str) -> None:
    config = CONFIG.replace(method=method, rounds=1)
    strategy, sim = _strategy(config, identify=True)
    _start(strategy, sim, LoopbackGrid(client_app, 5, run_config(config)), 1)
    assert strategy.history.series("participants") == [[0, 1, 2, 3, 4]]
    assert strategy.state is not None and strategy.state.held.shape == (5, 4)
    assert strategy.state.held.sum(axis=1).tolist() == [4 if method == "full" else 2] * 5


def test_probed_experts_travel_and_give_the_local_engines_history() -> None:
    config = CONFIG.replace(fitness={"signal": "alone", "probe": 1})
    strategy, sim = _strategy(config, identify=True)
    grid = LoopbackGrid(client_app, 4, run_config(config))
    with one_torch_thread():
        _start(strategy, sim, grid, config.rounds)
        local = run(config)
    trains = [m for m in grid.sent if m.metadata.message_type == "train"]
    for message in trains:
        plan, sent = message.content["config"], message.content["arrays"]
        (probe,) = set(plan["scored"]) - set(plan["experts"])
        experts = {int(k.split(".")[1]) for k in sent if k.startswith("experts.")}
        assert experts == {*plan["experts"], probe}
    replies = [m for m in grid.replies if m.metadata.message_type == "train"]
    assert all("stats.alone_accuracy" in m.content["metrics"] for m in replies)
    assert strategy.history.without_timings() == local.without_timings()


def test_three_nodes_for_four_clients_give_smaller_rounds() -> None:
    strategy, sim = _strategy(CONFIG, identify=True)
    _start(strategy, sim, LoopbackGrid(client_app, 3, run_config(CONFIG)), 2)
    history = strategy.history
    assert history.series("participants") == [[0, 1, 2]] * 2
    assert history.rounds[-1].client_acc[3] is None
    assert all(a is not None for a in history.rounds[-1].client_acc[:3])


def test_too_few_nodes_are_a_clear_error_at_once() -> None:
    strategy, sim = _strategy(CONFIG, min_available_nodes=4, node_timeout=0.3)
    began = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^3 Flower node\(s\) connected within 0.3 s, fewer "
                       r"than `min_available_nodes` = 4$"):  # fmt: skip
        _start(strategy, sim, LoopbackGrid(client_app, 3, run_config(CONFIG)), 1)
    assert time.monotonic() - began < 5


def _crashing(partition: int, rnd: int) -> ClientApp:
    """flexmoe's ClientApp, except that node `partition` fails training in round `rnd`."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context) -> Message:  # type: ignore[no-untyped-def]
        if (context.node_config["partition-id"], message.content["config"]["round"]) == (
            partition, rnd
        ):  # fmt: skip
            raise RuntimeError("the node crashed")
        return client_app(message, context)

    app.evaluate()(client_app)
    app.query()(client_app)
    return app


def test_a_crashed_node_is_a_dropped_client_for_that_round(caplog) -> None:
    strategy, sim = _strategy(CONFIG, identify=True)
    with caplog.at_level(logging.WARNING, logger="flexmoe.flower.strategy"):
        _start(strategy, sim, LoopbackGrid(_crashing(1, 0), 4, run_config(CONFIG)), 2)
    assert strategy.history.series("dropped") == [[1], []]
    assert strategy.history.rounds[0].bytes_up[1] == 0
    assert "training round 1: the reply of node" in caplog.text
    assert "RuntimeError: the node crashed" in caplog.text


def test_a_lost_node_is_a_dropped_client_for_that_round() -> None:
    strategy, sim = _strategy(CONFIG, identify=True)

    def lost(partition: int, message: Message) -> bool:
        return partition == 2 and message.metadata.message_type == "train" and (
            message.content["config"]["round"] == 1
        )  # fmt: skip

    _start(strategy, sim, LoopbackGrid(client_app, 4, run_config(CONFIG), lost=lost), 2)
    assert strategy.history.series("dropped") == [[], [2]]


def test_every_node_failing_is_an_error() -> None:
    strategy, sim = _strategy(CONFIG, identify=True)
    app = ClientApp()
    app.query()(client_app)

    @app.train()
    def train(message: Message, context) -> Message:  # type: ignore[no-untyped-def]
        raise ValueError("broken")

    with pytest.raises(RuntimeError, match="training round 1: no node sent a usable reply; the "
                       "first: the node failed: ValueError: broken"):  # fmt: skip
        _start(strategy, sim, LoopbackGrid(app, 4, run_config(CONFIG)), 1)


def test_a_node_that_joins_later_gets_a_fresh_row() -> None:
    strategy, sim = _strategy(CONFIG, identify=True)
    grid = LoopbackGrid(client_app, 4, run_config(CONFIG))
    arrays = to_record(sim.initial_weights())
    messages = strategy.configure_train(1, arrays, ConfigRecord(), grid)
    strategy.aggregate_train(1, grid.send_and_receive(messages))
    strategy.aggregate_evaluate(1, grid.send_and_receive(
        strategy.configure_evaluate(1, arrays, ConfigRecord(), grid)))  # fmt: skip
    (late,) = grid.add_nodes(1, partitions=5)
    messages = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    assert strategy.rows[late] == 4
    assert [m.metadata.dst_node_id for m in messages if m.content["config"]["client"] == 4] == [
        late
    ]


def test_without_identify_new_nodes_take_rows_in_node_order() -> None:
    strategy, sim = _strategy(CONFIG)
    grid = LoopbackGrid(client_app, 4, run_config(CONFIG))
    _start(strategy, sim, grid, 1)
    assert [strategy.rows[n] for n in sorted(grid.contexts)] == [0, 1, 2, 3]
    assert not [m for m in grid.sent if m.metadata.message_type == "query"]


def test_fractions_sample_like_fedavg() -> None:
    strategy, sim = _strategy(CONFIG, fraction_train=0.5, fraction_evaluate=0.5)
    grid = LoopbackGrid(client_app, 4, run_config(CONFIG))
    _start(strategy, sim, grid, 2)
    kinds = [m.metadata.message_type for m in grid.sent]
    assert kinds.count("train") == 4 and kinds.count("evaluate") == 4
    assert [len(p) for p in strategy.history.series("participants")] == [2, 2]
    assert sum(a is not None for a in strategy.history.rounds[0].client_acc) == 2


def test_bad_options_are_refused_with_their_names() -> None:
    with pytest.raises(ValueError, match=r"`fraction_train` must be > 0 and <= 1; got 1.5"):
        _strategy(CONFIG, fraction_train=1.5)
    with pytest.raises(ValueError, match=r"`fraction_evaluate` must be in \[0, 1\]; got -1"):
        _strategy(CONFIG, fraction_evaluate=-1)
    with pytest.raises(ValueError, match=r"`min_available_nodes` must be an integer >= 1"):
        _strategy(CONFIG, min_available_nodes=0)


def test_fitness_rows_grow_with_initial_values() -> None:
    strategy, sim = _strategy(CONFIG)
    state = strategy.moe.initial_state(sim.initial_weights())
    state.fitness.last[1, 2], state.fitness.tries[1, 2] = 5, 3
    profile = sim.federation.profiles[0]
    grown = strategy.moe.add_clients(state, [profile, profile])
    fresh = state.fitness.q[0]  # every row starts as Fitness.start makes it (no pair tried)
    assert grown.fitness.q.shape == (6, 4) and np.all(grown.fitness.q[4:] == fresh)
    assert grown.fitness.last[1, 2] == 5 and grown.fitness.tries[1, 2] == 3
    assert np.all(grown.fitness.last[4:] == -1) and np.all(grown.fitness.tries[4:] == 0)
    assert grown.held.shape == (6, 4) and grown.held[4:].sum(axis=1).tolist() == [2, 2]
    assert strategy.moe.n_clients == 6 and strategy.moe.capacity.tolist() == [2] * 6
