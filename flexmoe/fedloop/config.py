"""One frozen, validated, JSON-serialisable configuration of a federated run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from flexmoe.fedloop.clients import parse_capacity
from flexmoe.fedloop.data import DATASETS
from flexmoe.fedloop.fitness import FitnessConfig
from flexmoe.fedloop.partition import parse_partition
from flexmoe.fedloop.policies import METHODS
from flexmoe.fedloop.task import TrainConfig

__all__ = ["FedConfig"]


@dataclass(frozen=True)
class FedConfig:
    """A federated MoE run.

    Attributes
    ----------
    dataset : str
        ``digits`` (default, offline), ``mnist1d``, ``clustered``, or a file data set
        (``cifar10``, ``mnist``, ``emnist[:split]``, ``gtsrb``) read from `data_dir`.
    partition : str
        ``iid``, ``dirichlet:<α>`` or ``shards:<k>``.
    clients, experts, rounds : int
    capacity : str
        Experts per client: ``"2"`` or ``"tiers:2/4/8"``.
    top_k : int or None
        Experts per sample; None = the smallest capacity.
    method : {"flex", "greedy", "random", "round_robin", "full"}
    backend : str
        Assignment backend for ``flex`` (``auto`` = flow on this structure).
    participation, dropout : float
        Fraction of clients asked per round; probability a participant drops mid-round.
    carry_deficit : bool
        Carry each expert's historical load deficit into ``flex``'s lower load bounds.
    switch_cost : float
        μ ≥ 0: utility ``flex`` and ``greedy`` lose per expert a client did not hold last
        time it took part (the assignment problem's churn term).
    train, fitness : TrainConfig, FitnessConfig
    val_fraction, test_fraction : float
        Of each client's samples, held out for validation and test.
    min_size : int
        Samples every client gets at least.
    n_samples : int or None
        Generated samples (``mnist1d``, ``clustered``) or a subset of a file data set.
    width, expert_hidden : int
        Model size (see :class:`~flexmoe.models.ModelSpec`).
    seed : int
    data_dir : str or None
    """

    dataset: str = "digits"
    partition: str = "dirichlet:0.3"
    clients: int = 20
    experts: int = 8
    capacity: str = "2"
    top_k: int | None = None
    rounds: int = 30
    method: str = "flex"
    backend: str = "auto"
    participation: float = 1.0
    dropout: float = 0.0
    carry_deficit: bool = False
    switch_cost: float = 0.0
    train: TrainConfig = field(default_factory=TrainConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    min_size: int = 20
    n_samples: int | None = None
    width: int = 64
    expert_hidden: int = 32
    seed: int = 0
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.dataset.partition(":")[0] not in DATASETS:
            raise ValueError(
                f"`dataset` must be one of {', '.join(DATASETS)}; got {self.dataset!r}"
            )
        parse_partition(self.partition)
        tiers = parse_capacity(self.capacity).tiers
        for name in ("clients", "experts", "rounds", "width", "expert_hidden", "min_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1; got {getattr(self, name)}")
        if max(tiers) > self.experts:
            raise ValueError(f"`capacity` {self.capacity} exceeds `experts` = {self.experts}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"`top_k` must be >= 1; got {self.top_k}")
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {', '.join(METHODS)}; got {self.method!r}")
        if not 0 < self.participation <= 1:
            raise ValueError(f"`participation` must be in (0, 1]; got {self.participation}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1); got {self.dropout}")
        if not (self.switch_cost >= 0 and math.isfinite(self.switch_cost)):
            raise ValueError(f"`switch_cost` must be finite and >= 0; got {self.switch_cost}")
        if self.n_samples is not None and self.n_samples < 1:
            raise ValueError(f"`n_samples` must be >= 1; got {self.n_samples}")
        if not math.isfinite(self.seed):
            raise ValueError(f"`seed` must be an integer; got {self.seed}")

    @property
    def k(self) -> int:
        """Experts per sample."""
        return self.top_k if self.top_k is not None else parse_capacity(self.capacity).smallest

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FedConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration field(s): {', '.join(unknown)}")
        values = dict(data)
        for name, kind in (("train", TrainConfig), ("fitness", FitnessConfig)):
            value = values.get(name, {})
            values[name] = value if isinstance(value, kind) else kind(**value)
        return cls(**values)

    def replace(self, **changes: Any) -> FedConfig:
        """A copy with some fields replaced (and validated again)."""
        return FedConfig.from_dict({**{f.name: getattr(self, f.name) for f in fields(self)},
                                    **changes})  # fmt: skip
