"""Statistics of a federated sweep a reviewer accepts: paired seeds, validation for every
choice, test reported once.

From each run's history (:func:`run_metrics`): personalised and global accuracy on the
validation and test splits, after the last round and averaged over the last five (one
validation sample is worth more than half a point on digits: the last-5 mean is
steadier), the spread of the load by holders and by routed samples, switches, bytes per
round and the assignment's share of the round time. Then, per arm, mean ± standard
deviation over seeds (:func:`summarise_arms`); paired differences between two arms seed
by seed with two 95 % intervals (:func:`paired`): the BCa bootstrap
(``scipy.stats.bootstrap``, 10,000 resamples, seeded) and the paired t interval — with
five seeds a bootstrap interval cannot be wider than the spread of five numbers, so it
is too narrow, and the t interval is the one to trust; a difference counts as
significant only when both exclude 0 — and the seeds won.

When a sweep has *options* (fitness settings of ``flex``), one is chosen on the
validation split by a rule fixed in advance (:func:`choose`): the one-standard-error
rule on the personalised validation accuracy of the last five rounds, cost = bytes
downloaded. The test split is reported once, for the chosen option and every other
arm; the other options' test figures are withheld.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "ArmSummary",
    "Choice",
    "Metric",
    "Paired",
    "choose",
    "paired",
    "run_metrics",
    "summarise_arms",
    "switches",
]

History = Mapping[str, Any]


@dataclass(frozen=True)
class Metric:
    """A figure of one run: its column label and how to read it from a history."""

    label: str
    read: Callable[[History], float]


def _accuracy(key: str, last: int) -> Callable[[History], float]:
    def read(history: History) -> float:
        values = [r.get(key) for r in history["rounds"][-last:]]
        finite = [float(v) for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(finite)) if len(finite) == len(values) and finite else math.nan

    return read


def _per_round(path: str, scale: float = 1.0) -> Callable[[History], float]:
    """Mean over rounds of a per-round value (a list: its mean over participants)."""

    def read(history: History) -> float:
        values = []
        for record in history["rounds"]:
            value: Any = record
            for part in path.split("."):
                value = value[part]
            values.append(np.mean(value) if isinstance(value, list) else value)
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        return scale * float(np.mean(finite)) if finite else math.nan

    return read


def switches(history: History) -> float:
    """Experts a client newly holds, per client and round it takes part in after its
    first (the churn an assignment makes the local gates pay for)."""
    last: dict[int, set[int]] = {}
    total = count = 0
    for record in history["rounds"]:
        experts = record["assignment"]["experts"]
        for client, held in zip(record["participants"], experts, strict=True):
            if client in last:
                total += len(set(held) - last[client])
                count += 1
            last[client] = set(held)
    return total / count if count else math.nan


def _assign_share(history: History) -> float:
    times = [r["time"] for r in history["rounds"]]
    whole = sum(t["round"] for t in times)
    return sum(t["assign"] for t in times) / whole if whole > 0 else math.nan


#: Every figure of a run, by key (``pv5``: personalised validation, mean of the last 5).
METRICS: dict[str, Metric] = {
    "pv": Metric("pers val (last)", _accuracy("personalized_val_acc", 1)),
    "pv5": Metric("pers val (last 5)", _accuracy("personalized_val_acc", 5)),
    "gv": Metric("global val (last)", _accuracy("global_val_acc", 1)),
    "gv5": Metric("global val (last 5)", _accuracy("global_val_acc", 5)),
    "pt": Metric("pers test (last)", _accuracy("personalized_acc", 1)),
    "pt5": Metric("pers test (last 5)", _accuracy("personalized_acc", 5)),
    "gt": Metric("global test (last)", _accuracy("global_acc", 1)),
    "gt5": Metric("global test (last 5)", _accuracy("global_acc", 5)),
    "holders_cv": Metric("holders CV", _per_round("holders.cv")),
    "routed_cv": Metric("routed CV", _per_round("routed.cv")),
    "switches": Metric("switches / client-round", switches),
    "kb_down": Metric("KB down / client-round", _per_round("bytes_down", 1e-3)),
    "kb_up": Metric("KB up / client-round", _per_round("bytes_up", 1e-3)),
    "assign_share": Metric("assign % of round", _assign_share),
    "round_s": Metric("round s", _per_round("time.round")),
}


def run_metrics(history: History) -> dict[str, float]:
    """Every :data:`METRICS` figure of one run (NaN where it has none).

    Examples
    --------
    >>> r = {"personalized_val_acc": 0.5, "participants": [0], "time": {"round": 1.0,
    ...      "assign": 0.1}, "assignment": {"experts": [[0, 1]]}}
    >>> m = run_metrics({"rounds": [r, {**r, "personalized_val_acc": 0.7}]})
    >>> m["pv"], m["pv5"], m["switches"], m["assign_share"]
    (0.7, 0.6, 0.0, 0.1)
    """
    out = {}
    for key, metric in METRICS.items():
        try:
            out[key] = metric.read(history)
        except (KeyError, TypeError):
            out[key] = math.nan
    return out


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds: every metric's mean and standard deviation (ddof 1)."""

    arm: str
    seeds: tuple[int, ...]
    mean: dict[str, float]
    std: dict[str, float]
    backends: tuple[str, ...]


def summarise_arms(
    runs: Mapping[str, Mapping[int, History]],
) -> dict[str, ArmSummary]:
    """Per arm (``{arm: {seed: history}}``, in that order), mean ± std of every metric."""
    out = {}
    for arm, by_seed in runs.items():
        table = [run_metrics(h) for h in by_seed.values()]
        mean = {k: _nanmean([row[k] for row in table]) for k in METRICS}
        std = {k: _nanstd([row[k] for row in table]) for k in METRICS}
        backends = sorted({r["assignment"]["backend"] for h in by_seed.values()
                           for r in h["rounds"]})  # fmt: skip
        out[arm] = ArmSummary(arm, tuple(by_seed), mean, std, tuple(backends))
    return out


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nanstd(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


@dataclass(frozen=True)
class Paired:
    """``a − b`` seed by seed on one metric.

    Attributes
    ----------
    diffs : tuple of float
        Per common seed, in seed order.
    mean : float
    bootstrap, t : tuple of float
        95 % intervals: BCa bootstrap, paired t (NaN with fewer than 2 seeds).
    won : int
        Seeds where ``a > b`` strictly.
    """

    diffs: tuple[float, ...]
    mean: float
    bootstrap: tuple[float, float]
    t: tuple[float, float]
    won: int

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def significant(self) -> bool:
        """Both intervals exclude 0."""
        return all(lo > 0 or hi < 0 for lo, hi in (self.bootstrap, self.t))

    def cell(self) -> str:
        """``+0.042 [+0.017, +0.074] / [+0.007, +0.077] 9/10``, bold when significant."""
        if not self.diffs:
            return "-"
        mean = f"{self.mean:+.3f}"
        if self.significant:
            mean = f"**{mean}**"
        b, t = (f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in (self.bootstrap, self.t))
        return f"{mean} {b} / {t} {self.won}/{self.n}"


def paired(a: Mapping[int, float], b: Mapping[int, float], *, seed: int = 0) -> Paired:
    """`a` − `b` on the seeds both have a finite value for.

    Examples
    --------
    >>> p = paired({0: 0.9, 1: 0.8, 2: 0.85}, {0: 0.8, 1: 0.8, 2: 0.7})
    >>> round(p.mean, 3), p.won, p.n
    (0.083, 2, 3)
    >>> p.t[0] < p.mean < p.t[1]
    True
    """
    seeds = sorted(s for s in a if s in b and math.isfinite(a[s]) and math.isfinite(b[s]))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    if d.size == 0:
        nan = (math.nan, math.nan)
        return Paired((), math.nan, nan, nan, 0)
    mean = float(d.mean())
    return Paired(tuple(d.tolist()), mean, _bootstrap(d, seed), _t_interval(d),
                  int((d > 0).sum()))  # fmt: skip


def _bootstrap(d: np.ndarray, seed: int) -> tuple[float, float]:
    """BCa bootstrap 95 % interval of the mean (the point when the values are equal)."""
    from scipy import stats

    if d.size < 2 or np.ptp(d) == 0:
        return float(d.mean()), float(d.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa on tiny samples warns about its own accuracy
        result = stats.bootstrap((d,), np.mean, n_resamples=10_000, method="BCa",
                                 random_state=np.random.default_rng(seed))  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _t_interval(d: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if d.size < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return float(d.mean()) - half, float(d.mean()) + half


def per_seed(runs: Mapping[int, History], key: str) -> dict[int, float]:
    """One metric of every seed of an arm."""
    return {seed: run_metrics(history)[key] for seed, history in runs.items()}


@dataclass(frozen=True)
class Choice:
    """The option chosen on validation, and why.

    Attributes
    ----------
    chosen : str
    best : str
        The option with the highest mean of the selection metric.
    within : dict of str to bool
        Per option: its paired mean difference to `best` is within one standard error.
    gaps : dict of str to Paired
        Per option: option − best on the selection metric.
    """

    chosen: str
    best: str
    within: dict[str, bool]
    gaps: dict[str, Paired]


#: The selection metric and the cost of the one-standard-error rule.
SELECT, COST = "pv5", "kb_down"


def choose(runs: Mapping[str, Mapping[int, History]], options: Sequence[str]) -> Choice:
    """The one-standard-error rule on the validation split: among the options whose
    mean personalised validation accuracy (last 5 rounds) is within one standard error
    of the best one's (paired by seed), the one that downloads the fewest bytes (then
    the higher mean)."""
    scores = {o: per_seed(runs[o], SELECT) for o in options}
    best = max(options, key=lambda o: _nanmean(list(scores[o].values())))
    gaps = {o: paired(scores[o], scores[best]) for o in options}
    within = {}
    for option, gap in gaps.items():
        se = float(np.std(gap.diffs, ddof=1) / math.sqrt(gap.n)) if gap.n > 1 else 0.0
        within[option] = option == best or gap.mean >= -se
    cost = {o: _nanmean(list(per_seed(runs[o], COST).values())) for o in options}
    eligible = [o for o in options if within[o]]
    chosen = min(eligible, key=lambda o: (cost[o], -_nanmean(list(scores[o].values()))))
    return Choice(chosen, best, within, gaps)
