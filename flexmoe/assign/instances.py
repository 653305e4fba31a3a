"""Seeded, named instance generators for benchmarks, tests and demos.

Every generator has the signature ``(n_clients, n_experts, k, *, seed=0, load_slack=0.1,
balance_penalty=0.0, balance_metric="variance", ...)`` and returns a feasible
:class:`~flexmoe.assign.AssignmentProblem` named ``"{kind}-{N}x{E}x{k}-s{seed}"``, with
``-lam{λ}`` appended under a balance penalty (and ``-range`` for that metric): the
soft-balance workload the ``convex`` backend exists for. :func:`generate` picks one by
name from :data:`GENERATORS`.

Feasibility is by construction: each generator builds a witness assignment (clients hold
consecutive experts round-robin, heaviest clients first) and makes every band and budget
contain it, so the precheck passes and an exact backend always finds a solution.

>>> from flexmoe.assign.instances import generate
>>> generate("clustered", 1000, 64, 8).name
'clustered-1000x64x8-s0'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexmoe.assign.problem import AssignmentProblem, Float, Int

__all__ = [
    "GENERATORS",
    "clustered",
    "default_tiers",
    "generate",
    "heterogeneous",
    "load_band",
    "uniform",
    "weighted",
]

Generator = Callable[..., AssignmentProblem]


def _check_sizes(n_clients: int, n_experts: int, k: int) -> None:
    if n_clients < 1 or n_experts < 1:
        raise ValueError(
            f"`n_clients` and `n_experts` must be >= 1; got {n_clients} and {n_experts}"
        )
    if not 1 <= k <= n_experts:
        raise ValueError(f"`k` must be in 1..n_experts = 1..{n_experts}; got {k}")


def _name(kind: str, n_clients: int, n_experts: int, k: int, seed: int, balance: _Balance) -> str:
    name = f"{kind}-{n_clients}x{n_experts}x{k}-s{seed}"
    if balance.penalty:
        name += f"-lam{balance.penalty:g}" + ("-range" if balance.metric == "range" else "")
    return name


@dataclass(frozen=True)
class _Balance:
    """The soft balance term every generator takes: λ and the metric."""

    penalty: float = 0.0
    metric: str = "variance"

    def fields(self) -> dict[str, Any]:
        return {"balance_penalty": self.penalty, "balance_metric": self.metric}


def _witness(counts: np.ndarray, n_experts: int, order: np.ndarray | None = None) -> np.ndarray:
    """Client n holds ``counts[n]`` consecutive experts (mod E) along one running slot
    index, clients taken in `order`: every load is within one holder of the mean."""
    counts = np.asarray(counts, dtype=np.int64)
    order = np.arange(len(counts)) if order is None else order
    start = np.empty(len(counts), dtype=np.int64)
    start[order] = np.concatenate([[0], np.cumsum(counts[order])[:-1]])
    offsets = np.arange(int(counts.max()))
    experts = (start[:, None] + offsets) % n_experts
    x = np.zeros((len(counts), n_experts), dtype=bool)
    rows, cols = np.nonzero(offsets < counts[:, None])
    x[rows, experts[rows, cols]] = True
    return x


def load_band(
    mean: float, slack: float | None, n_experts: int, witness_loads: Float | None = None
) -> tuple[Float, Float]:
    """Per-expert ``(floor(m·(1 − slack)), ceil(m·(1 + slack)))`` for mean load ``m``,
    widened where needed to hold `witness_loads`.

    ``load_min`` is at least 1 when the mean load is (every expert is trained);
    ``slack=None`` gives no band: ``(0, inf)``.

    Examples
    --------
    >>> lo, hi = load_band(125.0, 0.1, 3)
    >>> lo.tolist(), hi.tolist()
    ([112.0, 112.0, 112.0], [138.0, 138.0, 138.0])
    >>> [float(b[0]) for b in load_band(0.5, 0.1, 1) + load_band(1.05, 0.1, 1)]
    [0.0, 1.0, 1.0, 2.0]
    """
    if slack is None:
        return np.zeros(n_experts), np.full(n_experts, math.inf)
    if slack < 0:
        raise ValueError(f"`load_slack` must be >= 0 or None; got {slack}")
    lo = float(math.floor(mean * (1 - slack) + 1e-9)) if slack < 1 else 0.0
    lo = max(lo, 1.0) if mean >= 1 else lo
    hi = float(math.ceil(mean * (1 + slack) - 1e-9))
    lows, highs = np.full(n_experts, lo), np.full(n_experts, hi)
    if witness_loads is None:
        return lows, highs
    return np.minimum(lows, witness_loads), np.maximum(highs, witness_loads)


def uniform(
    n_clients: int,
    n_experts: int,
    k: int,
    *,
    seed: int = 0,
    load_slack: float | None = 0.1,
    balance_penalty: float = 0.0,
    balance_metric: str = "variance",
) -> AssignmentProblem:
    """IID utilities: every pair uniform on [0, 1), every client holds exactly `k` experts.

    Parameters
    ----------
    n_clients, n_experts, k : int
        Problem size; ``1 <= k <= n_experts``.
    seed : int
        Seed of :func:`numpy.random.default_rng`.
    load_slack : float or None
        Load band ``[floor(m·(1 − s)), ceil(m·(1 + s))]`` around the mean load
        ``m = N·k/E``; None for no band.
    balance_penalty, balance_metric : float, {"variance", "range"}
        The soft balance term λ·imbalance(L) of the problem (default: none).

    Examples
    --------
    >>> p = uniform(100, 8, 2, seed=1)
    >>> p.name, p.shape, float(p.load_min[0]), float(p.load_max[0])
    ('uniform-100x8x2-s1', (100, 8), 22.0, 28.0)
    >>> uniform(100, 8, 2, seed=1, balance_penalty=0.01).name
    'uniform-100x8x2-s1-lam0.01'
    """
    _check_sizes(n_clients, n_experts, k)
    balance = _Balance(balance_penalty, balance_metric)
    rng = np.random.default_rng(seed)
    utility = rng.random((n_clients, n_experts))
    lo, hi = load_band(n_clients * k / n_experts, load_slack, n_experts)
    return AssignmentProblem(
        utility,
        max_experts=np.full(n_clients, k),
        load_min=lo,
        load_max=hi,
        name=_name("uniform", n_clients, n_experts, k, seed, balance),
        **balance.fields(),
    )


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like popularity over `n` items in a random order, summing to 1."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def clustered(
    n_clients: int,
    n_experts: int,
    k: int,
    *,
    seed: int = 0,
    load_slack: float | None = 0.1,
    n_groups: int = 4,
    strength: float = 0.6,
    popularity: float = 1.0,
    balance_penalty: float = 0.0,
    balance_metric: str = "variance",
) -> AssignmentProblem:
    """Non-IID clients: a few latent groups, each strongly preferring `k` experts.

    Each group draws its `k` favourite experts from a Zipf(`popularity`) distribution
    over experts, so groups overlap on a few popular experts; group sizes are
    Dirichlet(1). ``utility = 0.4·noise + strength·[e is a favourite of n's group]``
    with noise uniform on [0, 1). Top-k by utility piles onto the favourites and leaves
    most experts untrained: the skew that makes plain greedy collapse.

    Parameters
    ----------
    n_clients, n_experts, k, seed, load_slack, balance_penalty, balance_metric
        As in :func:`uniform`.
    n_groups : int
        Number of latent client groups.
    strength : float
        Utility bonus of a group's favourite experts.
    popularity : float
        Zipf exponent of expert popularity when groups pick favourites (0: uniform).

    Examples
    --------
    >>> p = clustered(1000, 64, 8)
    >>> top = np.argsort(-p.utility, axis=1)[:, :8]
    >>> int((np.bincount(top.ravel(), minlength=64) == 0).sum()) > 20  # experts unused
    True
    """
    _check_sizes(n_clients, n_experts, k)
    balance = _Balance(balance_penalty, balance_metric)
    if n_groups < 1:
        raise ValueError(f"`n_groups` must be >= 1; got {n_groups}")
    rng = np.random.default_rng(seed)
    pop = _zipf(n_experts, popularity, rng)
    boost = np.zeros((n_groups, n_experts))
    for g in range(n_groups):
        favourites = rng.choice(n_experts, size=k, replace=False, p=pop)
        boost[g, favourites] = strength * (0.8 + 0.2 * rng.random(k))
    group = rng.choice(n_groups, size=n_clients, p=rng.dirichlet(np.ones(n_groups)))
    utility = 0.4 * rng.random((n_clients, n_experts)) + boost[group]
    lo, hi = load_band(n_clients * k / n_experts, load_slack, n_experts)
    return AssignmentProblem(
        utility,
        max_experts=np.full(n_clients, k),
        load_min=lo,
        load_max=hi,
        name=_name("clustered", n_clients, n_experts, k, seed, balance),
        **balance.fields(),
    )


def default_tiers(k: int) -> tuple[int, ...]:
    """Capacity tiers for largest tier `k`: ``k/4, k/2, k`` (at least 1, no repeats).

    >>> default_tiers(8), default_tiers(2), default_tiers(1)
    ((2, 4, 8), (1, 2), (1,))
    """
    return tuple(sorted({max(1, k // 4), max(1, k // 2), k}))


def _budget(need: np.ndarray, typical: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A budget of 0.95..1.35 × `typical`, never below the witness's `need`."""
    return np.maximum(typical * rng.uniform(0.95, 1.35, size=len(typical)), need)


def heterogeneous(
    n_clients: int,
    n_experts: int,
    k: int,
    *,
    seed: int = 0,
    load_slack: float | None = 0.1,
    tiers: Sequence[int] | None = None,
    tier_probs: Sequence[float] | None = None,
    balance_penalty: float = 0.0,
    balance_metric: str = "variance",
) -> AssignmentProblem:
    """Capacity tiers with storage and compute budgets: the case that needs the MILP.

    Each client falls in a tier ``t`` (default :func:`default_tiers`: 2/4/8 for ``k=8``,
    equally likely; `k` is the largest tier) and holds exactly ``t`` experts. Experts
    have sizes and per-sample FLOPs, both uniform on [0.5, 1.5]; client n's compute cost
    is ``flops[e]·slowness[n]`` with slowness uniform on [0.5, 2]. Each budget is
    0.95..1.35 × what ``t`` average experts need (never below what the witness
    assignment uses): the ``t`` favourites of about one client in six break a budget, so
    the budgets bind without making feasibility a puzzle. Utilities are IID uniform.

    Parameters
    ----------
    n_clients, n_experts, k, seed, load_slack, balance_penalty, balance_metric
        As in :func:`uniform`; the mean load is ``Σ_n t_n / E``.
    tiers : sequence of int, optional
        Experts per client in each tier, each in ``1..k``.
    tier_probs : sequence of float, optional
        Probability of each tier (default: equal).

    Examples
    --------
    >>> p = heterogeneous(200, 16, 8, seed=3)
    >>> sorted(set(p.max_experts.tolist())), p.has_storage, p.has_compute
    ([2, 4, 8], True, True)
    """
    _check_sizes(n_clients, n_experts, k)
    balance = _Balance(balance_penalty, balance_metric)
    levels: Int = np.asarray(default_tiers(k) if tiers is None else tiers, dtype=np.int64)
    if levels.ndim != 1 or len(levels) == 0 or levels.min() < 1 or levels.max() > k:
        raise ValueError(f"`tiers` must be a non-empty sequence in 1..k = 1..{k}; got {tiers}")
    rng = np.random.default_rng(seed)
    probs = None if tier_probs is None else np.asarray(tier_probs, dtype=np.float64)
    counts = levels[rng.choice(len(levels), size=n_clients, p=probs)]
    utility = rng.random((n_clients, n_experts))
    size = rng.uniform(0.5, 1.5, n_experts)
    flops = rng.uniform(0.5, 1.5, n_experts)
    slowness = rng.uniform(0.5, 2.0, n_clients)
    compute_cost = slowness[:, None] * flops
    x = _witness(counts, n_experts)
    storage = _budget(x @ size, counts * size.mean(), rng)
    budget = _budget((x * compute_cost).sum(axis=1), counts * slowness * flops.mean(), rng)
    lo, hi = load_band(counts.sum() / n_experts, load_slack, n_experts, x.sum(axis=0) * 1.0)
    return AssignmentProblem(
        utility,
        max_experts=counts,
        load_min=lo,
        load_max=hi,
        expert_size=size,
        storage=storage,
        compute_cost=compute_cost,
        compute_budget=budget,
        name=_name("heterogeneous", n_clients, n_experts, k, seed, balance),
        **balance.fields(),
    )


def weighted(
    n_clients: int,
    n_experts: int,
    k: int,
    *,
    seed: int = 0,
    load_slack: float | None = 0.1,
    median_samples: int = 500,
    sigma: float = 1.0,
    balance_penalty: float = 0.0,
    balance_metric: str = "variance",
) -> AssignmentProblem:
    """Data-volume loads: an expert's load is the number of samples it trains on.

    Client n has ``v[n]`` samples, log-normal with median `median_samples` and shape
    `sigma` (rounded, at least 1); ``load_weight[n, e] = v[n]``. Every client holds
    exactly `k` experts; the band is around the mean weighted load ``k·Σ v / E``
    (widened, if needed, to hold the witness, whose loads differ from the mean by at
    most about one client's volume). Utilities are IID uniform.

    Parameters
    ----------
    n_clients, n_experts, k, seed, load_slack, balance_penalty, balance_metric
        As in :func:`uniform`.
    median_samples : int
        Median client data volume.
    sigma : float
        Log-normal shape: 0 gives equal volumes, 1 a spread of about 10× between the
        5th and 95th percentiles.

    Examples
    --------
    >>> p = weighted(500, 16, 4, seed=2)
    >>> p.weighted_loads, bool((p.load_weight >= 1).all())
    (True, True)
    """
    _check_sizes(n_clients, n_experts, k)
    balance = _Balance(balance_penalty, balance_metric)
    rng = np.random.default_rng(seed)
    volume = np.maximum(1.0, np.round(rng.lognormal(math.log(median_samples), sigma, n_clients)))
    utility = rng.random((n_clients, n_experts))
    counts = np.full(n_clients, k)
    x = _witness(counts, n_experts, order=np.argsort(-volume, kind="stable"))
    witness_loads = volume @ x
    lo, hi = load_band(k * volume.sum() / n_experts, load_slack, n_experts, witness_loads)
    return AssignmentProblem(
        utility,
        max_experts=np.full(n_clients, k),
        load_min=lo,
        load_max=hi,
        load_weight=np.broadcast_to(volume[:, None], (n_clients, n_experts)),
        name=_name("weighted", n_clients, n_experts, k, seed, balance),
        **balance.fields(),
    )


#: Generators by name, for :func:`generate` and the benchmark CLI.
GENERATORS: dict[str, Generator] = {
    "uniform": uniform,
    "clustered": clustered,
    "heterogeneous": heterogeneous,
    "weighted": weighted,
}


def generate(
    kind: str, n_clients: int, n_experts: int, k: int, *, seed: int = 0, **options: Any
) -> AssignmentProblem:
    """The instance of `kind` (a key of :data:`GENERATORS`) with these sizes and seed.

    Raises
    ------
    ValueError
        For an unknown `kind` (the message lists the valid ones) or bad sizes.

    Examples
    --------
    >>> p = generate("uniform", 10_000, 64, 8, seed=0)
    >>> p.name, int(p.max_experts[0]), float(p.load_min[0]), float(p.load_max[0])
    ('uniform-10000x64x8-s0', 8, 1125.0, 1375.0)
    >>> q = generate("clustered", 100, 8, 2, balance_penalty=0.5, balance_metric="range")
    >>> q.name, q.balance_penalty, str(q.balance_metric)
    ('clustered-100x8x2-s0-lam0.5-range', 0.5, 'range')
    """
    try:
        generator = GENERATORS[kind]
    except KeyError:
        valid = ", ".join(GENERATORS)
        raise ValueError(f"unknown instance kind {kind!r}; valid kinds: {valid}") from None
    return generator(n_clients, n_experts, k, seed=seed, **options)
