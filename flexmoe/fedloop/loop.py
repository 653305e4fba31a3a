"""The round loop, and :func:`run`, which wraps it with set-up, checkpoints and resume."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from flexmoe.fedloop.checkpoint import load_checkpoint, save_checkpoint
from flexmoe.fedloop.clients import sample_round
from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.history import History
from flexmoe.fedloop.simulation import Simulation
from flexmoe.fedloop.strategy import MoEStrategy, ServerState
from flexmoe.fedloop.task import workspace

__all__ = ["RoundHook", "federated_loop", "new_history", "run"]

log = logging.getLogger(__name__)

#: Called after every round with (round, server state, history).
RoundHook = Callable[[int, ServerState, History], None]


def federated_loop(
    sim: Simulation,
    strategy: MoEStrategy,
    state: ServerState,
    rng: np.random.Generator,
    history: History,
    *,
    start: int,
    stop: int,
    hooks: Sequence[RoundHook] = (),
) -> ServerState:
    """Run rounds ``start .. stop − 1``: sample, configure, train, aggregate, evaluate.

    Appends one record per round to `history` and calls every hook after each round.
    Clients that drop out mid-round send nothing: the round completes with the others,
    their experts are aggregated without them (or keep their weights) and their gates
    stay as they were.
    """
    config = sim.config
    for rnd in range(start, stop):
        began = time.perf_counter()
        participants, dropped = sample_round(
            rng, config.clients, config.participation, config.dropout
        )
        plan = strategy.configure_round(state, rnd, participants, rng)
        trained = time.perf_counter()
        replies = sim.train([p for p in plan.plans if p.client not in dropped], state.weights)
        aggregated = time.perf_counter()
        state, metrics = strategy.aggregate_round(state, plan, replies)
        evaluated = time.perf_counter()
        metrics |= sim.evaluate(state.weights, state.held)
        metrics["time"] |= {
            "train": aggregated - trained,
            "eval": time.perf_counter() - evaluated,
            "round": time.perf_counter() - began,
        }
        history.rounds.append({"round": rnd, **metrics})
        for hook in hooks:
            hook(rnd, state, history)
    return state


def new_history(sim: Simulation) -> History:
    """An empty history of `sim`'s run: its configuration and set-up (label skew,
    capacities, budgets, model and expert sizes). Every engine starts from this one."""
    model = workspace(sim.spec)
    return History(sim.config.to_dict(), {
        "label_skew": sim.skew.to_dict(),
        "capacity": sim.capacity.tolist(),
        "storage_bytes": [p.storage_bytes for p in sim.profiles],
        "compute_flops": [p.compute_flops for p in sim.profiles],
        "model": sim.spec.to_dict(),
        "expert_bytes": model.expert_nbytes(),
        "expert_params": model.expert_num_params(),
        "backbone_bytes": model.backbone_nbytes(),
    })  # fmt: skip


def _log_round(rnd: int, state: ServerState, history: History) -> None:
    record = history.rounds[-1]
    log.info(
        "round %d: personalised %.4f, global %.4f, holders CV %.3f, untrained %d, %.2fs",
        rnd + 1, record["personalized_acc"] or 0.0, record["global_acc"] or 0.0,
        record["holders"]["cv"], record["never_trained"], record["time"]["round"],
    )  # fmt: skip


def _checkpointer(folder: Path, sim: Simulation, rng: np.random.Generator) -> RoundHook:
    def hook(rnd: int, state: ServerState, history: History) -> None:
        data = history.to_dict()
        save_checkpoint(folder / "checkpoint", rnd, data["config"], state,
                        sim.state_dict(), rng, data)  # fmt: skip
        history.save(folder / "history.json")

    return hook


def run(
    config: FedConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    hooks: Sequence[RoundHook] = (),
    threads: int | None = None,
) -> History:
    """Run a federated MoE experiment.

    Parameters
    ----------
    config : FedConfig
    out : path, optional
        Folder for ``history.json`` and the per-round checkpoint.
    resume : bool
        Continue from the checkpoint in `out` (an error if `out` holds a different
        configuration; ``rounds`` may differ). Without a checkpoint it starts afresh.
    hooks : sequence of callables
        Extra ``hook(round, state, history)`` after every round (progress, logging).
    threads : int, optional
        Torch threads during the run (restored afterwards). The models are small: one
        thread per process is usually fastest. None leaves torch's setting alone.

    Returns
    -------
    History

    Examples
    --------
    >>> from flexmoe.fedloop import FedConfig, run
    >>> cfg = FedConfig(dataset="clustered", n_samples=200, clients=4, experts=4, rounds=1,
    ...                 partition="iid", min_size=5)
    >>> history = run(cfg, threads=1)
    >>> history.rounds[0]["holders"]["cv"]
    0.0
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(config, out, resume, hooks)
    finally:
        torch.set_num_threads(before)


def _run(
    config: FedConfig, out: str | Path | None, resume: bool, hooks: Sequence[RoundHook]
) -> History:
    sim = Simulation(config)
    strategy = MoEStrategy(
        config.method, sim.capacity, config.experts, config.fitness,
        backend=config.backend, carry_deficit=config.carry_deficit,
        switch_cost=config.switch_cost,
    )  # fmt: skip
    folder = None if out is None else Path(out)
    restored = None
    if resume:
        if folder is None:
            raise ValueError("`resume` needs `out`, the folder holding the checkpoint")
        restored = load_checkpoint(folder / "checkpoint", config.fitness)
    if restored is not None:
        _check_same(restored.config, config)
        sim.load_state_dict(restored.clients)
        state, rng, start = restored.state, restored.rng, restored.next_round
        history = History.from_dict(restored.history)
        history.config = config.to_dict()
    else:
        state = strategy.initial_state(sim.initial_weights())
        rng, start = np.random.default_rng(config.seed), 0
        history = new_history(sim)
    all_hooks = [_log_round, *hooks]
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        all_hooks.insert(0, _checkpointer(folder, sim, rng))
    federated_loop(sim, strategy, state, rng, history, start=start, stop=config.rounds,
                   hooks=all_hooks)  # fmt: skip
    if folder is not None:
        history.save(folder / "history.json")
    return history


def _check_same(saved: dict[str, object], config: FedConfig) -> None:
    current = config.to_dict()
    differ = sorted(k for k in current if k != "rounds" and saved.get(k) != current[k])
    if differ:
        raise ValueError(
            "the checkpoint was written by a different configuration; differing field(s): "
            + ", ".join(f"{k} (checkpoint {saved.get(k)!r}, now {current[k]!r})" for k in differ)
        )
