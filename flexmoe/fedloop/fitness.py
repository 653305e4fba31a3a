"""Client–expert fitness Q: an exponential moving average of a per-expert signal.

A fitness *signal* turns what a client reports about each expert (the per-expert
statistics of its :class:`~flexmoe.fedloop.ClientReply`: ``routed``, ``accuracy``,
``loss``, ...) into one score per expert. Signals are a registry: a new one is one
function and one :func:`register_signal` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.fedloop.registry import Registry
from flexmoe.params import number, param, validate

__all__ = ["SIGNALS", "Fitness", "FitnessConfig", "Signal", "register_signal"]

Float = NDArray[np.float64]
Stats = Mapping[str, Float]

#: ``signal(stats, config) -> s``: one score per expert from a client's per-expert
#: statistics (only experts with ``stats["routed"] > 0`` are used).
Signal = Callable[[Stats, "FitnessConfig"], Float]

#: Fitness signals by name (the built-ins: ``accuracy``, ``loss``).
SIGNALS: Registry[Signal] = Registry("signal")


def register_signal(name: str, signal: Signal, *, replace: bool = False) -> None:
    """Make `signal` selectable as ``FitnessConfig(signal=name)`` (``--signal name``).

    Parameters
    ----------
    name : str
    signal : callable
        ``signal(stats, config) -> ndarray (n_experts,)``. `stats` maps each per-expert
        statistic the client reports (``routed``, ``accuracy``, ``loss``: NaN where
        nothing was routed) to an array; `config` is the run's :class:`FitnessConfig`.
    replace : bool
        Allow replacing a signal registered under the same name.

    Examples
    --------
    >>> def confidence(stats, config):
    ...     return 1.0 / (1.0 + stats["loss"])
    >>> register_signal("toy_confidence", confidence)
    >>> f = Fitness.start(1, 2, FitnessConfig(signal="toy_confidence", beta=1.0))
    >>> f.update(0, {"routed": np.array([4.0, 0.0]), "loss": np.array([1.0, np.nan])})
    >>> f.q.tolist()
    [[0.5, 1.0]]
    >>> SIGNALS.unregister("toy_confidence")
    """
    SIGNALS.register(name, signal, replace=replace)


register_signal("accuracy", lambda stats, config: np.asarray(stats["accuracy"]))
register_signal("loss", lambda stats, config: np.exp(-config.alpha * np.asarray(stats["loss"])))


@dataclass(frozen=True)
class FitnessConfig:
    r"""How client feedback updates the fitness matrix.

    Attributes
    ----------
    signal : str
        A registered signal: ``accuracy`` (``s = a[n, e]``), ``loss``
        (``s = exp(−α·ℓ[n, e])``), or one added with :func:`register_signal`.
    beta : float
        EMA step β in (0, 1].
    alpha : float
        Loss temperature α > 0.
    initial : float
        Initial Q of every pair; optimistic (≥ any reachable s) makes untried pairs
        attractive.
    bonus : float
        Exploration bonus c ≥ 0 added to the utility: ``c / sqrt(1 + tries[n, e])``.

    Notes
    -----
    On the pairs assigned and reported this round, ``Q ← (1 − β)·Q + β·s``; all other
    pairs keep their value.
    """

    signal: str = field(
        default="accuracy",
        metadata=param("fitness signal", choices=lambda: list(SIGNALS), metavar="NAME"),
    )
    beta: float = field(
        default=0.3,
        metadata=param("fitness EMA step β", check=number(0, 1, open_low=True), metavar="B"),
    )
    alpha: float = field(
        default=1.0,
        metadata=param(
            "loss temperature α of the loss signal", check=number(0, open_low=True), metavar="A"
        ),
    )
    initial: float = field(
        default=1.0,
        metadata=param(
            "initial (optimistic) fitness Q0 of every pair",
            flag="--initial-fitness",
            check=number(),
            metavar="Q0",
        ),
    )
    bonus: float = field(
        default=0.0,
        metadata=param(
            "exploration bonus c: + c/sqrt(1 + tries) on the utility",
            check=number(low=0),
            metavar="C",
        ),
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Fitness:
    """The fitness matrix Q and how often each pair was tried.

    Examples
    --------
    >>> f = Fitness.start(2, 3, FitnessConfig(beta=0.5, initial=1.0))
    >>> f.update(0, {"routed": np.array([0, 5, 0]), "accuracy": np.array([0.0, 0.4, 0.0])})
    >>> f.q[0].tolist(), f.tries[0].tolist()
    ([1.0, 0.7, 1.0], [0, 1, 0])
    """

    config: FitnessConfig
    q: Float
    tries: NDArray[np.int64]

    @classmethod
    def start(cls, n_clients: int, n_experts: int, config: FitnessConfig) -> Fitness:
        q = np.full((n_clients, n_experts), config.initial, dtype=np.float64)
        return cls(config, q, np.zeros((n_clients, n_experts), dtype=np.int64))

    def copy(self) -> Fitness:
        return Fitness(self.config, self.q.copy(), self.tries.copy())

    def update(self, client: int, stats: Stats) -> None:
        """EMA step of the configured signal on the experts `client` reported on (those
        with ``stats["routed"] > 0``)."""
        fed = np.asarray(stats["routed"]) > 0
        s = np.asarray(SIGNALS[self.config.signal](stats, self.config), dtype=np.float64)
        beta = self.config.beta
        self.q[client, fed] = (1 - beta) * self.q[client, fed] + beta * s[fed]
        self.tries[client, fed] += 1

    def utility(self) -> Float:
        """Q plus the exploration bonus: the utility handed to the assignment solver."""
        if self.config.bonus == 0:
            return self.q.copy()
        return self.q + self.config.bonus / np.sqrt(1.0 + self.tries)

    def to_dict(self) -> dict[str, Any]:
        return {"q": self.q.tolist(), "tries": self.tries.tolist()}

    def load_dict(self, data: dict[str, Any]) -> None:
        self.q = np.asarray(data["q"], dtype=np.float64)
        self.tries = np.asarray(data["tries"], dtype=np.int64)
