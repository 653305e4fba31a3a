"""Regression tests of issue 12's fixes (each failed on the loop before its fix) and the
`fixed` control."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fl_support import TINY

from flexmoe.fedloop import FedConfig, MoEStrategy, Simulation, TrainConfig, run


def one_round(config: FedConfig, drop: tuple[int, ...] = ()):
    """Open, train (clients in `drop` send nothing), aggregate and close round 0: the
    state before, the round, the state after, its record and the replies."""
    sim = Simulation(config)
    strategy = MoEStrategy(config, sim.federation)
    state = strategy.initial_state(sim.initial_weights())
    current = strategy.open_round(state, 0)
    plans = [p for p in current.train_plans if p.client not in drop]
    replies = sim.train(plans, state.weights)
    new = current.aggregate(replies)
    current.evaluate(sim.evaluate(new.weights, current.evaluation_plans()))
    return state, current, new, current.close(), replies


# -- fix 2: ties broken at random, seeded per run and round ---------------------------


def test_greedy_breaks_equal_fitness_at_random_for_each_client() -> None:
    """Before: every client took the lowest-numbered experts (holders [20, 20, 0, ...])."""
    config = FedConfig(clients=20, experts=16, capacity="2", rounds=1, method="greedy",
                       partition="shards:2", expert_hidden=4)  # fmt: skip
    _, current, _, record, _ = one_round(config)
    assert max(record.load_holders) < 10 and sum(h > 0 for h in record.load_holders) >= 10
    again = one_round(config)[1]
    assert [p.experts for p in again.plans] == [p.experts for p in current.plans]  # seeded


@pytest.mark.parametrize("method", ["flex", "greedy"])
def test_ties_depend_on_the_run_seed(method: str) -> None:
    """Round 0 has every fitness equal: before, every seed got the same assignment."""
    firsts = {
        tuple(tuple(e) for e in run(TINY.replace(method=method, seed=seed, rounds=1))
              .rounds[0].assignment.experts)
        for seed in range(4)
    }  # fmt: skip
    assert len(firsts) > 1


# -- fix 3: a held expert that routed nothing was tried and earned 0 -------------------


@pytest.mark.parametrize("method", ["flex", "greedy"])
def test_a_held_expert_that_routed_nothing_is_tried_with_zero(method: str) -> None:
    """top_k 1 of 4 held: some held experts route nothing. Before, they kept Q = 1.0."""
    config = FedConfig(clients=10, experts=8, capacity="4", top_k=1, rounds=1, method=method,
                       train=TrainConfig(epochs=1),
                       fitness={"signal": "accuracy", "initial": 1.0})  # the paper's  # fmt: skip
    _, current, new, _, replies = one_round(config)
    held = np.zeros(new.fitness.q.shape, dtype=bool)
    for plan in current.plans:
        held[plan.client, list(plan.experts)] = True
    assert (new.fitness.tries[held] == 1).all() and (new.fitness.tries[~held] == 0).all()
    unrouted = [(r.client, e) for r in replies for e in np.flatnonzero(held[r.client])
                if r.routed[e] == 0]  # fmt: skip
    assert unrouted and all(new.fitness.q[n, e] == pytest.approx(0.7) for n, e in unrouted)


# -- fix 4: a dropped client keeps its previous holdings -------------------------------


def test_a_dropped_client_keeps_its_previous_holdings() -> None:
    """Before, `held` followed the plans, a dropped client's included: it was evaluated
    with experts its gate never trained with."""
    config = TINY.replace(clients=4, experts=8, capacity="2", rounds=1, method="round_robin")
    state, current, new, record, _ = one_round(config, drop=(2,))
    assert record.dropped == [2]
    assert current.plans[2].experts != tuple(np.flatnonzero(state.held[2]))
    assert new.held[2].tolist() == state.held[2].tolist()
    assert current.evaluation_plans()[2] == (
        2,
        tuple(int(e) for e in np.flatnonzero(state.held[2])),
    )
    for plan in current.plans:
        if plan.client != 2:
            assert tuple(np.flatnonzero(new.held[plan.client])) == plan.experts
    assert (new.fitness.tries[2] == 0).all()


# -- fix 5: a non-finite loss stops the run --------------------------------------------


def test_divergence_stops_the_run_naming_round_client_and_lr() -> None:
    """Before, the run carried on with NaN weights and accuracy at chance."""
    config = TINY.replace(train=TrainConfig(epochs=1, lr=1e6, momentum=0.9))
    with pytest.raises(
        RuntimeError,
        match=r"round 1: client \d+'s local training diverged "
        r"\(.*\) at learning rate 1e\+06; lower it \(`--lr`, e\.g\. 100000\)",
    ):
        run(config)


def test_flexmoe_train_reports_divergence_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "flexmoe", "train", "--dataset", "clustered", "--samples",
               "400", "--clients", "4", "--experts", "4", "--rounds", "2", "--lr", "1e6",
               "--min-size", "10", "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "local training diverged" in done.stderr and "lower it (`--lr`" in done.stderr
    assert "Traceback" not in done.stderr


# -- fix 6: a learning rate per data set -----------------------------------------------


def test_each_data_set_has_its_default_learning_rate() -> None:
    """Before, every data set trained at lr 0.1 (clustered and mnist1d diverged there)."""
    from flexmoe.fedloop.data import FALLBACK_LR, default_lr

    assert FedConfig().lr == default_lr("digits") == 0.1
    assert FedConfig(dataset="mnist1d").lr == default_lr("mnist1d") < FALLBACK_LR
    assert FedConfig(dataset="clustered").lr == default_lr("clustered") < FALLBACK_LR
    assert FedConfig(dataset="mnist1d", train=TrainConfig(lr=0.3)).lr == 0.3  # a set lr wins
    assert FedConfig(dataset="mnist1d").replace(dataset="digits").lr == 0.1  # not frozen in
    assert FedConfig(dataset="mnist1d").local_training.lr == default_lr("mnist1d")
    history = run(TINY.replace(rounds=1))
    assert history.setup["lr"] == 0.1 and history.config["train"]["lr"] is None


# -- the fixed control -----------------------------------------------------------------


def test_fixed_is_one_balanced_seeded_assignment_kept_every_round() -> None:
    config = TINY.replace(clients=8, experts=4, method="fixed", rounds=3)
    history = run(config)
    first = history.rounds[0].assignment.experts
    assert all(r.assignment.experts == first for r in history.rounds)
    assert all(r.load_holders == [4.0] * 4 for r in history.rounds)
    assert history.rounds[0].assignment.status == "feasible"
    other = run(config.replace(seed=1, rounds=1)).rounds[0].assignment.experts
    assert other != first
    sim = Simulation(config)
    held = MoEStrategy(config, sim.federation).initial_state(sim.initial_weights()).held
    assert [tuple(np.flatnonzero(row)) for row in held] == [tuple(e) for e in first]


def test_fixed_needs_no_fitness_and_downloads_no_probes() -> None:
    config = TINY.replace(method="fixed", rounds=1,
                          fitness={"signal": "alone", "probe": 2, "initial": None})  # fmt: skip
    with_probes = run(config).rounds[0]
    plain = run(TINY.replace(method="fixed", rounds=1)).rounds[0]
    assert with_probes.bytes_down == plain.bytes_down
    assert with_probes.assignment.experts == plain.assignment.experts
