"""Fitness options: signals, the neutral start, normalisation, probes (client and server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fl_support import TINY

from flexmoe.fedloop import (
    ClientPlan,
    Fitness,
    FitnessConfig,
    History,
    MoEStrategy,
    Simulation,
    run,
    train_client,
)
from flexmoe.fedloop.fitness import NORMALISATIONS
from flexmoe.fedloop.policies import permuted, ranked, unpermuted
from flexmoe.fedloop.task import alone_scores, workspace

PROBE = {"signal": "alone", "probe": 1, "initial": None}


def stats(**values: list[float]) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=float) for k, v in values.items()}


# -- the update ------------------------------------------------------------------------


def test_neutral_start_values_untried_pairs_at_the_clients_mean() -> None:
    fit = Fitness.start(3, 4, FitnessConfig(signal="accuracy", initial=None, beta=0.5))
    assert fit.utility().tolist() == [[0.0] * 4] * 3  # nothing tried anywhere
    fit.update(0, stats(routed=[5, 5, 0, 0], accuracy=[0.2, 0.8, 0, 0]), [0, 1])
    assert fit.q[0, :2].tolist() == [0.2, 0.8]  # the first score is the value
    assert fit.utility()[0].tolist() == [0.2, 0.8, 0.5, 0.5]
    assert fit.utility()[1].tolist() == [0.5] * 4  # a client with nothing tried: all pairs
    fit.update(0, stats(routed=[5, 0, 0, 0], accuracy=[0.6, 0, 0, 0]), [0, 1])
    assert np.allclose(fit.q[0, :2], [0.4, 0.4])  # then the EMA (expert 1 unrouted: s = 0)
    with_bonus = Fitness(FitnessConfig(signal="accuracy", initial=None, bonus=0.2), fit.q,
                         fit.tries)  # fmt: skip
    assert np.allclose(with_bonus.utility()[0], [0.4 + 0.2 / np.sqrt(3), 0.4 + 0.2 / np.sqrt(3),
                                                 0.4 + 0.2, 0.4 + 0.2])  # fmt: skip


def test_normalisations_of_one_clients_round() -> None:
    s = np.array([0.2, 0.9, 0.5])
    assert NORMALISATIONS["rank"](s).tolist() == pytest.approx([1 / 6, 5 / 6, 3 / 6])
    z = NORMALISATIONS["z"](s)
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)
    assert NORMALISATIONS["z"](np.array([0.3, 0.3])).tolist() == [0.0, 0.0]
    fit = Fitness.start(
        1, 4, FitnessConfig(signal="accuracy", normalise="rank", beta=1.0, initial=None)
    )
    fit.update(0, stats(routed=[1, 1, 1, 0], accuracy=[0.2, 0.9, 0.5, 0]), [0, 1, 2])
    assert fit.q[0, :3].tolist() == pytest.approx([1 / 6, 5 / 6, 3 / 6])
    assert fit.tries[0].tolist() == [1, 1, 1, 0]


def test_alone_signals_score_held_and_probed_experts() -> None:
    fit = Fitness.start(1, 4, FitnessConfig(signal="alone_loss", alpha=2.0, beta=1.0, initial=0.5))
    fit.update(0, stats(routed=[3, 0, 0, 0], accuracy=[1, 0, 0, 0], loss=[0, 0, 0, 0],
                        alone_accuracy=[0.1, np.nan, 0.3, np.nan],
                        alone_loss=[0.5, np.nan, 1.0, np.nan]), [0, 1], round=4)  # fmt: skip
    assert fit.q[0].tolist() == pytest.approx([np.exp(-1.0), 0.0, np.exp(-2.0), 0.5])
    assert fit.last[0].tolist() == [4, 4, 4, -1] and fit.tries[0].tolist() == [1, 1, 1, 0]


def test_probe_needs_an_alone_signal() -> None:
    with pytest.raises(ValueError, match="`probe` 2 needs a signal that scores experts alone"):
        FitnessConfig(signal="accuracy", probe=2)
    with pytest.raises(ValueError, match="`probe` must be >= -1"):
        FitnessConfig(signal="alone", probe=-2)
    with pytest.raises(ValueError, match="`pick`"):
        FitnessConfig(signal="alone", probe=1, pick="best")


def test_probes_pick_the_stalest_unheld_experts() -> None:
    fit = Fitness.start(1, 6, FitnessConfig(signal="alone", probe=2, initial=None))
    fit.last[0] = [5, 3, -1, 2, 4, -1]
    rng = np.random.default_rng(0)
    assert fit.probes(0, [2, 3], rng) == [1, 5]  # never scored (5), then the oldest (1)
    assert fit.probes(0, [0, 1], rng) == [2, 5]
    every = Fitness.start(1, 6, FitnessConfig(signal="alone", probe=-1))
    assert every.probes(0, [0, 1], rng) == [2, 3, 4, 5]
    random = Fitness.start(1, 6, FitnessConfig(signal="alone", probe=3, pick="random"))
    picks = {tuple(random.probes(0, [0], np.random.default_rng(s))) for s in range(20)}
    assert len(picks) > 1 and all(len(p) == 3 and 0 not in p for p in picks)
    assert Fitness.start(1, 6, FitnessConfig(signal="accuracy")).probes(0, [0], rng) == []
    assert len(Fitness.start(1, 6, FitnessConfig()).probes(0, [0], rng)) == 2  # the default


# -- the client ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return Simulation(TINY)


def test_probes_are_scored_on_the_training_split_and_discarded(sim: Simulation) -> None:
    weights = sim.initial_weights()
    data = sim.clients[0]
    train = TINY.local_training
    plain = ClientPlan(0, 0, (0, 2), seed=5)
    probing = ClientPlan(0, 0, (0, 2), seed=5, scored=(0, 2, 3))
    assert probing.probes == (3,) and probing.downloads == (0, 2, 3)
    a, gate_a = train_client(sim.spec, weights, sim.gates[0], data.x_train, data.y_train, plain,
                             train)  # fmt: skip
    b, gate_b = train_client(sim.spec, weights, sim.gates[0], data.x_train, data.y_train,
                             probing, train)  # fmt: skip
    # probing changes nothing of the training: same weights back, same gate, no probe sent
    assert a.weights.keys() == b.weights.keys() and not any(
        k.startswith("experts.3.") for k in b.weights
    )
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert all(torch.equal(gate_a[k], gate_b[k]) for k in gate_a)
    assert "alone_accuracy" not in a.stats
    accuracy = b.stats["alone_accuracy"]
    assert np.isnan(accuracy[1]) and np.isfinite(accuracy[[0, 2, 3]]).all()
    # with the received weights, on the training split (never the validation split)
    model = workspace(sim.spec)
    model.load_state_dict(weights | sim.gates[0])
    expected = alone_scores(model, (0, 2, 3), data.x_train, data.y_train)
    assert np.allclose(accuracy, expected["alone_accuracy"], equal_nan=True)
    assert np.allclose(b.stats["alone_loss"], expected["alone_loss"], equal_nan=True)


# -- the server ------------------------------------------------------------------------


def test_probing_round_plans_scores_and_counts_the_bytes() -> None:
    config = TINY.replace(clients=4, experts=4, rounds=1, fitness=PROBE)
    sim = Simulation(config)
    strategy = MoEStrategy(config, sim.federation)
    state = strategy.initial_state(sim.initial_weights())
    current = strategy.open_round(state, 0)
    for plan in current.plans:
        assert plan.scored[:2] == plan.experts and len(plan.probes) == 1
    new = current.aggregate(sim.train(list(current.train_plans), state.weights))
    current.evaluate(sim.evaluate(new.weights, current.evaluation_plans()))
    record = current.close()
    for plan in current.plans:
        assert new.fitness.tries[plan.client, list(plan.scored)].tolist() == [1, 1, 1]
        assert (new.fitness.last[plan.client, list(plan.scored)] == 0).all()
    expert = sim.federation.expert_bytes[0]
    assert all(d - u == expert for d, u in zip(record.bytes_down, record.bytes_up, strict=True))
    plain = run(config.replace(fitness={**PROBE, "probe": 0})).rounds[0]
    assert [d - p for d, p in zip(record.bytes_down, plain.bytes_down, strict=True)] == [expert] * 4
    assert record.bytes_up == plain.bytes_up


def test_the_paper_signal_scores_nothing_alone() -> None:
    config = TINY.replace(rounds=1, fitness={"signal": "accuracy", "initial": 1.0})
    sim = Simulation(config)
    strategy = MoEStrategy(config, sim.federation)
    current = strategy.open_round(strategy.initial_state(sim.initial_weights()), 0)
    assert all(plan.scored == () for plan in current.plans)


@pytest.mark.parametrize("method", ["flex", "greedy"])
def test_probing_runs_and_resumes_exactly(tmp_path: Path, method: str) -> None:
    config = TINY.replace(rounds=3, method=method, switch_cost=0.05,
                          fitness={**PROBE, "probe": -1, "beta": 1.0})  # fmt: skip
    whole = run(config, out=tmp_path / "whole")
    run(config.replace(rounds=2), out=tmp_path / "cut")
    resumed = run(config, out=tmp_path / "cut", resume=True)
    assert resumed.without_timings() == whole.without_timings()
    assert History.load(tmp_path / "whole" / "history.json").rounds[-1].bytes_down == (
        whole.rounds[-1].bytes_down
    )


# -- ties ------------------------------------------------------------------------------


def test_ranked_keeps_every_strict_order_and_breaks_ties_at_random() -> None:
    rng = np.random.default_rng(1)
    utility = rng.integers(-2, 3, (50, 6)).astype(float)
    r = ranked(utility, rng)
    for u, row in zip(utility, r, strict=True):
        for i in range(6):
            for j in range(6):
                if u[i] > u[j]:
                    assert row[i] > row[j]
        assert ((row > 0) == (u > 0)).all() and len(set(row)) == 6
    tied = np.zeros((200, 3))
    firsts = np.argmax(ranked(tied, rng), axis=1)
    assert set(firsts.tolist()) == {0, 1, 2}  # every order occurs


def test_permuted_problem_solves_to_the_same_objective() -> None:
    from flexmoe.assign import AssignmentProblem, BudgetRow, solve

    rng = np.random.default_rng(0)
    problem = AssignmentProblem(
        rng.random((5, 4)), max_experts=[1, 2, 2, 1, 2], load_min=1, load_max=3,
        expert_size=[1.0, 2.0, 1.0, 1.0], storage=[2.0, 3.0, 3.0, 2.0, 4.0],
        previous=rng.random((5, 4)) > 0.5, switch_cost=0.1,
        budgets=(BudgetRow("download", rng.random((5, 4)), 2.0),),
    )  # fmt: skip
    rows, cols = rng.permutation(5), rng.permutation(4)
    moved = permuted(problem, rows, cols)
    assert moved.utility[1, 2] == problem.utility[rows[1], cols[2]]
    assert moved.budgets[-1].cost[1, 2] == problem.budgets[-1].cost[rows[1], cols[2]]
    back = unpermuted(solve(moved, "milp"), problem, rows, cols)
    direct = solve(problem, "milp")
    assert back.objective == pytest.approx(direct.objective)
    assert back.loads.tolist() == back.x.sum(axis=0).tolist()
