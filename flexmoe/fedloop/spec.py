"""The federation's public spec: what the server may know about its clients.

The client side (:class:`~flexmoe.fedloop.Simulation`: data, gates, training) publishes a
:class:`FederationSpec`; the server's :class:`~flexmoe.fedloop.MoEStrategy` is built from
it and the configuration alone, never from the client-side object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.fedloop.clients import ClientProfile
from flexmoe.models import ModelSpec

__all__ = ["FederationSpec"]


@dataclass(frozen=True)
class FederationSpec:
    """Clients, experts, what each client can hold and spend, and the model.

    Attributes
    ----------
    model : ModelSpec
        The architecture every client rebuilds.
    profiles : tuple of ClientProfile
        Per client: capacity (experts), storage bytes and compute FLOPs per round.
    expert_bytes, expert_params : tuple of int
        Per expert: bytes on the wire (the storage row's sizes) and parameters (the
        compute row's costs, times each client's FLOPs per parameter).
    backbone_bytes : int
        Bytes of the shared extractor ψ.

    Examples
    --------
    >>> from flexmoe.fedloop.clients import client_profiles
    >>> spec = FederationSpec(
    ...     ModelSpec("mlp", (4,), 2, n_experts=3, top_k=1),
    ...     tuple(client_profiles(np.array([1, 2]), expert_bytes=10, expert_params=2,
    ...                           train_sizes=[5, 5], epochs=1)),
    ...     expert_bytes=(10, 10, 10), expert_params=(2, 2, 2), backbone_bytes=100)
    >>> spec.n_clients, spec.capacity().tolist(), spec.budgets([1])["storage"].tolist()
    (2, [1, 2], [20.0])
    """

    model: ModelSpec
    profiles: tuple[ClientProfile, ...]
    expert_bytes: tuple[int, ...]
    expert_params: tuple[int, ...]
    backbone_bytes: int

    @property
    def n_clients(self) -> int:
        return len(self.profiles)

    @property
    def n_experts(self) -> int:
        return self.model.n_experts

    def capacity(self) -> NDArray[np.int64]:
        """Experts each client holds, shape (n_clients,)."""
        return np.array([p.capacity for p in self.profiles], dtype=np.int64)

    def budgets(self, rows: list[int] | NDArray[np.int64]) -> dict[str, Any]:
        """The storage and compute rows of clients `rows`, as
        :class:`~flexmoe.assign.AssignmentProblem` keyword arguments.

        ``Σ_e expert_bytes[e]·x[n, e] <= storage_bytes[n]`` and
        ``Σ_e flops_per_param[n]·expert_params[e]·x[n, e] <= compute_flops[n]``.
        """
        chosen = [self.profiles[int(n)] for n in rows]
        per_param = np.array([p.flops_per_param for p in chosen])
        return {
            "expert_size": np.asarray(self.expert_bytes, dtype=np.float64),
            "storage": np.array([p.storage_bytes for p in chosen], dtype=np.float64),
            "compute_cost": per_param[:, None] * np.asarray(self.expert_params, dtype=np.float64),
            "compute_budget": np.array([p.compute_flops for p in chosen], dtype=np.float64),
        }

    def setup(self) -> dict[str, Any]:
        """The spec as a history's ``setup`` entries (capacities, budgets, sizes)."""
        return {
            "capacity": [p.capacity for p in self.profiles],
            "storage_bytes": [p.storage_bytes for p in self.profiles],
            "compute_flops": [p.compute_flops for p in self.profiles],
            "model": self.model.to_dict(),
            "expert_bytes": list(self.expert_bytes),
            "expert_params": list(self.expert_params),
            "backbone_bytes": self.backbone_bytes,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "profiles": [asdict(p) for p in self.profiles],
            "expert_bytes": list(self.expert_bytes),
            "expert_params": list(self.expert_params),
            "backbone_bytes": self.backbone_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederationSpec:
        return cls(
            ModelSpec.from_dict(data["model"]),
            tuple(ClientProfile(**p) for p in data["profiles"]),
            tuple(data["expert_bytes"]),
            tuple(data["expert_params"]),
            int(data["backbone_bytes"]),
        )
