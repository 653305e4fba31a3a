"""Flower message records round-trip flexmoe's plans, replies, counts and identities
(no Ray needed)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

from flexmoe.fedloop import ClientPlan, ClientProfile, ClientReply
from flexmoe.flower.protocol import (
    PLAN_KEYS,
    ProtocolError,
    counts_from_metrics,
    counts_to_metrics,
    from_record,
    identity_from_content,
    identity_reply,
    plan_from_config,
    plan_to_config,
    reply_from_content,
    reply_to_content,
    to_record,
)


def test_every_plan_field_travels() -> None:
    plan = ClientPlan(client=3, round=5, experts=(1, 4), seed=123456)
    config = plan_to_config(plan)
    assert sorted(config) == sorted(f.name for f in dataclasses.fields(ClientPlan))
    assert tuple(sorted(config)) == tuple(sorted(PLAN_KEYS))
    assert plan_from_config(config) == plan
    with pytest.raises(ProtocolError, match=r"the train config has no `seed`"):
        plan_from_config({k: v for k, v in config.items() if k != "seed"})


def test_state_round_trip_gives_writable_equal_tensors() -> None:
    state = {"backbone.1.weight": torch.randn(3, 2), "experts.0.0.bias": torch.zeros(4)}
    back = from_record(to_record(state))
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor)
        back[key].add_(1.0)  # writable, and not a view of the original
    assert torch.equal(state["experts.0.0.bias"], torch.zeros(4))


def test_reply_round_trip_keeps_nan_feedback() -> None:
    reply = ClientReply(
        client=2, n_samples=40, weights={"experts.1.0.weight": torch.ones(2, 2)},
        stats={"routed": np.array([0.0, 40.0]), "accuracy": np.array([np.nan, 0.5]),
               "loss": np.array([np.nan, 1.25])},
        train_loss=1.5,
    )  # fmt: skip
    content = reply_to_content(reply)
    assert content.metric_records["metrics"]["num-examples"] == 40
    back = reply_from_content(content, client=2, held=(1,), n_experts=2)
    assert (back.client, back.n_samples, back.train_loss) == (2, 40, 1.5)
    assert back.routed.tolist() == [0.0, 40.0]
    accuracy, loss = back.stats["accuracy"], back.stats["loss"]
    assert math.isnan(accuracy[0]) and accuracy[1] == 0.5
    assert math.isnan(loss[0]) and loss[1] == 1.25
    assert torch.equal(back.weights["experts.1.0.weight"], torch.ones(2, 2))


def test_a_new_per_expert_statistic_travels_without_a_protocol_change() -> None:
    stats = {"routed": np.array([3.0, 0.0]), "confidence": np.array([0.75, np.nan])}
    content = reply_to_content(ClientReply(0, 3, {}, stats))
    back = reply_from_content(content, client=0, held=(0,), n_experts=2)
    assert sorted(back.stats) == ["confidence", "routed"]
    assert back.stats["confidence"][0] == 0.75 and math.isnan(back.stats["confidence"][1])


def _tutorial_reply(metrics: dict) -> RecordDict:  # type: ignore[type-arg]
    arrays = ArrayRecord.from_torch_state_dict({"w": torch.zeros(2)})
    return RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)})


def test_a_reply_without_routed_counts_every_sample_on_each_held_expert() -> None:
    back = reply_from_content(_tutorial_reply({"num-examples": 12, "train_loss": 0.5}),
                              client=1, held=(0, 2), n_experts=3)  # fmt: skip
    assert back.routed.tolist() == [12.0, 0.0, 12.0] and back.train_loss == 0.5


def test_malformed_replies_say_what_is_wrong() -> None:
    with pytest.raises(ProtocolError, match=r"must hold `num-examples` \(the sample count, a "
                       r"number >= 0; `weighted_by_key`\); got None"):  # fmt: skip
        reply_from_content(_tutorial_reply({"loss": 1.0}), client=0, held=(0,), n_experts=2)
    with pytest.raises(ProtocolError, match=r"`stats.loss` must hold one value per expert \(2\); "
                       r"got 3"):  # fmt: skip
        reply_from_content(_tutorial_reply({"num-examples": 1, "stats.loss": [1.0, 2.0, 3.0]}),
                           client=0, held=(0,), n_experts=2)  # fmt: skip
    with pytest.raises(ProtocolError, match=r"expected exactly one ArrayRecord, got 0"):
        reply_from_content(RecordDict({"m": MetricRecord({"num-examples": 1})}), client=0,
                           held=(0,), n_experts=2)  # fmt: skip


def test_evaluation_counts_round_trip_and_are_optional() -> None:
    counts = {"test": (3, 5), "val": (1, 2), "pooled_test": (30, 50), "pooled_val": (9, 20)}
    metrics = counts_to_metrics(counts)
    assert metrics["num-examples"] == 5
    assert counts_from_metrics(metrics) == counts
    assert counts_from_metrics({"num-examples": 5, "eval_acc": 0.5}) is None


def test_identity_round_trip() -> None:
    profile = ClientProfile(capacity=2, storage_bytes=800, compute_flops=1.5e6, flops_per_param=6.0)
    assert identity_from_content(identity_reply(4, profile)) == (4, profile)
    with pytest.raises(ProtocolError, match=r"holds an `identity` ConfigRecord"):
        identity_from_content(RecordDict())
