"""Partitions, client profiles, fitness, aggregation and the assignment methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexmoe.assign import AssignmentProblem
from flexmoe.fedloop import (
    METHODS,
    ClientReply,
    FedConfig,
    Fitness,
    FitnessConfig,
    MethodSetup,
    RoundInput,
    client_capacities,
    client_profiles,
    label_skew,
    load_band,
    parse_capacity,
    parse_partition,
    partition,
    sample_round,
    split_clients,
)
from flexmoe.fedloop.aggregate import aggregate
from flexmoe.fedloop.strategy import MoEStrategy

LABELS = np.repeat(np.arange(10), 40)


# -- partitions -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.3", "dirichlet:5", "shards:2"])
def test_partitions_cover_every_sample_once_and_are_seeded(spec: str) -> None:
    parts = partition(LABELS, 8, spec, seed=1, min_size=10)
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) and len(np.unique(joined)) == len(LABELS)
    assert min(len(p) for p in parts) >= 10
    again = partition(LABELS, 8, spec, seed=1, min_size=10)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_skew_grows_as_alpha_shrinks_and_shards_limit_classes() -> None:
    tv = {
        spec: label_skew(LABELS, partition(LABELS, 8, spec, seed=0, min_size=5), 10)
        for spec in ("iid", "dirichlet:100", "dirichlet:0.1", "shards:1")
    }
    assert tv["iid"].total_variation < 0.2 < tv["dirichlet:0.1"].total_variation
    assert tv["dirichlet:100"].total_variation < tv["dirichlet:0.1"].total_variation
    assert tv["shards:1"].classes_per_client <= 2 and tv["iid"].classes_per_client == 10
    assert "classes/client" in str(tv["iid"])


def test_partition_errors() -> None:
    with pytest.raises(ValueError, match="cannot give 50 clients at least min_size = 10"):
        partition(LABELS, 50, "iid", min_size=10)
    with pytest.raises(ValueError, match="gave some client fewer than min_size"):
        partition(LABELS, 20, "dirichlet:0.01", min_size=19, max_tries=3)
    for bad in ("dirichlet", "dirichlet:0", "shards:1.5", "iid:3", "zipf:2"):
        with pytest.raises(ValueError, match="valid: iid, dirichlet"):
            parse_partition(bad)


def test_client_splits_are_disjoint_with_the_requested_fractions() -> None:
    parts = partition(LABELS, 4, "iid", seed=0)
    splits = split_clients(parts, val_fraction=0.1, test_fraction=0.2, seed=0)
    for part, split in zip(parts, splits, strict=True):
        assert (len(split.test), len(split.val)) == (20, 10)
        together = np.concatenate([split.train, split.val, split.test])
        assert np.array_equal(np.sort(together), part)
    with pytest.raises(ValueError, match="sum < 1"):
        split_clients(parts, val_fraction=0.5, test_fraction=0.5, seed=0)


# -- clients ----------------------------------------------------------------------------


def test_capacity_profiles() -> None:
    assert parse_capacity("3").tiers == (3,) and parse_capacity("tiers:2/4/8").tiers == (2, 4, 8)
    with pytest.raises(ValueError, match="valid: <k>"):
        parse_capacity("tiers:2/x")
    with pytest.raises(ValueError, match="valid: <k>"):
        parse_capacity("0")
    caps = client_capacities(parse_capacity("tiers:2/4/8"), 9, 8, seed=0)
    assert sorted(caps.tolist()) == [2, 2, 2, 4, 4, 4, 8, 8, 8]
    with pytest.raises(ValueError, match="exceeds the 4 experts"):
        client_capacities(parse_capacity("tiers:2/8"), 4, 4)
    profiles = client_profiles(caps, expert_bytes=100, expert_params=25, train_sizes=[10] * 9,
                               epochs=2)  # fmt: skip
    assert [p.storage_bytes // 100 for p in profiles] == caps.tolist()
    assert profiles[0].compute_flops == caps[0] * 6 * 25 * 2 * 10


def test_sample_round_participation_and_dropout() -> None:
    rng = np.random.default_rng(0)
    participants, dropped = sample_round(rng, 20, 0.25, 0.0)
    assert len(participants) == 5 and participants == sorted(participants) and dropped == []
    participants, dropped = sample_round(rng, 20, 1.0, 0.5)
    assert participants == list(range(20)) and 0 < len(dropped) < 20


# -- fitness ----------------------------------------------------------------------------


def test_fitness_ema_only_on_reported_pairs() -> None:
    fit = Fitness.start(2, 3, FitnessConfig(signal="accuracy", beta=0.5, initial=1.0))
    fit.update(1, {"accuracy": np.array([0.2, 0.6, np.nan]), "loss": np.zeros(3),
                   "routed": np.array([4.0, 2.0, 0.0])}, held=[0, 1])  # fmt: skip
    assert fit.q.tolist() == [[1.0, 1.0, 1.0], [0.6, 0.8, 1.0]]
    assert fit.tries.tolist() == [[0, 0, 0], [1, 1, 0]]


def test_loss_signal_and_exploration_bonus() -> None:
    fit = Fitness.start(
        1, 2, FitnessConfig(signal="loss", alpha=2.0, beta=1.0, bonus=0.5, initial=1.0)
    )
    fit.update(0, {"accuracy": np.zeros(2), "loss": np.array([0.5, 0.0]),
                   "routed": np.array([1.0, 0.0])}, held=[0])  # fmt: skip
    assert np.isclose(fit.q[0, 0], np.exp(-1.0))
    assert np.allclose(fit.utility()[0], [np.exp(-1.0) + 0.5 / np.sqrt(2), 1.0 + 0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"signal": "f1"}, "`signal`"), ({"beta": 0}, "`beta`"), ({"alpha": -1}, "`alpha`"),
     ({"bonus": -0.1}, "`bonus`"), ({"initial": float("inf")}, "`initial`")],
)  # fmt: skip
def test_fitness_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FitnessConfig(**kwargs)


# -- aggregation ------------------------------------------------------------------------


def reply(client: int, n: int, value: float, routed: list[float]) -> ClientReply:
    weights = {"backbone.w": torch.full((2,), value)}
    for e, u in enumerate(routed):
        if u >= 0:
            weights[f"experts.{e}.w"] = torch.full((2,), value)
    return ClientReply(client, n, weights, {"routed": np.maximum(np.array(routed), 0.0)})


def test_aggregation_weights_and_untouched_experts() -> None:
    start = {"backbone.w": torch.zeros(2)} | {f"experts.{e}.w": torch.full((2,), -1.0)
                                              for e in range(3)}  # fmt: skip
    # expert 0: both hold it, routed 1 and 3; expert 1: held but nothing routed; 2: nobody
    replies = [reply(0, 10, 1.0, [1, 0, -1]), reply(1, 30, 5.0, [3, -1, -1])]
    new = aggregate(start, replies)
    assert torch.allclose(new["backbone.w"], torch.full((2,), 4.0))  # (10·1 + 30·5) / 40
    assert torch.allclose(new["experts.0.w"], torch.full((2,), 4.0))  # (1·1 + 3·5) / 4
    assert torch.equal(new["experts.1.w"], start["experts.1.w"])
    assert torch.equal(new["experts.2.w"], start["experts.2.w"])
    assert aggregate(start, []) == start


# -- assignment methods -----------------------------------------------------------------


def test_load_band_is_the_fair_share() -> None:
    lo, hi = load_band(np.full(20, 2), 8)
    assert lo.tolist() == [5.0] * 8 and hi.tolist() == [5.0] * 8
    lo, hi = load_band(np.full(3, 1), 8)  # fewer slots than experts
    assert lo.tolist() == [0.0] * 8 and hi.tolist() == [1.0] * 8
    lo, _ = load_band(np.full(3, 1), 8, deficit=np.array([0, 2, 0, 1, 0.5, 3, 0, 0]))
    assert np.flatnonzero(lo).tolist() == [1, 3, 5]


def assign_experts(method: str, utility: np.ndarray, capacity: np.ndarray, *, round: int,
                   rng: np.random.Generator):  # fmt: skip
    """A method's assignment on the round problem the strategy would build (no budgets)."""
    lo, hi = load_band(capacity, utility.shape[1])
    problem = AssignmentProblem(utility, max_experts=capacity, load_min=lo, load_max=hi)
    config = FedConfig(method=method, clients=len(capacity), experts=utility.shape[1],
                       capacity=str(min(capacity)))  # fmt: skip
    chosen = METHODS[method](MethodSetup(config, spec=None))  # type: ignore[arg-type]
    round_input = RoundInput(round, tuple(range(len(capacity))), problem, rng,
                             int(rng.integers(2**31)))  # fmt: skip
    return chosen.assign(round_input)


def test_flex_is_balanced_and_greedy_is_not() -> None:
    rng = np.random.default_rng(0)
    utility = np.tile(np.linspace(1.0, 0.1, 8), (20, 1)) + 0.01 * rng.random((20, 8))
    capacity = np.full(20, 2)
    flex = assign_experts("flex", utility, capacity, round=0, rng=rng)
    assert flex.x.sum(axis=0).tolist() == [5] * 8 and flex.x.sum(axis=1).tolist() == [2] * 20
    assert flex.backend == "flow" and flex.status == "optimal" and flex.wall_time > 0
    greedy = assign_experts("greedy", utility, capacity, round=0, rng=rng)
    assert greedy.x[:, :2].all() and greedy.x.sum() == 40
    assert greedy.objective >= flex.objective
    assert greedy.status == "relaxed" and "load_max" in greedy.message  # ignores the band


def test_solver_free_methods() -> None:
    rng = np.random.default_rng(0)
    capacity = np.array([2, 2, 2, 2, 3])
    for method in ("random", "round_robin", "full"):
        a = assign_experts(method, np.zeros((5, 4)), capacity, round=3, rng=rng)
        expected = [4] * 5 if method == "full" else capacity.tolist()
        assert a.x.sum(axis=1).tolist() == expected and a.wall_time == 0
    rr = assign_experts("round_robin", np.zeros((4, 4)), np.full(4, 2), round=1, rng=rng)
    assert rr.x.sum(axis=0).tolist() == [2, 2, 2, 2] and rr.x[0].tolist() == [0, 1, 1, 0]
    assert rr.status == "feasible" and rr.backend == "round_robin"
    with pytest.raises(ValueError, match="valid methods: flex"):
        METHODS["best"]


def test_budgets_flow_cannot_take_reach_the_milp() -> None:
    """Experts of different sizes: the storage row is not a count, so ``auto`` picks the
    MILP, and the round's assignment keeps the row (equal sizes fold to counts: flow)."""
    from flexmoe.fedloop.clients import client_profiles
    from flexmoe.fedloop.spec import FederationSpec
    from flexmoe.models import ModelSpec

    config = FedConfig(clients=6, experts=4, capacity="2", rounds=1)
    profiles = tuple(client_profiles(np.full(6, 2), expert_bytes=10, expert_params=2,
                                     train_sizes=[5] * 6, epochs=1))  # fmt: skip
    spec = FederationSpec(ModelSpec("mlp", (4,), 2, n_experts=4, top_k=1), profiles,
                          expert_bytes=(6, 10, 10, 14), expert_params=(2, 2, 2, 2),
                          backbone_bytes=100)  # fmt: skip
    strategy = MoEStrategy(config, spec)
    current = strategy.open_round(strategy.initial_state({}), 0)
    assert current.assignment.backend == "milp" and current.assignment.status == "optimal"
    storage = next(row for row in current.problem.budgets if row.name == "storage")
    x = np.asarray(current.assignment.x)
    assert (x @ storage.cost <= storage.limit).all() and storage.limit.tolist() == [20.0] * 6
    equal = FederationSpec(spec.model, profiles, (10,) * 4, (2,) * 4, 100)
    moe = MoEStrategy(config, equal)
    assert moe.open_round(moe.initial_state({}), 0).assignment.backend == "flow"


def test_the_round_evaluation_shares_one_pass_and_gives_each_clients_own_figures() -> None:
    from flexmoe.fedloop.simulation import Simulation
    from flexmoe.fedloop.task import workspace

    sim = Simulation(FedConfig(clients=4, experts=4, capacity="2", min_size=10, width=16,
                               expert_hidden=8, rounds=1, seed=2))  # fmt: skip
    torch.manual_seed(5)  # a different gate per client, so the clients' figures differ
    for gate in sim.gates:
        for value in gate.values():
            value.normal_()
    weights = sim.initial_weights()
    plans = [(0, (0, 1)), (1, (2, 3)), (2, (1,)), (3, (0, 1, 2, 3))]
    shared = sim.evaluate(weights, plans)
    for (client, experts), counts in zip(plans, shared, strict=True):
        model = workspace(sim.spec)
        model.load_state_dict(weights | sim.gates[client], strict=True)
        assert counts == sim.evaluate_client(model, client, list(experts))  # unshared
    assert len({counts["pooled_test"] for counts in shared}) > 1
