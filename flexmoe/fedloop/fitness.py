"""Client–expert fitness Q: what each client has measured of each expert, and the utility
the assignment solver is handed.

A fitness *signal* turns what a client reports about each expert (the per-expert
statistics of its :class:`~flexmoe.fedloop.ClientReply`) into one score per expert,
NaN where it measured nothing. Two kinds are built in:

* the paper's, on the samples the client's gate routed to each held expert while it
  trained: ``accuracy`` (``s = a[n, e]``) and ``loss`` (``s = exp(−α·ℓ[n, e])``);
* the expert *alone* — ψ and θ_e as the server sent them, no gate, on the client's own
  TRAINING split, before it trains: ``alone`` (accuracy) and ``alone_loss``. These score
  the held experts and the ``probe`` experts the client downloads only to score them, on
  one model state with one yardstick.

Every signal goes through the same update (:meth:`Fitness.update`): an exponential
moving average on the scored pairs, after an optional per-round normalisation within the
client; the utility adds an exploration bonus, and an untried pair is worth either a
fixed optimistic ``initial`` value (the paper) or the client's mean (``initial=None``,
the neutral start). Signals and normalisations are registries: a new one is one
function and one ``register_*`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.fedloop.registry import Registry
from flexmoe.params import ConfigError, number, param, validate

__all__ = [
    "NORMALISATIONS",
    "PICKS",
    "SIGNALS",
    "Fitness",
    "FitnessConfig",
    "Signal",
    "register_normalisation",
    "register_signal",
]

Float = NDArray[np.float64]
Stats = Mapping[str, Float]

#: ``score(stats, config) -> s``: one score per expert from a client's per-expert
#: statistics, NaN where the statistics say nothing about an expert.
Score = Callable[[Stats, "FitnessConfig"], Float]


@dataclass(frozen=True)
class Signal:
    """A registered fitness signal.

    Attributes
    ----------
    score : callable
        ``score(stats, config) -> ndarray (n_experts,)``, NaN where not scored.
    alone : bool
        It reads the scores of each expert alone (``alone_accuracy``, ``alone_loss``):
        the client must make that pass over its training split, for its held experts
        and its probes. A signal without it cannot score a probe (nothing is routed to
        an expert a client does not hold).
    """

    score: Score
    alone: bool = False


#: Fitness signals by name (the built-ins: ``accuracy``, ``loss``, ``alone``,
#: ``alone_loss``).
SIGNALS: Registry[Signal] = Registry("signal")


def register_signal(name: str, score: Score, *, alone: bool = False, replace: bool = False) -> None:
    """Make `score` selectable as ``FitnessConfig(signal=name)`` (``--signal name``).

    Parameters
    ----------
    name : str
    score : callable
        ``score(stats, config) -> ndarray (n_experts,)``. `stats` maps each per-expert
        statistic the client reports to an array: ``routed``, ``accuracy``, ``loss`` (of
        the samples routed to each held expert, NaN where nothing was), and with
        `alone` also ``alone_accuracy``, ``alone_loss`` (NaN where not scored); `config`
        is the run's :class:`FitnessConfig`. Return NaN where there is no score.
    alone : bool
        The signal reads the ``alone_*`` statistics (see :class:`Signal`).
    replace : bool
        Allow replacing a signal registered under the same name.

    Examples
    --------
    >>> def confidence(stats, config):
    ...     return 1.0 / (1.0 + stats["loss"])
    >>> register_signal("toy_confidence", confidence)
    >>> f = Fitness.start(1, 2, FitnessConfig(signal="toy_confidence", beta=1.0, initial=1.0))
    >>> f.update(0, {"routed": np.array([4.0, 0.0]), "loss": np.array([1.0, np.nan])}, [0])
    >>> f.q.tolist()
    [[0.5, 1.0]]
    >>> SIGNALS.unregister("toy_confidence")
    """
    SIGNALS.register(name, Signal(score, alone), replace=replace)


def _routed(stats: Stats, values: Float) -> Float:
    """`values` where samples were routed, NaN elsewhere."""
    return np.where(np.asarray(stats["routed"]) > 0, values, np.nan)


register_signal("accuracy", lambda stats, c: _routed(stats, np.asarray(stats["accuracy"])))
register_signal(
    "loss", lambda stats, c: _routed(stats, np.exp(-c.alpha * np.asarray(stats["loss"])))
)
register_signal("alone", lambda stats, c: np.asarray(stats["alone_accuracy"]), alone=True)
register_signal(
    "alone_loss", lambda stats, c: np.exp(-c.alpha * np.asarray(stats["alone_loss"])), alone=True
)

#: ``normalise(s) -> s'`` on the finite scores of one client and round.
Normalise = Callable[[Float], Float]

#: Per-round normalisations of one client's scores (``none``, ``rank``, ``z``).
NORMALISATIONS: Registry[Normalise] = Registry("normalisation")


def register_normalisation(name: str, normalise: Normalise, *, replace: bool = False) -> None:
    """Make `normalise` selectable as ``FitnessConfig(normalise=name)``: it maps the finite
    scores one client reported in one round (a 1-D array) to as many numbers."""
    NORMALISATIONS.register(name, normalise, replace=replace)


def _ranks(s: Float) -> Float:
    """Ranks mapped into (0, 1): the lowest of m scores gets 1/(2m), the highest 1 − 1/(2m)."""
    ranks = np.argsort(np.argsort(s, kind="stable"), kind="stable")
    return (ranks + 0.5) / len(s)


def _z(s: Float) -> Float:
    """z-scores (all 0 when the scores are equal)."""
    spread = s.std()
    return (s - s.mean()) / spread if spread > 0 else np.zeros_like(s)


register_normalisation("none", lambda s: s)
register_normalisation("rank", _ranks)
register_normalisation("z", _z)

#: How the probes are picked among the experts a client does not hold.
PICKS = ("stale", "random")

#: Probes a round of an alone signal when ``probe`` is not set.
DEFAULT_PROBES = 2


@dataclass(frozen=True)
class FitnessConfig:
    r"""How client feedback becomes the utility of the assignment.

    The defaults — each client scores its held experts and 2 it does not hold (the
    stalest) alone on its training split, neutral start, EMA β 0.3 — are the option the
    one-standard-error rule chose on the validation split of ``experts-matter``
    (``flexmoe-bench fl --preset fitness-options``; README, "Results"), with the
    default switch cost 0.05. The paper's fitness is ``signal="accuracy",
    initial=1.0, probe=0`` (the ``flex-paper`` arm).

    Attributes
    ----------
    signal : str
        A registered signal: ``accuracy`` / ``loss`` (the paper: the routed samples of
        each held expert), ``alone`` / ``alone_loss`` (each expert alone on the client's
        training split), or one added with :func:`register_signal`.
    beta : float
        EMA step β in (0, 1].
    alpha : float
        Loss temperature α > 0 of the loss signals.
    initial : float or None
        The value of an untried pair: a number (``1.0``: optimistic, the paper; every
        untried pair looks better than any tried one) or None, the neutral start: the
        mean of the client's tried pairs (of all tried pairs while it has none; 0 before
        anything was tried). With None a pair's first score becomes its value.
    bonus : float
        Exploration bonus c ≥ 0 added to the utility: ``c / sqrt(1 + tries[n, e])``.
    probe : int or None
        Experts a client does not hold that it downloads, scores and discards each
        round (needs an ``alone`` signal); 0 is the paper, −1 every expert it does not
        hold; None (the default): :data:`DEFAULT_PROBES` with an alone signal, 0 with a
        routed one (see :attr:`probes`).
    pick : {"stale", "random"}
        Which probes: those the client scored longest ago (never-scored first), or
        uniformly; ties at random (seeded by run, round and client).
    normalise : str
        A registered per-round normalisation of a client's scores before the update:
        ``none``, ``rank`` or ``z`` (so that scores taken at different training stages
        compare).

    Notes
    -----
    On the pairs scored this round, ``Q ← (1 − β)·Q + β·s`` (the first score of a pair
    replaces a neutral start); all other pairs keep their value. A held expert the
    signal did not score (the gate routed it nothing) has been tried and earned
    ``s = 0``.
    """

    signal: str = field(
        default="alone",
        metadata=param("fitness signal", choices=lambda: list(SIGNALS), metavar="NAME"),
    )
    beta: float = field(
        default=0.3,
        metadata=param("fitness EMA step β", check=number(0, 1, open_low=True), metavar="B"),
    )
    alpha: float = field(
        default=1.0,
        metadata=param(
            "loss temperature α of the loss signals", check=number(0, open_low=True), metavar="A"
        ),
    )
    initial: float | None = field(
        default=None,
        metadata=param(
            "fitness Q0 of an untried pair (none: neutral, the client's mean)",
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
    probe: int | None = field(
        default=None,
        metadata=param(
            "experts not held that each client scores per round (-1: all; needs an alone "
            f"signal; none: {DEFAULT_PROBES} with an alone signal, 0 with a routed one)",
            check=number(low=-1),
            metavar="M",
        ),
    )
    pick: str = field(
        default="stale",
        metadata=param("which experts to probe", choices=lambda: PICKS, metavar="HOW"),
    )
    normalise: str = field(
        default="none",
        metadata=param(
            "per-round normalisation of a client's scores",
            choices=lambda: list(NORMALISATIONS),
            metavar="HOW",
        ),
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.probe not in (0, None) and not SIGNALS[self.signal].alone:
            raise ConfigError(
                "probe",
                f"`probe` {self.probe} needs a signal that scores experts alone (alone, "
                f"alone_loss): nothing is routed to a probed expert; got `signal` "
                f"{self.signal!r} (set `probe` 0 for a routed signal, as the paper does)",
            )

    @property
    def alone(self) -> bool:
        """Whether clients score experts alone (the signal reads those scores)."""
        return SIGNALS[self.signal].alone

    @property
    def probes(self) -> int:
        """The number of probes a round: ``probe``, or when it is None
        :data:`DEFAULT_PROBES` with an alone signal and 0 with a routed one.

        Examples
        --------
        >>> FitnessConfig().probes, FitnessConfig(signal="accuracy").probes
        (2, 0)
        """
        if self.probe is not None:
            return self.probe
        return DEFAULT_PROBES if self.alone else 0


@dataclass
class Fitness:
    """The fitness matrix Q, how often each pair was scored, and when last.

    Attributes
    ----------
    config : FitnessConfig
    q : ndarray, shape (n_clients, n_experts)
        The scores so far (with a neutral start, meaningless where ``tries == 0``).
    tries : ndarray of int
        How often each pair was scored.
    last : ndarray of int
        The round each pair was last scored (−1: never); probes pick by it.

    Examples
    --------
    >>> f = Fitness.start(2, 3, FitnessConfig(signal="accuracy", beta=0.5, initial=1.0))
    >>> f.update(0, {"routed": np.array([0, 5, 0]), "accuracy": np.array([0.0, 0.4, 0.0])}, [1, 2])
    >>> f.q[0].tolist(), f.tries[0].tolist()
    ([1.0, 0.7, 0.5], [0, 1, 1])

    Expert 2 was held and routed nothing: tried, with ``s = 0``. A neutral start values
    the untried pairs at the client's mean:

    >>> f = Fitness.start(1, 3, FitnessConfig(signal="accuracy", initial=None))
    >>> f.update(0, {"routed": np.array([3, 3, 0]), "accuracy": np.array([0.2, 0.6, 0.0])},
    ...          [0, 1])
    >>> f.utility().round(3).tolist()
    [[0.2, 0.6, 0.4]]
    """

    config: FitnessConfig
    q: Float
    tries: NDArray[np.int64]
    last: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    def __post_init__(self) -> None:
        if self.last.shape != self.q.shape:
            self.last = np.full(self.q.shape, -1, dtype=np.int64)

    @classmethod
    def start(cls, n_clients: int, n_experts: int, config: FitnessConfig) -> Fitness:
        initial = 0.0 if config.initial is None else config.initial
        q = np.full((n_clients, n_experts), initial, dtype=np.float64)
        return cls(config, q, np.zeros((n_clients, n_experts), dtype=np.int64))

    def copy(self) -> Fitness:
        return Fitness(self.config, self.q.copy(), self.tries.copy(), self.last.copy())

    def with_clients(self, n: int) -> Fitness:
        """A copy with `n` more clients, none of their pairs tried (clients that joined:
        a Flower node seen for the first time).

        Examples
        --------
        >>> f = Fitness.start(1, 2, FitnessConfig(signal="accuracy", initial=1.0))
        >>> f.update(0, {"routed": np.array([4, 0]), "accuracy": np.array([0.5, 0.0])}, [0])
        >>> g = f.with_clients(1)
        >>> g.q.shape, g.tries.tolist(), g.last.tolist()
        ((2, 2), [[1, 0], [0, 0]], [[0, -1], [-1, -1]])
        """
        new = Fitness.start(n, self.q.shape[1], self.config)
        return Fitness(self.config, np.vstack([self.q, new.q]), np.vstack([self.tries, new.tries]),
                       np.vstack([self.last, new.last]))  # fmt: skip

    def scores(self, stats: Stats, held: list[int] | tuple[int, ...]) -> Float:
        """One client's scores of this round: the signal (NaN = not scored), 0 for a held
        expert it left unscored, then the per-round normalisation of the finite ones."""
        s = np.array(SIGNALS[self.config.signal].score(stats, self.config), dtype=np.float64)
        held_idx = np.asarray(held, dtype=np.intp)
        s[held_idx[~np.isfinite(s[held_idx])]] = 0.0
        scored = np.isfinite(s)
        if scored.any():
            s[scored] = NORMALISATIONS[self.config.normalise](s[scored])
        return s

    def update(
        self, client: int, stats: Stats, held: list[int] | tuple[int, ...], round: int = 0
    ) -> None:
        """The EMA step on the experts `client` scored this round (see :meth:`scores`;
        `held` are the experts it held and trained, `round` the round's number)."""
        s = self.scores(stats, held)
        fed = np.isfinite(s)
        beta = self.config.beta
        self.q[client, fed] = (1 - beta) * self.q[client, fed] + beta * s[fed]
        if self.config.initial is None:  # the neutral start: the first score is the value
            first = fed & (self.tries[client] == 0)
            self.q[client, first] = s[first]
        self.tries[client, fed] += 1
        self.last[client, fed] = round

    def utility(self) -> Float:
        """Q (untried pairs at the neutral value when configured) plus the exploration
        bonus: the utility handed to the assignment solver."""
        q = self.q.copy()
        if self.config.initial is None:
            tried = self.tries > 0
            overall = float(q[tried].mean()) if tried.any() else 0.0
            counts = tried.sum(axis=1)
            means = np.where(tried, q, 0.0).sum(axis=1) / np.maximum(counts, 1)
            neutral = np.where(counts > 0, means, overall)
            q = np.where(tried, q, neutral[:, None])
        if self.config.bonus == 0:
            return q
        return q + self.config.bonus / np.sqrt(1.0 + self.tries)

    def probes(
        self, client: int, held: list[int] | tuple[int, ...], rng: np.random.Generator
    ) -> list[int]:
        """The experts `client` scores this round besides the `held` ones (see
        ``probe`` and ``pick``), in increasing order; `rng` breaks ties."""
        m = self.config.probes
        free = np.setdiff1d(np.arange(self.q.shape[1]), np.asarray(held, dtype=np.intp))
        if m == 0 or free.size == 0:
            return []
        if m < 0 or m >= free.size:
            return [int(e) for e in free]
        noise = rng.random(free.size)
        if self.config.pick == "random":
            order = np.argsort(noise)
        else:  # stale: least recently scored first (never scored: -1), random among equals
            order = np.lexsort((noise, self.last[client, free]))
        return sorted(int(e) for e in free[order[:m]])

    def to_dict(self) -> dict[str, Any]:
        return {"q": self.q.tolist(), "tries": self.tries.tolist(), "last": self.last.tolist()}

    def load_dict(self, data: dict[str, Any]) -> None:
        self.q = np.asarray(data["q"], dtype=np.float64)
        self.tries = np.asarray(data["tries"], dtype=np.int64)
        last = data.get("last")  # checkpoints older than the probes have none
        self.last = (np.full(self.q.shape, -1, dtype=np.int64) if last is None
                     else np.asarray(last, dtype=np.int64))  # fmt: skip
