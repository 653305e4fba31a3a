"""Client–expert fitness Q: an exponential moving average of per-expert feedback."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Fitness", "FitnessConfig"]

SIGNALS = ("accuracy", "loss")


@dataclass(frozen=True)
class FitnessConfig:
    r"""How client feedback updates the fitness matrix.

    Attributes
    ----------
    signal : {"accuracy", "loss"}
        ``accuracy``: ``s = a[n, e]``; ``loss``: ``s = exp(−α·ℓ[n, e])``.
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

    signal: str = "accuracy"
    beta: float = 0.3
    alpha: float = 1.0
    initial: float = 1.0
    bonus: float = 0.0

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"`signal` must be one of {', '.join(SIGNALS)}; got {self.signal!r}")
        if not 0 < self.beta <= 1:
            raise ValueError(f"`beta` must be in (0, 1]; got {self.beta}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"`alpha` must be > 0; got {self.alpha}")
        if not math.isfinite(self.initial):
            raise ValueError(f"`initial` must be finite; got {self.initial}")
        if not (self.bonus >= 0 and math.isfinite(self.bonus)):
            raise ValueError(f"`bonus` must be >= 0; got {self.bonus}")


@dataclass
class Fitness:
    """The fitness matrix Q and how often each pair was tried.

    Examples
    --------
    >>> f = Fitness.start(2, 3, FitnessConfig(beta=0.5, initial=1.0))
    >>> f.update(0, np.array([0.0, 0.4, 0.0]), np.zeros(3), np.array([0, 5, 0]))
    >>> f.q[0].tolist(), f.tries[0].tolist()
    ([1.0, 0.7, 1.0], [0, 1, 0])
    """

    config: FitnessConfig
    q: NDArray[np.float64]
    tries: NDArray[np.int64]

    @classmethod
    def start(cls, n_clients: int, n_experts: int, config: FitnessConfig) -> Fitness:
        q = np.full((n_clients, n_experts), config.initial, dtype=np.float64)
        return cls(config, q, np.zeros((n_clients, n_experts), dtype=np.int64))

    def signal(self, accuracy: NDArray[np.float64], loss: NDArray[np.float64]) -> np.ndarray:
        """``s`` from per-expert accuracy and mean loss."""
        if self.config.signal == "accuracy":
            return accuracy
        return np.exp(-self.config.alpha * loss)

    def update(
        self,
        client: int,
        accuracy: NDArray[np.float64],
        loss: NDArray[np.float64],
        routed: NDArray[np.float64],
    ) -> None:
        """EMA step on the experts `client` reported on (those with ``routed > 0``)."""
        fed = np.asarray(routed) > 0
        s = self.signal(np.asarray(accuracy), np.asarray(loss))
        beta = self.config.beta
        self.q[client, fed] = (1 - beta) * self.q[client, fed] + beta * s[fed]
        self.tries[client, fed] += 1

    def utility(self) -> NDArray[np.float64]:
        """Q plus the exploration bonus: the utility handed to the assignment solver."""
        if self.config.bonus == 0:
            return self.q.copy()
        return self.q + self.config.bonus / np.sqrt(1.0 + self.tries)

    def to_dict(self) -> dict[str, Any]:
        return {"q": self.q.tolist(), "tries": self.tries.tolist()}

    def load_dict(self, data: dict[str, Any]) -> None:
        self.q = np.asarray(data["q"], dtype=np.float64)
        self.tries = np.asarray(data["tries"], dtype=np.int64)
