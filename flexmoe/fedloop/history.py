"""The record of a federated run: configuration, partition summary and per-round metrics."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TIMING_KEY", "History", "write_json"]

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


@dataclass
class History:
    """What a run produced, round by round.

    Attributes
    ----------
    config : dict
        The :class:`~flexmoe.fedloop.FedConfig` as a dict.
    setup : dict
        Label skew of the partition, client capacities and budgets, model sizes.
    rounds : list of dict
        One entry per round: ``round``, ``participants``, ``dropped``, ``assignment``,
        loads (``load_holders``, ``load_routed``, summaries ``holders`` and ``routed``
        with ``cv``, ``max_over_mean``, ``entropy``, ``zero``), ``never_trained``,
        ``bytes_down`` / ``bytes_up`` per participant, ``personalized_acc``,
        ``personalized_val_acc``, ``global_acc``, ``global_val_acc``, ``client_acc`` and
        ``time`` (seconds: ``assign``, ``train``, ``eval``, ``round``).
    """

    config: dict[str, Any]
    setup: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def series(self, path: str) -> list[Any]:
        """One value per round along a dotted path: ``series("holders.cv")``."""
        values = []
        for record in self.rounds:
            value: Any = record
            for part in path.split("."):
                value = value[part]
            values.append(value)
        return values

    def final(self) -> dict[str, Any]:
        """Headline figures: last-round accuracies, worst load CV, mean timings."""
        if not self.rounds:
            return {}
        last = self.rounds[-1]
        cvs = [c for c in self.series("holders.cv") if c is not None]
        round_times = self.series(f"{TIMING_KEY}.round")
        return {
            "rounds": len(self.rounds),
            "personalized_acc": last["personalized_acc"],
            "personalized_val_acc": last["personalized_val_acc"],
            "global_acc": last["global_acc"],
            "global_val_acc": last["global_val_acc"],
            "max_holders_cv": max(cvs) if cvs else None,
            "never_trained_rounds": sum(1 for r in self.rounds if r["never_trained"] > 0),
            "assign_time_share": sum(self.series(f"{TIMING_KEY}.assign")) / sum(round_times),
            "mean_round_time": float(np.mean(round_times)),
        }

    def without_timings(self) -> dict[str, Any]:
        """The history minus wall-clock timings: equal for identical seeded runs."""
        rounds = [{k: v for k, v in r.items() if k != TIMING_KEY} for r in self.rounds]
        return _clean({"config": self.config, "setup": self.setup, "rounds": rounds})

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "setup": self.setup, "rounds": self.rounds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(data["config"], data.get("setup", {}), list(data.get("rounds", [])))

    def save(self, path: str | Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))
