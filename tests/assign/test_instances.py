"""Instance generators: seeded, named, shaped as asked, feasible, and skewed where promised."""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign import AssignmentProblem, infeasibility_reason, load_stats, verify
from flexmoe.assign.instances import GENERATORS, _witness, generate, heterogeneous, load_band

KINDS = list(GENERATORS)
SIZES = [(1, 1, 1), (7, 3, 2), (50, 16, 4), (300, 64, 8), (1000, 64, 8)]


def top_k(problem: AssignmentProblem, k: np.ndarray | int) -> np.ndarray:
    """Each client's `k` best experts by utility, ignoring every other constraint."""
    order = np.argsort(-problem.utility, axis=1, kind="stable")
    ranks = np.argsort(order, axis=1)
    return ranks < np.broadcast_to(k, (problem.n_clients,))[:, None]


def witness_of(p: AssignmentProblem) -> np.ndarray:
    """The generators' witness for `p` (heaviest clients first for weighted loads)."""
    order = None
    if p.load_weight is not None:
        order = np.argsort(-p.load_weight[:, 0], kind="stable")
    return _witness(p.max_experts, p.n_experts, order)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_problem_other_seed_other_problem(kind):
    a, b, c = (generate(kind, 200, 16, 4, seed=s) for s in (5, 5, 6))
    for name in ("utility", "max_experts", "load_min", "load_max", "storage", "load_weight"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.utility, c.utility)
    assert (a.name, c.name) == (f"{kind}-200x16x4-s5", f"{kind}-200x16x4-s6")


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_counts(kind, size):
    n, e, k = size
    p = generate(kind, n, e, k, seed=1)
    assert p.shape == (n, e)
    assert (p.min_experts == p.max_experts).all() and p.max_experts.max() <= k
    if kind != "heterogeneous":
        assert (p.max_experts == k).all()
    assert p.load_min.shape == p.load_max.shape == (e,)


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_feasible_by_construction(kind, size):
    p = generate(kind, *size, seed=2)
    assert infeasibility_reason(p) is None
    check = verify(p, witness_of(p))
    assert check.ok, check.reason


@pytest.mark.parametrize("kind", KINDS)
def test_every_expert_is_trained_when_the_mean_load_allows(kind):
    p = generate(kind, 300, 64, 8, seed=3)
    assert (p.load_min >= 1).all()
    assert (p.load_min <= p.load_max).all()


def test_default_band_is_ten_percent_around_the_mean():
    p = generate("uniform", 10_000, 64, 8)
    assert set(p.load_min) == {1125.0} and set(p.load_max) == {1375.0}
    assert generate("uniform", 100, 8, 2, load_slack=None).load_max.tolist() == [np.inf] * 8


def test_band_widens_to_hold_the_witness():
    lo, hi = load_band(10.0, 0.0, 3, np.array([9.0, 10.0, 12.0]))
    assert lo.tolist() == [9.0, 10.0, 10.0] and hi.tolist() == [10.0, 10.0, 12.0]


def test_clustered_top_k_collapses_onto_few_experts():
    skewed = generate("clustered", 2000, 64, 8, seed=0)
    flat = generate("uniform", 2000, 64, 8, seed=0)
    cv_skewed = load_stats(top_k(skewed, 8), skewed)["holders"]
    cv_flat = load_stats(top_k(flat, 8), flat)["holders"]
    assert cv_skewed.cv > 1.0 and cv_skewed.zero >= 16
    assert cv_flat.cv < 0.2 and cv_flat.zero == 0


@pytest.mark.parametrize("seed", range(3))
def test_heterogeneous_budgets_bind_for_some_clients_only(seed):
    p = heterogeneous(2000, 32, 8, seed=seed)
    assert sorted(set(p.max_experts.tolist())) == [2, 4, 8]
    x = top_k(p, p.max_experts)
    over_storage = (x @ p.expert_size) > p.storage
    over_compute = (x * p.compute_cost).sum(axis=1) > p.compute_budget
    for over in (over_storage, over_compute):
        assert 0.1 < over.mean() < 0.9


def test_weighted_loads_are_client_volumes():
    p = generate("weighted", 2000, 32, 4, seed=0)
    volume = p.load_weight[:, 0]
    np.testing.assert_array_equal(p.load_weight, np.repeat(volume[:, None], 32, axis=1))
    assert volume.max() / np.median(volume) > 5  # log-normal: a few very large clients
    mean = 4 * volume.sum() / 32
    assert p.load_min[0] == np.floor(0.9 * mean) and p.load_max[0] == np.ceil(1.1 * mean)


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown instance kind 'zipf'; valid kinds: uniform, "):
        generate("zipf", 10, 4, 2)


@pytest.mark.parametrize(
    ("size", "match"),
    [((10, 4, 5), r"`k` must be in 1..n_experts = 1..4; got 5"), ((0, 4, 2), r"must be >= 1")],
)
def test_bad_sizes(size, match):
    with pytest.raises(ValueError, match=match):
        generate("uniform", *size)


def test_generator_options_pass_through():
    p = generate("heterogeneous", 100, 8, 4, tiers=[1, 4], tier_probs=[0.5, 0.5])
    assert set(p.max_experts.tolist()) == {1, 4}
    with pytest.raises(TypeError):
        generate("uniform", 10, 4, 2, tiers=[1])


@pytest.mark.parametrize("kind", KINDS)
def test_every_generator_takes_the_balance_penalty(kind):
    plain = generate(kind, 60, 8, 2, seed=1)
    soft = generate(kind, 60, 8, 2, seed=1, balance_penalty=0.01)
    ranged = generate(kind, 60, 8, 2, seed=1, balance_penalty=0.5, balance_metric="range")
    assert (plain.balance_penalty, soft.balance_penalty, ranged.balance_penalty) == (0, 0.01, 0.5)
    assert str(soft.balance_metric) == "variance" and str(ranged.balance_metric) == "range"
    assert soft.name == f"{plain.name}-lam0.01" and ranged.name == f"{plain.name}-lam0.5-range"
    np.testing.assert_array_equal(soft.utility, plain.utility)
    assert infeasibility_reason(soft) is None
    with pytest.raises(ValueError, match="`balance_penalty` must be finite and >= 0"):
        generate(kind, 10, 4, 2, balance_penalty=-1)
