"""The record of a federated run: configuration, set-up and one :class:`RoundRecord` per
round. Every engine writes the same records; ``history.json`` is their JSON form."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TIMING_KEY",
    "AssignmentRecord",
    "History",
    "LoadSummary",
    "RoundRecord",
    "Timings",
    "write_json",
]

#: The per-round entry holding wall-clock timings (the only part that varies between
#: identical runs).
TIMING_KEY = "time"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file, then a rename); NaN/inf become null."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(_clean(data), indent=1, allow_nan=False))
    os.replace(temporary, path)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class LoadSummary:
    """Spread of one load vector over the experts (see :class:`~flexmoe.assign.LoadStats`)."""

    cv: float
    max_over_mean: float
    entropy: float
    zero: int

    @classmethod
    def of(cls, loads: Any) -> LoadSummary:
        from flexmoe.assign import LoadStats

        stats = LoadStats.of(np.asarray(loads, dtype=float))
        return cls(stats.cv, stats.max_over_mean, stats.entropy, stats.zero)


@dataclass(frozen=True)
class AssignmentRecord:
    """The round's assignment: who solved it, how it went, who holds what.

    ``objective`` is the round problem's objective of the assignment; ``load_min`` /
    ``load_max`` the band of holders per expert the problem asked for.
    """

    backend: str
    status: str
    objective: float
    experts: list[list[int]]
    load_min: list[float]
    load_max: list[float]


@dataclass(frozen=True)
class Timings:
    """Seconds spent on the round: choosing the assignment, training, evaluating, all."""

    assign: float
    train: float
    eval: float
    round: float


@dataclass(frozen=True)
class RoundRecord:
    """What one round did and measured.

    Attributes
    ----------
    round : int
    participants, dropped : list of int
        Clients asked to train; those of them that sent nothing back.
    assignment : AssignmentRecord
    load_holders, load_trained, load_routed : list of float
        Per expert: planned holders, holders that trained it, samples routed to it.
    holders, routed : LoadSummary
        Spread of the holder and routed-sample loads.
    never_trained : int
        Experts no sample was routed to.
    bytes_down, bytes_up : list of int
        Per participant: ψ and its experts sent, and received back.
    train_loss : float or None
        Mean local training loss of the replies.
    time : Timings
    personalized_acc, personalized_val_acc, global_acc, global_val_acc : float or None
        Own test / validation splits pooled; each client's model on the pooled split,
        averaged over clients.
    client_acc : list of float or None
        Each client's personalised test accuracy.
    """

    round: int
    participants: list[int]
    dropped: list[int]
    assignment: AssignmentRecord
    load_holders: list[float]
    load_trained: list[float]
    load_routed: list[float]
    holders: LoadSummary
    routed: LoadSummary
    never_trained: int
    bytes_down: list[int]
    bytes_up: list[int]
    train_loss: float | None
    time: Timings
    personalized_acc: float | None
    personalized_val_acc: float | None
    global_acc: float | None
    global_val_acc: float | None
    client_acc: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        nested = {"assignment": AssignmentRecord, "holders": LoadSummary,
                  "routed": LoadSummary, TIMING_KEY: Timings}  # fmt: skip
        values = {k: nested[k](**v) if k in nested else v for k, v in data.items()}
        for key in ("holders", "routed"):  # JSON wrote NaN as null
            summary = values[key]
            values[key] = dataclasses.replace(
                summary, **{k: math.nan for k, v in vars(summary).items() if v is None}
            )
        return cls(**values)


def _get(value: Any, part: str) -> Any:
    return value[part] if isinstance(value, dict) else getattr(value, part)


@dataclass
class History:
    """What a run produced, round by round.

    Attributes
    ----------
    config : dict
        The :class:`~flexmoe.fedloop.FedConfig` as a dict.
    setup : dict
        Label skew of the partition, client capacities and budgets, model sizes.
    rounds : list of RoundRecord
    """

    config: dict[str, Any]
    setup: dict[str, Any] = field(default_factory=dict)
    rounds: list[RoundRecord] = field(default_factory=list)

    def series(self, path: str) -> list[Any]:
        """One value per round along a dotted path: ``series("holders.cv")``."""
        values = []
        for record in self.rounds:
            value: Any = record
            for part in path.split("."):
                value = _get(value, part)
            values.append(value)
        return values

    def final(self) -> dict[str, Any]:
        """Headline figures: last-round accuracies, worst load CV, mean timings."""
        if not self.rounds:
            return {}
        last = self.rounds[-1]
        cvs = [c for c in self.series("holders.cv") if c is not None and not math.isnan(c)]
        round_times = self.series(f"{TIMING_KEY}.round")
        return {
            "rounds": len(self.rounds),
            "personalized_acc": last.personalized_acc,
            "personalized_val_acc": last.personalized_val_acc,
            "global_acc": last.global_acc,
            "global_val_acc": last.global_val_acc,
            "max_holders_cv": max(cvs) if cvs else None,
            "never_trained_rounds": sum(1 for r in self.rounds if r.never_trained > 0),
            "assign_time_share": sum(self.series(f"{TIMING_KEY}.assign")) / sum(round_times),
            "mean_round_time": float(np.mean(round_times)),
        }

    def without_timings(self) -> dict[str, Any]:
        """The history minus wall-clock timings: equal for identical seeded runs."""
        rounds = [{k: v for k, v in r.to_dict().items() if k != TIMING_KEY} for r in self.rounds]
        return _clean({"config": self.config, "setup": self.setup, "rounds": rounds})

    def to_dict(self) -> dict[str, Any]:
        rounds = [r.to_dict() for r in self.rounds]
        return {"config": self.config, "setup": self.setup, "rounds": rounds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        rounds = [RoundRecord.from_dict(r) for r in data.get("rounds", [])]
        return cls(data["config"], data.get("setup", {}), rounds)

    def save(self, path: str | Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))
