"""Client capacity profiles, their storage and compute budgets, and who takes part in a round."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CapacitySpec",
    "ClientProfile",
    "client_capacities",
    "client_profiles",
    "parse_capacity",
    "sample_round",
]


@dataclass(frozen=True)
class CapacitySpec:
    """How many experts each client can hold: one value for all, or tiers in equal shares.

    Examples
    --------
    >>> parse_capacity("2")
    CapacitySpec(tiers=(2,))
    >>> str(parse_capacity("tiers:2/4/8"))
    'tiers:2/4/8'
    """

    tiers: tuple[int, ...]

    def __str__(self) -> str:
        if len(self.tiers) == 1:
            return str(self.tiers[0])
        return "tiers:" + "/".join(str(t) for t in self.tiers)

    @property
    def smallest(self) -> int:
        return min(self.tiers)


def parse_capacity(text: str | int | CapacitySpec) -> CapacitySpec:
    """Parse ``<k>`` (every client k experts) or ``tiers:<a>/<b>/...`` (equal shares).

    The one parser of capacities: :class:`~flexmoe.fedloop.FedConfig` calls it (through
    its field declaration) and the spec travels as this value from there on.
    """
    if isinstance(text, CapacitySpec):
        return text
    raw = str(text).strip().lower()
    message = f"bad capacity {text!r}; valid: <k> (experts per client, k >= 1) or tiers:2/4/8"
    try:
        tiers = tuple(int(t) for t in raw.removeprefix("tiers:").split("/"))
    except ValueError:
        raise ValueError(message) from None
    if min(tiers) < 1:
        raise ValueError(message)
    return CapacitySpec(tiers)


def client_capacities(
    spec: CapacitySpec, n_clients: int, n_experts: int, *, seed: int = 0
) -> NDArray[np.int64]:
    """Experts each client can hold: tiers dealt in equal shares over a seeded shuffle,
    capped at `n_experts`."""
    if max(spec.tiers) > n_experts:
        raise ValueError(
            f"capacity {spec} exceeds the {n_experts} experts; a client cannot hold "
            f"more experts than exist"
        )
    order = np.random.default_rng(seed).permutation(n_clients)
    capacity = np.empty(n_clients, dtype=np.int64)
    capacity[order] = np.resize(np.asarray(spec.tiers, dtype=np.int64), n_clients)
    return capacity


@dataclass(frozen=True)
class ClientProfile:
    """One client's budgets.

    Attributes
    ----------
    capacity : int
        Experts the client can hold: ``min(storage // expert_bytes, compute // cost)``.
    storage_bytes : int
        Bytes it can spend on experts.
    compute_flops : float
        FLOPs it can spend per round on expert training.
    flops_per_param : float
        FLOPs one expert parameter costs it per round (``6 · epochs · samples``): an
        expert of ``p`` parameters costs ``p · flops_per_param``.
    """

    capacity: int
    storage_bytes: int
    compute_flops: float
    flops_per_param: float = 0.0


def client_profiles(
    capacities: NDArray[np.int64],
    *,
    expert_bytes: int,
    expert_params: int,
    train_sizes: list[int],
    epochs: int,
) -> list[ClientProfile]:
    """Storage and compute budgets that fit exactly `capacities` experts.

    Notes
    -----
    Training one expert costs about ``6·params`` FLOPs per sample (forward 2, backward 4)
    over ``epochs·samples``; the budget is capacity times that. With equal expert sizes
    both rows reduce to a count, ``Σ_e x[n, e] <= capacity[n]``, which keeps the
    assignment a min-cost flow.
    """
    profiles = []
    for cap, size in zip(capacities, train_sizes, strict=True):
        per_param = 6.0 * epochs * size
        per_expert = per_param * expert_params
        profiles.append(
            ClientProfile(int(cap), int(cap) * expert_bytes, float(cap) * per_expert, per_param)
        )
    return profiles


def sample_round(
    rng: np.random.Generator, n_clients: int, participation: float, dropout: float
) -> tuple[list[int], list[int]]:
    """Who is asked to train this round, and who of them drops out mid-round.

    Returns
    -------
    participants : list of int
        ``max(1, round(participation · n_clients))`` clients, sorted.
    dropped : list of int
        Each participant independently with probability `dropout`.
    """
    m = max(1, math.floor(participation * n_clients + 0.5))
    participants = np.sort(rng.choice(n_clients, m, replace=False)).tolist()
    drops = rng.random(m) < dropout
    return participants, [p for p, d in zip(participants, drops, strict=True) if d]
