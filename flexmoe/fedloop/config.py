"""The configuration of a federated run: frozen, validated, JSON- and TOML-serialisable.

Each field is declared once (default, help, flag, rule) with
:func:`~flexmoe.params.param`; the ``flexmoe train`` and ``flexmoe bench fl``
flags, the ``--config`` file keys and the flat mapping a Flower ``run_config`` uses are
all generated from these declarations (see :mod:`flexmoe.params`). A
configuration file has the field names as top-level keys and the nested
configurations as tables::

    dataset = "digits"
    capacity = "tiers:2/4/8"
    rounds = 5

    [train]
    lr = 0.05

    [fitness]
    signal = "loss"

This module imports neither torch nor the solvers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from flexmoe import params
from flexmoe.fedloop.clients import CapacitySpec, parse_capacity
from flexmoe.fedloop.data import DATASETS
from flexmoe.fedloop.fitness import FitnessConfig
from flexmoe.fedloop.partition import PartitionSpec, parse_partition
from flexmoe.fedloop.policies import METHODS
from flexmoe.params import ConfigError, number, param

__all__ = ["FEEDBACK", "FedConfig", "TrainConfig"]

#: When the per-expert feedback is measured on the local training data.
FEEDBACK = ("during", "before", "after")


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters (SGD, a fresh optimiser every round).

    Attributes
    ----------
    epochs, batch_size : int
    lr, momentum, weight_decay : float
    feedback : {"during", "before", "after"}
        Where the per-expert accuracy and loss come from: the training batches as they
        are trained on (free), a pass over the training data with the received model
        (how well the global expert serves this client), or a pass after training.
    """

    epochs: int = field(
        default=2,
        metadata=param(
            "local epochs per round", flag="--local-epochs", check=number(low=1), metavar="N"
        ),
    )
    batch_size: int = field(
        default=16, metadata=param("local batch size", check=number(low=1), metavar="B")
    )
    lr: float = field(
        default=0.1, metadata=param("SGD learning rate", check=number(0, open_low=True))
    )
    momentum: float = field(
        default=0.9, metadata=param("SGD momentum", check=number(0, 1), metavar="M")
    )
    weight_decay: float = field(
        default=0.0, metadata=param("SGD weight decay", check=number(low=0), metavar="WD")
    )
    feedback: str = field(
        default="during",
        metadata=param(
            "where per-expert accuracy and loss are measured",
            choices=lambda: FEEDBACK,
            metavar="WHEN",
        ),
    )

    def __post_init__(self) -> None:
        params.validate(self)


def _backend_specs() -> list[str]:
    """``auto`` and every spelling of every registered backend (``name``,
    ``name:variant``), read from the registry when asked."""
    from flexmoe.assign import registered_backends

    specs = ["auto"]
    for backend in registered_backends().values():
        specs += backend.specs()
        specs += [f"{backend.name}:{v}" for v in getattr(backend, "variants", ())]
    return list(dict.fromkeys(specs))


def _metrics() -> list[str]:
    from flexmoe.assign import BalanceMetric

    return [str(m) for m in BalanceMetric]


@dataclass(frozen=True)
class FedConfig:
    """A federated MoE run.

    Attributes
    ----------
    dataset : str
        A registered data set: ``digits`` (default, offline), ``mnist1d``,
        ``clustered``, or a file data set (``cifar10``, ``mnist``, ``emnist[:split]``,
        ``gtsrb``) read from `data_dir`; more with
        :func:`~flexmoe.fedloop.register_dataset`.
    partition : PartitionSpec
        ``iid``, ``dirichlet:<α>`` or ``shards:<k>`` (text is parsed).
    clients, experts, rounds : int
    capacity : CapacitySpec
        Experts per client: ``"2"`` or ``"tiers:2/4/8"`` (text is parsed).
    top_k : int or None
        Experts per sample; None = the smallest capacity (more is an error).
    method : str
        A registered assignment method: ``flex``, ``greedy``, ``random``,
        ``round_robin``, ``full``, or one added with
        :func:`~flexmoe.fedloop.register_method`.
    backend : str
        Assignment backend of ``flex`` (``auto`` = flow where the problem allows it).
    participation, dropout : float
        Fraction of clients asked per round; probability a participant drops mid-round.
    carry_deficit : bool
        Carry each expert's historical load deficit into the lower load bounds.
    switch_cost : float
        μ ≥ 0: utility lost per expert a client did not hold last time it took part
        (the assignment problem's churn term).
    balance_penalty, balance_metric : float, str
        λ ≥ 0 and the imbalance it weighs (``variance`` or ``range``): the assignment
        problem's soft balance term.
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

    Examples
    --------
    >>> config = FedConfig(capacity="tiers:2/4", experts=4, rounds=5)
    >>> config.capacity, config.k
    (CapacitySpec(tiers=(2, 4)), 2)
    >>> params.to_flat(config)["capacity"], params.to_flat(config)["train.lr"]
    ('tiers:2/4', 0.1)
    """

    dataset: str = field(
        default="digits",
        metadata=param(
            "data set (emnist:<split> names a split)",
            choices=lambda: list(DATASETS),
            choice_key=lambda v: v.partition(":")[0],
            metavar="NAME",
            group="data",
        ),
    )
    partition: PartitionSpec = field(
        default=PartitionSpec("dirichlet", 0.3),
        metadata=param(
            "iid, dirichlet:<alpha> or shards:<k> (alias kclass:<k>)",
            parse=parse_partition,
            metavar="SPEC",
            group="data",
        ),
    )
    clients: int = field(
        default=20, metadata=param("clients", check=number(low=1), metavar="N", group="federation")
    )
    experts: int = field(
        default=8, metadata=param("experts", check=number(low=1), metavar="E", group="federation")
    )
    capacity: CapacitySpec = field(
        default=CapacitySpec((2,)),
        metadata=param(
            "experts per client: <k>, or tiers:2/4/8 in equal shares",
            parse=parse_capacity,
            metavar="SPEC",
            group="federation",
        ),
    )
    top_k: int | None = field(
        default=None,
        metadata=param(
            "experts per sample (none: the smallest capacity)",
            check=number(low=1),
            metavar="K",
            group="federation",
        ),
    )
    rounds: int = field(
        default=30, metadata=param("rounds", check=number(low=1), metavar="R", group="federation")
    )
    method: str = field(
        default="flex",
        metadata=param(
            "assignment method", choices=lambda: list(METHODS), metavar="NAME", group="assignment"
        ),
    )
    backend: str = field(
        default="auto",
        metadata=param(
            "assignment backend of flex (auto: flow where the problem allows)",
            choices=_backend_specs,
            metavar="SPEC",
            group="assignment",
        ),
    )
    participation: float = field(
        default=1.0,
        metadata=param(
            "fraction of clients asked per round",
            check=number(0, 1, open_low=True),
            metavar="F",
            group="federation",
        ),
    )
    dropout: float = field(
        default=0.0,
        metadata=param(
            "probability a participant drops out mid-round",
            check=number(0, 1, open_high=True),
            metavar="P",
            group="federation",
        ),
    )
    carry_deficit: bool = field(
        default=False,
        metadata=param(
            "carry each expert's load deficit into the next round's lower bounds",
            group="assignment",
        ),
    )
    switch_cost: float = field(
        default=0.0,
        metadata=param(
            "utility lost per newly held expert (the problem's churn term μ)",
            check=number(low=0),
            metavar="MU",
            group="assignment",
        ),
    )
    balance_penalty: float = field(
        default=0.0,
        metadata=param(
            "weight λ of the problem's soft balance term",
            check=number(low=0),
            metavar="LAMBDA",
            group="assignment",
        ),
    )
    balance_metric: str = field(
        default="variance",
        metadata=param(
            "imbalance the balance penalty weighs",
            choices=_metrics,
            metavar="NAME",
            group="assignment",
        ),
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata=param("local training"))
    fitness: FitnessConfig = field(default_factory=FitnessConfig, metadata=param("fitness"))
    val_fraction: float = field(
        default=0.1,
        metadata=param(
            "of each client's data, for validation",
            metavar="F",
            check=number(0, 1, open_high=True),
            group="data",
        ),
    )
    test_fraction: float = field(
        default=0.2,
        metadata=param(
            "of each client's data, for testing",
            metavar="F",
            check=number(0, 1, open_high=True),
            group="data",
        ),
    )
    min_size: int = field(
        default=20,
        metadata=param(
            "samples every client gets at least", check=number(low=1), metavar="N", group="data"
        ),
    )
    n_samples: int | None = field(
        default=None,
        metadata=param(
            "samples to generate (mnist1d, clustered) or a subset to keep",
            flag="--samples",
            check=number(low=1),
            metavar="N",
            group="data",
        ),
    )
    width: int = field(
        default=64,
        metadata=param(
            "feature width of the shared extractor", check=number(low=1), metavar="W", group="model"
        ),
    )
    expert_hidden: int = field(
        default=32,
        metadata=param(
            "hidden units of each expert", check=number(low=1), metavar="H", group="model"
        ),
    )
    seed: int = field(
        default=0,
        metadata=param(
            "seeds data, partition, model, sampling and solver",
            check=number(low=0),
            group="federation",
        ),
    )
    data_dir: str | None = field(
        default=None,
        metadata=param(
            "folder with the files of cifar10 / mnist / emnist / gtsrb", metavar="DIR", group="data"
        ),
    )

    def __post_init__(self) -> None:
        params.validate(self)
        if max(self.capacity.tiers) > self.experts:
            raise ConfigError(
                "capacity", f"`capacity` {self.capacity} exceeds `experts` = {self.experts}"
            )
        if self.top_k is not None and self.top_k > self.capacity.smallest:
            raise ConfigError(
                "top_k",
                f"`top_k` {self.top_k} exceeds the smallest `capacity` "
                f"{self.capacity.smallest}: such a client cannot route a sample to "
                f"{self.top_k} experts; lower `top_k` or raise `capacity`",
            )
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "test_fraction",
                f"`val_fraction` + `test_fraction` must be < 1; got {self.val_fraction} + "
                f"{self.test_fraction}",
            )

    @property
    def k(self) -> int:
        """Experts per sample."""
        return self.top_k if self.top_k is not None else self.capacity.smallest

    def to_dict(self) -> dict[str, Any]:
        """Plain values, nested configurations as dicts (the JSON form of a history)."""
        return params.to_nested(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FedConfig:
        """Inverse of :meth:`to_dict`; flat ``"train.lr"`` keys work too."""
        result: FedConfig = params.build(cls, data)
        return result

    def replace(self, **changes: Any) -> FedConfig:
        """A copy with some fields replaced (and validated again)."""
        return dataclasses.replace(self, **changes)
