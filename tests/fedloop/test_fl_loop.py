"""Client training, the strategy's two hooks, the loop, checkpoints and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fl_support import TINY

from flexmoe.fedloop import (
    ClientPlan,
    FedConfig,
    History,
    MoEStrategy,
    Simulation,
    TrainConfig,
    run,
    train_client,
)
from flexmoe.fedloop.checkpoint import completed_rounds
from flexmoe.fedloop.task import workspace


class Killed(Exception):
    """Stands in for the process being killed after a checkpoint."""


def kill_after(completed: int):
    def hook(rnd: int, state: object, history: History) -> None:
        if rnd + 1 == completed:
            raise Killed

    return hook


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(TINY)


# -- client training --------------------------------------------------------------------


def test_train_client_is_a_pure_function(sim: Simulation) -> None:
    weights = sim.initial_weights()
    gate = sim.gates[0]
    snapshot = {k: v.clone() for k, v in (weights | gate).items()}
    data = sim.clients[0]
    plan = ClientPlan(client=0, round=0, experts=(1, 3), seed=7)
    first, gate1 = train_client(sim.spec, weights, gate, data.x_train, data.y_train, plan,
                                TINY.local_training)  # fmt: skip
    with torch.no_grad():  # poison the shared scratch model: it must not matter
        for p in workspace(sim.spec).parameters():
            p.fill_(123.0)
    second, gate2 = train_client(sim.spec, weights, gate, data.x_train, data.y_train, plan,
                                 TINY.local_training)  # fmt: skip
    assert all(torch.equal(v, snapshot[k]) for k, v in (weights | gate).items())
    assert first.weights.keys() == second.weights.keys()
    assert all(torch.equal(first.weights[k], second.weights[k]) for k in first.weights)
    assert all(torch.equal(gate1[k], gate2[k]) for k in gate1)
    experts = {k.split(".")[1] for k in first.weights if k.startswith("experts.")}
    assert experts == {"1", "3"} and not any(k.startswith("gate.") for k in first.weights)
    assert first.routed[[0, 2]].tolist() == [0, 0] and first.routed[[1, 3]].sum() > 0
    accuracy = first.stats["accuracy"]
    assert np.isnan(accuracy[0]) and 0 <= accuracy[1] <= 1


@pytest.mark.parametrize("feedback", ["before", "after"])
def test_feedback_modes_count_every_sample_once(sim: Simulation, feedback: str) -> None:
    weights = sim.initial_weights()
    data = sim.clients[1]
    plan = ClientPlan(1, 0, (0, 2), 0)
    config = TrainConfig(epochs=2, lr=0.1, feedback=feedback)
    reply, _ = train_client(sim.spec, weights, sim.gates[1], data.x_train, data.y_train, plan,
                            config)  # fmt: skip
    assert reply.routed.sum() == 2 * len(data.y_train)  # top-2 of 2 held experts


# -- the loop ---------------------------------------------------------------------------


def test_flex_trains_every_expert_with_zero_load_spread() -> None:
    history = run(TINY.replace(clients=8, experts=4))
    for record in history.rounds:
        assert record.load_holders == [4.0] * 4 and record.holders.cv == 0.0
        # the storage/compute rows are count-equivalent here: flow takes them
        assert record.never_trained == 0 and record.assignment.backend == "flow"
        assert record.assignment.status == "optimal"
        assert record.assignment.load_min == [4.0] * 4
        assert len(record.bytes_down) == 8  # the default probes download, not upload:
        assert all(d > u for d, u in zip(record.bytes_down, record.bytes_up, strict=True))
    final = history.final()
    assert 0 <= final["personalized_acc"] <= 1 and 0 <= final["global_acc"] <= 1


@pytest.mark.parametrize("method", ["flex", "greedy"])
def test_a_high_switch_cost_keeps_the_first_assignment(method: str) -> None:
    history = run(TINY.replace(method=method, switch_cost=10.0))
    first = history.rounds[0].assignment.experts
    assert all(r.assignment.experts == first for r in history.rounds)
    paper = {"signal": "accuracy", "initial": 1.0}  # optimistic fitness alone explores
    free = run(TINY.replace(method=method, switch_cost=0.0, fitness=paper))
    assert free.rounds[1].assignment.experts != free.rounds[0].assignment.experts


@pytest.mark.parametrize("method", ["greedy", "random", "round_robin", "full"])
def test_baselines_run(method: str) -> None:
    history = run(TINY.replace(method=method, rounds=2))
    assert len(history.rounds) == 2
    sizes = [len(e) for e in history.rounds[-1].assignment.experts]
    assert sizes == ([4] * 6 if method == "full" else [2] * 6)


def test_dropped_clients_leave_their_experts_untouched() -> None:
    config = TINY.replace(clients=4, experts=8, capacity="2", rounds=1, method="round_robin")
    sim = Simulation(config)
    strategy = MoEStrategy(config, sim.federation)
    state = strategy.initial_state(sim.initial_weights())
    current = strategy.open_round(state, 0)
    assert [p.client for p in current.plans] == [0, 1, 2, 3]
    replies = sim.train([p for p in current.plans if p.client != 2], state.weights)  # 2 drops
    new = current.aggregate(replies)
    current.evaluate(sim.evaluate(new.weights, current.evaluation_plans()))
    record = current.close()
    dropped_experts = current.plans[2].experts
    for key, value in state.weights.items():
        expert = int(key.split(".")[1]) if key.startswith("experts.") else None
        assert torch.equal(new.weights[key], value) == (expert in dropped_experts)
    assert record.dropped == [2] and record.bytes_up[2] == 0
    assert record.never_trained == 2 and np.isfinite(new.fitness.q).all()
    assert new.deficit[list(dropped_experts)].tolist() == [1.0, 1.0]


def test_the_strategy_is_built_from_the_public_spec_alone() -> None:
    sim = Simulation(TINY)
    spec = type(sim.federation).from_dict(sim.federation.to_dict())  # what a server receives
    assert spec == sim.federation
    strategy = MoEStrategy(TINY, spec)
    problem = strategy.problem(strategy.initial_state(sim.initial_weights()), np.arange(6))
    assert problem.storage.tolist() == [p.storage_bytes for p in sim.profiles]
    assert problem.compute_budget.tolist() == [p.compute_flops for p in sim.profiles]
    assert problem.expert_size.tolist() == list(spec.expert_bytes)
    assert problem.load_min.tolist() == [3.0] * 4 and problem.max_experts.tolist() == [2] * 6


def test_balance_penalty_reaches_the_problem() -> None:
    sim = Simulation(TINY)
    strategy = MoEStrategy(TINY.replace(balance_penalty=0.5, balance_metric="range"),
                           sim.federation)  # fmt: skip
    problem = strategy.problem(strategy.initial_state(sim.initial_weights()), np.arange(6))
    assert problem.balance_penalty == 0.5 and problem.balance_metric == "range"


def test_partial_participation_dropout_and_tiers() -> None:
    config = TINY.replace(clients=8, experts=8, capacity="tiers:2/4/8", participation=0.5,
                          dropout=0.3, rounds=4, carry_deficit=True)  # fmt: skip
    history = run(config)
    assert all(len(r.participants) == 4 for r in history.rounds)
    assert any(r.dropped for r in history.rounds)
    for record in history.rounds:
        loads = np.array(record.load_holders)
        lo, hi = record.assignment.load_min, record.assignment.load_max
        assert (loads >= lo).all() and (loads <= hi).all()
    assert history.setup["capacity"].count(8) in (2, 3)


def test_history_json_round_trips(tmp_path: Path) -> None:
    history = run(TINY.replace(rounds=1), out=tmp_path)
    saved = History.load(tmp_path / "history.json")
    assert saved.without_timings() == history.without_timings()
    assert saved.series("holders.cv") == history.series("holders.cv")
    json.loads((tmp_path / "history.json").read_text())  # strict JSON, no NaN


# -- checkpoints and resume -------------------------------------------------------------


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    latest = completed_rounds(folder / "checkpoint") - 1
    return torch.load(folder / "checkpoint" / f"tensors-{latest}.pt", weights_only=True)


@pytest.mark.parametrize("method", ["flex", "random"])
def test_killed_and_resumed_equals_uninterrupted(tmp_path: Path, method: str) -> None:
    config = TINY.replace(rounds=4, method=method, participation=0.7, dropout=0.2)
    whole = run(config, out=tmp_path / "whole")
    with pytest.raises(Killed):
        run(config, out=tmp_path / "cut", hooks=[kill_after(2)])
    assert len(History.load(tmp_path / "cut" / "history.json").rounds) == 2
    resumed = run(config, out=tmp_path / "cut", resume=True)
    assert resumed.without_timings() == whole.without_timings()
    a, b = read_tensors(tmp_path / "whole"), read_tensors(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoint").iterdir()) == [
        "manifest-2.json", "manifest-3.json", "state-2.json", "state-3.json",
        "tensors-2.pt", "tensors-3.pt",
    ]  # fmt: skip


def test_resume_extends_a_finished_run(tmp_path: Path) -> None:
    run(TINY.replace(rounds=2), out=tmp_path / "short")
    extended = run(TINY.replace(rounds=3), out=tmp_path / "short", resume=True)
    whole = run(TINY.replace(rounds=3))
    strip = lambda h: h.without_timings()["rounds"]  # noqa: E731
    assert strip(extended) == strip(whole)


def test_resume_refuses_a_different_configuration(tmp_path: Path) -> None:
    run(TINY.replace(rounds=1), out=tmp_path)
    with pytest.raises(ValueError, match=r"differing field\(s\): method"):
        run(TINY.replace(rounds=2, method="random"), out=tmp_path, resume=True)
    with pytest.raises(ValueError, match="`resume` needs `out`"):
        run(TINY, resume=True)


def test_resume_without_a_checkpoint_starts_afresh(tmp_path: Path) -> None:
    history = run(TINY.replace(rounds=1), out=tmp_path / "new", resume=True)
    assert len(history.rounds) == 1


def test_config_validation_names_the_field() -> None:
    for changes, message in [
        ({"capacity": "5"}, "`capacity` 5 exceeds `experts` = 4"),
        ({"top_k": 3}, "`top_k` 3 exceeds the smallest `capacity` 2"),
        ({"rounds": "5"}, "`rounds` must be an integer; got '5'"),
        ({"train": {"lr": 0}}, "`lr` must be > 0; got 0"),
        ({"backend": "milp:cbc"}, "`backend` must be one of auto, flow"),
        ({"method": "best"}, "`method` must be one of flex"),
        ({"participation": 0.0}, "`participation`"),
        ({"dataset": "imagenet"}, "`dataset`"),
        ({"clients": 0}, "`clients` must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            TINY.replace(**changes)
    assert FedConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown configuration field"):
        FedConfig.from_dict({"colour": "red"})
