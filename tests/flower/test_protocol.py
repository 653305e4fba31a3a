"""Flower message records round-trip flexmoe's plans and replies (no Ray needed)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")

from flexmoe.fedloop import ClientPlan, ClientReply
from flexmoe.flower.protocol import (
    from_record,
    plan_from_config,
    plan_to_config,
    reply_from_content,
    reply_to_content,
    to_record,
)


def test_plan_round_trip() -> None:
    plan = ClientPlan(client=3, round=5, experts=(1, 4), seed=123456)
    assert plan_from_config(plan_to_config(plan)) == plan


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
    back = reply_from_content(reply_to_content(reply))
    assert (back.client, back.n_samples, back.train_loss) == (2, 40, 1.5)
    assert back.routed.tolist() == [0.0, 40.0]
    accuracy, loss = back.stats["accuracy"], back.stats["loss"]
    assert math.isnan(accuracy[0]) and accuracy[1] == 0.5
    assert math.isnan(loss[0]) and loss[1] == 1.25
    assert torch.equal(back.weights["experts.1.0.weight"], torch.ones(2, 2))


def test_a_new_per_expert_statistic_travels_without_a_protocol_change() -> None:
    stats = {"routed": np.array([3.0, 0.0]), "confidence": np.array([0.75, np.nan])}
    back = reply_from_content(reply_to_content(ClientReply(0, 3, {}, stats)))
    assert sorted(back.stats) == ["confidence", "routed"]
    assert back.stats["confidence"][0] == 0.75 and math.isnan(back.stats["confidence"][1])
