"""The MoE classifier: masked top-k routing, per-expert statistics, presets, sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flexmoe.models import ModelSpec, MoEClassifier, build_model, route, shared_keys


def mask(*experts: int, n: int = 4) -> torch.Tensor:
    held = torch.zeros(n, dtype=torch.bool)
    held[list(experts)] = True
    return held


@pytest.fixture
def model() -> MoEClassifier:
    torch.manual_seed(0)
    return build_model("mlp", in_shape=(6,), n_classes=3, n_experts=4, top_k=2, width=8)


def test_route_never_uses_absent_experts() -> None:
    logits = torch.tensor([[9.0, 1.0, 8.0, 2.0], [0.0, 5.0, 7.0, 6.0]])
    weights = route(logits, mask(1, 3), top_k=1)
    assert weights[:, [0, 2]].eq(0).all()
    assert weights.tolist() == [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]


def test_route_with_k_above_held_uses_every_held_expert() -> None:
    weights = route(torch.randn(5, 4), mask(2), top_k=3)
    assert weights[:, 2].eq(1).all() and weights.sum(1).allclose(torch.ones(5))


def test_route_weights_are_a_softmax_over_the_top_k() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    weights = route(logits, mask(0, 1, 2, 3), top_k=2)
    expected = torch.softmax(torch.tensor([3.0, 4.0]), 0)
    assert weights[0, 2:].allclose(expected) and weights[0, :2].eq(0).all()


@pytest.mark.parametrize(
    ("held", "k", "message"),
    [
        (torch.zeros(4, dtype=torch.bool), 1, "at least one expert"),
        (torch.ones(3, dtype=torch.bool), 1, r"shape \(4,\)"),
        (torch.ones(4), 1, "bool tensor"),
        (torch.ones(4, dtype=torch.bool), 0, "`top_k` must be >= 1"),
    ],
)
def test_route_rejects_bad_input(held: torch.Tensor, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        route(torch.zeros(2, 4), held, k)


def test_absent_experts_cannot_influence_the_output(model: MoEClassifier) -> None:
    x = torch.randn(7, 6)
    held = mask(0, 2)
    before = model(x, held).logits
    with torch.no_grad():
        for p in model.experts[1].parameters():
            p.fill_(float("nan"))
        for p in model.experts[3].parameters():
            p.fill_(1e6)
    out = model(x, held)
    assert torch.equal(out.logits, before)
    assert sorted(out.expert_logits) == [0, 2]


def test_absent_experts_get_no_gradient(model: MoEClassifier) -> None:
    out = model(torch.randn(7, 6), mask(1, 3))
    F.cross_entropy(out.logits, torch.zeros(7, dtype=torch.long)).backward()
    assert all(p.grad is None for e in (0, 2) for p in model.experts[e].parameters())
    assert all(p.grad is not None for e in (1, 3) for p in model.experts[e].parameters())


def test_expert_stats_count_loss_and_accuracy_on_routed_samples(model: MoEClassifier) -> None:
    model.top_k = 1
    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    out = model(x, mask(0, 1, 2))
    stats = out.expert_stats(y)
    assert stats.count.sum() == 20 and stats.count[3] == 0
    for e in range(3):
        routed = out.weights[:, e] > 0
        if routed.any():
            own = out.expert_logits[e][routed]
            assert stats.correct[e] == (own.argmax(1) == y[routed]).sum()
            assert torch.isclose(stats.mean_loss[e], F.cross_entropy(own, y[routed]))
    assert torch.isnan(stats.accuracy[3]) and torch.isnan(stats.mean_loss[3])
    both = stats + stats
    assert torch.equal(both.count, 2 * stats.count)


@pytest.mark.parametrize(
    ("preset", "in_shape"),
    [("mlp", (64,)), ("conv1d", (40,)), ("cnn", (3, 32, 32)), ("cnn", (1, 32, 32))],
)
def test_presets_forward_and_sizes(preset: str, in_shape: tuple[int, ...]) -> None:
    model = build_model(preset, in_shape=in_shape, n_classes=10, n_experts=3, top_k=2)
    out = model(torch.randn(4, *in_shape), mask(0, 2, n=3))
    assert out.logits.shape == (4, 10)
    params = model.expert_num_params()
    assert len(set(params)) == 1 and model.expert_nbytes() == [4 * p for p in params]
    assert model.backbone_nbytes() > 0


def test_model_spec_round_trips_and_rebuilds() -> None:
    spec = ModelSpec("conv1d", (40,), 10, 4, top_k=1)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    model = spec.build()
    assert model.n_experts == 4 and model.top_k == 1


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid presets: mlp, conv1d, cnn"):
        build_model("rnn", in_shape=(4,), n_classes=2, n_experts=2)


def test_shared_keys_never_include_the_gate(model: MoEClassifier) -> None:
    state = model.state_dict()
    keys = shared_keys(state)
    assert keys and not any(k.startswith("gate.") for k in keys)
    assert {k.split(".")[1] for k in shared_keys(state, [2]) if k.startswith("experts.")} == {"2"}


def test_mix_of_a_shared_pass_is_the_forward_pass(model: MoEClassifier) -> None:
    x = torch.randn(7, 6)
    every = {e: model.experts[e](model.backbone(x)) for e in range(4)}  # more than held
    for held in (mask(1, 3), mask(0), mask(0, 1, 2, 3)):
        direct, mixed = model(x, held), model.mix(model.backbone(x), held, every)
        assert torch.equal(direct.logits, mixed.logits)
        assert torch.equal(direct.weights, mixed.weights)
        assert sorted(mixed.expert_logits) == held.nonzero().flatten().tolist()


def test_expert_sums_of_batches_spread_to_the_sum_of_their_stats(model: MoEClassifier) -> None:
    from flexmoe.models import ExpertStats

    held, y = mask(0, 2), torch.tensor([0, 1, 2, 1, 0])
    first, second = model(torch.randn(5, 6), held), model(torch.randn(5, 6), held)
    total = first.expert_stats(y) + second.expert_stats(y)
    spread = ExpertStats.spread(first.expert_sums(y) + second.expert_sums(y), [0, 2], 4)
    for name in ("count", "loss_sum", "correct"):
        assert torch.equal(getattr(spread, name), getattr(total, name))
    assert spread.count[[1, 3]].eq(0).all() and spread.count.sum() > 0
