"""Checkpoints after every round, without pickle: tensors through ``torch.save`` (read back
with ``weights_only=True``), everything else as JSON.

Layout under ``<out>/checkpoint/``: ``tensors-<r>.pt`` (global weights ``server.*``, the
clients' gates ``client<n>.gate.*``, torch's RNG state), ``state-<r>.json`` (round,
configuration, fitness, deficit, holdings, the strategy's numpy RNG state, the assignment
method's own state, history so far) and
``latest.json`` naming the last complete round, replaced atomically after both files are
written — a run killed at any moment resumes from the last complete round.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexmoe.fedloop.fitness import Fitness, FitnessConfig
from flexmoe.fedloop.history import write_json
from flexmoe.fedloop.strategy import ServerState

__all__ = ["Checkpoint", "completed_rounds", "load_checkpoint", "save_checkpoint"]

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass
class Checkpoint:
    """A restored checkpoint: the next round to run and the state to run it from."""

    next_round: int
    config: dict[str, Any]
    state: ServerState
    clients: dict[str, Tensor]
    rng: np.random.Generator
    history: dict[str, Any]
    method: dict[str, Any]
    """What the assignment method's ``state_dict()`` returned."""


def save_checkpoint(
    folder: Path,
    completed: int,
    config: dict[str, Any],
    state: ServerState,
    clients: dict[str, Tensor],
    rng: np.random.Generator,
    history: dict[str, Any],
    *,
    method: dict[str, Any] | None = None,
) -> None:
    """Write the state after round `completed` (0-based) and point ``latest.json`` at it.

    `rng` is the strategy's generator; `method` the assignment method's state (JSON).
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"server.{k}": v for k, v in state.weights.items()} | dict(clients)
    tensors["rng.torch"] = torch.get_rng_state()
    temporary = folder / f"tensors-{completed}.pt.tmp"
    torch.save(tensors, temporary)
    os.replace(temporary, folder / f"tensors-{completed}.pt")
    write_json(
        folder / f"state-{completed}.json",
        {
            "format": FORMAT,
            "completed": completed,
            "config": config,
            "fitness": state.fitness.to_dict(),
            "deficit": state.deficit.tolist(),
            "held": state.held.astype(int).tolist(),
            "rng": rng.bit_generator.state,
            "method": method or {},
            "history": history,
        },
    )
    write_json(folder / "latest.json", {"format": FORMAT, "completed": completed})
    for old in folder.glob("*-*.*"):
        if old.name.split("-")[1].split(".")[0] != str(completed):
            old.unlink(missing_ok=True)


def completed_rounds(folder: Path) -> int:
    """Rounds the checkpoint in `folder` holds (0 without one); reads only the pointer."""
    pointer = folder / "latest.json"
    return int(json.loads(pointer.read_text())["completed"]) + 1 if pointer.exists() else 0


def load_checkpoint(folder: Path, fitness: FitnessConfig) -> Checkpoint | None:
    """The checkpoint in `folder`, or None if there is none. Restores torch's RNG state."""
    pointer = folder / "latest.json"
    if not pointer.exists():
        return None
    completed = int(json.loads(pointer.read_text())["completed"])
    meta = json.loads((folder / f"state-{completed}.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {folder} has format {meta.get('format')}; expected {FORMAT}")
    tensors = torch.load(folder / f"tensors-{completed}.pt", weights_only=True)
    torch.set_rng_state(tensors.pop("rng.torch"))
    weights = {k.removeprefix("server."): v for k, v in tensors.items() if k.startswith("server.")}
    clients = {k: v for k, v in tensors.items() if not k.startswith("server.")}
    fit = Fitness.start(1, 1, fitness)
    fit.load_dict(meta["fitness"])
    state = ServerState(
        weights=weights,
        fitness=fit,
        deficit=np.asarray(meta["deficit"], dtype=np.float64),
        held=np.asarray(meta["held"], dtype=bool),
    )
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    log.info("resuming from %s after round %d", folder, completed + 1)
    return Checkpoint(completed + 1, meta["config"], state, clients, rng, meta["history"],
                      meta.get("method", {}))  # fmt: skip
