"""The in-process engine: the round loop, and :func:`run`, which wraps it with set-up,
checkpoints and resume."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from flexmoe.fedloop.checkpoint import load_checkpoint, save_checkpoint
from flexmoe.fedloop.config import FedConfig
from flexmoe.fedloop.history import History
from flexmoe.fedloop.simulation import Simulation
from flexmoe.fedloop.strategy import MoEStrategy, ServerState

__all__ = ["RoundHook", "federated_loop", "new_history", "run"]

log = logging.getLogger(__name__)

#: Called after every round with (round, server state, history).
RoundHook = Callable[[int, ServerState, History], None]


def federated_loop(
    sim: Simulation,
    strategy: MoEStrategy,
    state: ServerState,
    history: History,
    *,
    start: int,
    stop: int,
    hooks: Sequence[RoundHook] = (),
) -> ServerState:
    """Run rounds ``start .. stop − 1`` with the strategy's round driver.

    Appends one record per round to `history` and calls every hook after each round.
    Clients that drop out mid-round send nothing: the round completes with the others,
    their experts are aggregated without them (or keep their weights) and their gates
    stay as they were.
    """
    for rnd in range(start, stop):
        current = strategy.open_round(state, rnd)
        replies = sim.train(list(current.train_plans), state.weights)
        state = current.aggregate(replies)
        current.evaluate(sim.evaluate(state.weights, current.evaluation_plans()))
        history.rounds.append(current.close())
        for hook in hooks:
            hook(rnd, state, history)
    return state


def new_history(sim: Simulation) -> History:
    """An empty history of `sim`'s run: its configuration and set-up (label skew, and the
    federation's public spec). Every engine starts from this one."""
    setup = {"label_skew": sim.skew.to_dict(), **sim.federation.setup()}
    return History(sim.config.to_dict(), setup)


def _log_round(rnd: int, state: ServerState, history: History) -> None:
    record = history.rounds[-1]
    log.info(
        "round %d: personalised %.4f, global %.4f, holders CV %.3f, untrained %d, %.2fs",
        rnd + 1, record.personalized_acc or 0.0, record.global_acc or 0.0,
        record.holders.cv, record.never_trained, record.time.round,
    )  # fmt: skip


def _checkpointer(folder: Path, sim: Simulation, strategy: MoEStrategy) -> RoundHook:
    def hook(rnd: int, state: ServerState, history: History) -> None:
        data = history.to_dict()
        save_checkpoint(folder / "checkpoint", rnd, data["config"], state, sim.state_dict(),
                        strategy.rng, data, method=strategy.method.state_dict())  # fmt: skip
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
        configuration; ``rounds`` may differ). Without a checkpoint it starts afresh. The
        newest checkpoint is verified first; a damaged one falls back to the one before it
        with a warning (that round runs again), and when none is usable
        :class:`~flexmoe.fedloop.checkpoint.CheckpointError` says which file is bad and why.
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
    >>> history.rounds[0].holders.cv
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
    strategy = MoEStrategy(config, sim.federation)
    folder = None if out is None else Path(out)
    initial = strategy.initial_state(sim.initial_weights())
    restored = None
    if resume:
        if folder is None:
            raise ValueError("`resume` needs `out`, the folder holding the checkpoint")
        restored = load_checkpoint(folder / "checkpoint", config, initial, sim.state_dict())
    if restored is not None:
        sim.load_state_dict(restored.clients)
        state, start = restored.state, restored.next_round
        strategy.rng = restored.rng
        strategy.method.load_state_dict(restored.method)
        history = restored.history
        history.config = config.to_dict()
    else:
        state, start = initial, 0
        history = new_history(sim)
    all_hooks = [_log_round, *hooks]
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        all_hooks.insert(0, _checkpointer(folder, sim, strategy))
    federated_loop(sim, strategy, state, history, start=start, stop=config.rounds,
                   hooks=all_hooks)  # fmt: skip
    if folder is not None:
        history.save(folder / "history.json")
    return history
