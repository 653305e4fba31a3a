"""FlexMoEStrategy with a user's own model and a ClientApp written as Flower's tutorials
write one (``tutorial_app``): on an in-process grid, and on Flower's simulation runtime."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flower_support import TUTORIAL, LoopbackGrid, task_identity
from tutorial_app import apps

from flexmoe.fedloop import History
from flexmoe.flower import FlexMoEStrategy, LocalFederation, RayOptions, from_record

RUN_CONFIG = {"num-server-rounds": 2, "lr": 0.1, "out-dir": "x", "crash-partition": -1}


@pytest.fixture(autouse=True)
def _identity():  # type: ignore[no-untyped-def]
    with task_identity():
        yield


def _start(strategy: FlexMoEStrategy, grid: LoopbackGrid, rounds: int = 1, **kwargs):  # type: ignore[no-untyped-def]
    arrays = ArrayRecord(apps.new_model().state_dict())
    return strategy.start(grid=grid, initial_arrays=arrays, num_rounds=rounds, **kwargs)


def test_head_is_averaged_like_the_body_and_experts_over_their_holders() -> None:
    strategy = apps.make_strategy()
    grid = LoopbackGrid(apps.client, 3, RUN_CONFIG)
    _start(strategy, grid, train_config=ConfigRecord({"lr": 0.1}),
           evaluate_config=ConfigRecord({"tag": 7}))  # fmt: skip
    replies = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert len(replies) == 3
    states = [from_record(r.content["arrays"]) for r in replies]
    assert strategy.state is not None
    weights = strategy.state.weights
    for key in ("head.weight", "head.bias", "body.weight"):  # equal sample counts: the mean
        assert torch.allclose(weights[key], torch.stack([s[key] for s in states]).mean(0))
    plans = {m.metadata.dst_node_id: m.content["config"]["experts"]
             for m in grid.sent if m.metadata.message_type == "train"}  # fmt: skip
    for e in range(apps.N_EXPERTS):
        holders = [s for r, s in zip(replies, states, strict=True)
                   if e in plans[r.metadata.src_node_id]]  # fmt: skip
        if holders:
            expected = torch.stack([s[f"moe.{e}.weight"] for s in holders]).mean(0)
            assert torch.allclose(weights[f"moe.{e}.weight"], expected)


def test_a_node_gets_only_its_experts_and_the_configs_of_start() -> None:
    strategy = apps.make_strategy()
    grid = LoopbackGrid(apps.client, 3, RUN_CONFIG)
    result = _start(strategy, grid, 2, train_config=ConfigRecord({"lr": 0.05}),
                    evaluate_config=ConfigRecord({"tag": 7}))  # fmt: skip
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    for message in train:
        experts = {f"moe.{e}." for e in message.content["config"]["experts"]}
        keys = set(message.content["arrays"].keys())
        assert {k for k in keys if k.startswith("moe.")} == {k for k in keys if k[:6] in experts}
        assert {"body.weight", "head.weight"} <= keys
    metrics = result.train_metrics_clientapp[2]
    assert metrics["lr_seen"] == pytest.approx(0.05)
    assert metrics["unassigned_experts_received"] == 0
    assert result.evaluate_metrics_clientapp[2]["tag_seen"] == pytest.approx(7)
    assert 0 <= result.evaluate_metrics_clientapp[2]["eval_acc"] <= 1
    assert [len(e) for e in strategy.history.series("assignment.experts")] == [3, 3]


def test_a_config_may_not_set_what_the_strategy_sends() -> None:
    with pytest.raises(ValueError, match=r"`train_config` must not set \['experts'\]"):
        _start(apps.make_strategy(), LoopbackGrid(apps.client, 3, RUN_CONFIG),
               train_config=ConfigRecord({"experts": [0]}))  # fmt: skip


def test_a_missing_sample_count_drops_the_reply_with_its_reason() -> None:
    strategy = apps.make_strategy(weighted_by_key="samples")
    with pytest.raises(RuntimeError, match=r"no node sent a usable reply; the first: its "
                       r"MetricRecord must hold `samples` \(the sample count"):  # fmt: skip
        _start(strategy, LoopbackGrid(apps.client, 3, RUN_CONFIG),
               train_config=ConfigRecord({"lr": 0.1}))  # fmt: skip


def test_a_signal_that_needs_a_statistic_the_replies_lack_says_which() -> None:
    for signal, stat in [("accuracy", "accuracy"), ("alone", "alone_accuracy")]:
        strategy = FlexMoEStrategy.for_model(
            ArrayRecord(apps.new_model().state_dict()), experts=r"moe\.(\d+)\.",
            config={"capacity": 1, "fitness": {"signal": signal}})  # fmt: skip
        with pytest.raises(ValueError, match=rf"the fitness signal `{signal}` reads the per-expert "
                           rf"statistic '{stat}'.*send it as `stats.{stat}`"):  # fmt: skip
            _start(strategy, LoopbackGrid(apps.client, 3, RUN_CONFIG),
                   train_config=ConfigRecord({"lr": 0.1}))  # fmt: skip


def test_metric_aggregation_functions_get_the_replies_and_the_key() -> None:
    seen: list[tuple[int, str]] = []

    def count(contents: list[RecordDict], key: str) -> MetricRecord:
        seen.append((len(contents), key))
        return MetricRecord({"replies": len(contents)})

    strategy = apps.make_strategy(train_metrics_aggr_fn=count, evaluate_metrics_aggr_fn=count)
    result = _start(strategy, LoopbackGrid(apps.client, 3, RUN_CONFIG),
                    train_config=ConfigRecord({"lr": 0.1}),
                    evaluate_config=ConfigRecord({"tag": 1}))  # fmt: skip
    assert seen == [(3, "num-examples"), (3, "num-examples")]
    assert result.train_metrics_clientapp[1]["replies"] == 3
    assert result.evaluate_metrics_clientapp[1]["replies"] == 3


def test_the_experts_rule_must_find_every_expert() -> None:
    state = apps.new_model().state_dict()
    with pytest.raises(ValueError, match=r"`experts` assigns no parameter to an expert; the "
                       r"parameters: body.weight, body.bias"):  # fmt: skip
        FlexMoEStrategy.for_model(state, experts=r"experts\.(\d+)\.")
    with pytest.raises(ValueError, match=r"`experts` must have exactly one group"):
        FlexMoEStrategy.for_model(state, experts=r"moe\.\d+\.")
    with pytest.raises(ValueError, match=r"expert ids must be 0 .. E-1; `experts` gives \[1, 2\]"):
        FlexMoEStrategy.for_model(state, experts=lambda k: int(k[4]) if k[4:5] in "12" and
                                  k.startswith("moe.") else None)  # fmt: skip


@pytest.mark.slow
def test_tutorial_app_on_flowers_simulation_runtime(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with LocalFederation(RayOptions(num_cpus=2), cwd=tmp_path) as federation:
        result = federation.run(TUTORIAL, num_supernodes=3, arguments=[
            "--run-config", f"out-dir='{out}' crash-partition=1"])  # fmt: skip
    assert result.ok, result
    history = History.load(out / "history.json")
    assert len(history.rounds) == 2
    (crashed,), after = history.series("dropped")  # partition 1 crashed in round 1
    assert after == [] and history.series("participants") == [[0, 1, 2]] * 2
    assert history.rounds[0].bytes_up[crashed] == 0
    summary = json.loads((out / "result.json").read_text())
    assert summary["rows"] == 3
    assert summary["train"]["2"]["lr_seen"] == pytest.approx(0.1)
    assert summary["train"]["2"]["unassigned_experts_received"] == 0
    assert summary["evaluate"]["2"]["tag_seen"] == pytest.approx(7)
