"""Rows of a solver sweep, their outcomes, and JSONL / CSV files of them."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from flexmoe.assign import Status

__all__ = [
    "JOURNAL",
    "Outcome",
    "SolverRun",
    "append_jsonl",
    "in_order",
    "keep_row",
    "read_jsonl",
    "write_csv",
    "write_jsonl",
]


class Outcome(StrEnum):
    """How a run ended when the backend gave no :class:`~flexmoe.assign.Status`.

    A row's ``status`` is either a :class:`~flexmoe.assign.Status` value (the backend
    answered) or one of these.
    """

    TIMEOUT = "timeout"
    """Killed after the time limit plus grace."""
    MEMORY = "memory"
    """Ran out of its memory limit (MemoryError, failed allocation, or killed for it)."""
    UNSUPPORTED = "unsupported"
    """The backend declines this problem's structure; not a failure."""
    UNAVAILABLE = "unavailable"
    """The backend's library is not installed."""
    CRASH = "crash"
    """The child raised or died for another reason; `message` has the end of its log."""


#: The rows of a sweep, one JSON object a line: appended as each run finishes (so that
#: an interrupted sweep keeps them), rewritten whole when the sweep ends.
JOURNAL = "runs.jsonl"

#: Statuses whose row carries an assignment.
WITH_SOLUTION = (str(Status.OPTIMAL), str(Status.FEASIBLE), str(Status.RELAXED))


@dataclass
class SolverRun:
    """One (backend, instance) run of ``flexmoe-bench solvers``.

    Times are seconds, memory MiB; NaN where unknown (e.g. after a timeout).
    ``gap`` is the backend's own certified gap (objective to its proved bound);
    ``gap_to_best`` compares with the best verified objective any backend found on this
    instance in the same sweep (negative for a ``relaxed`` answer that ignores
    constraints). ``floor_time`` is the instance's top-k pass
    (:func:`flexmoe.benchmarks.floor.topk_floor`, measured in the same sweep) and
    ``x_floor`` the run's ``wall_time`` as a multiple of it.
    """

    backend: str
    instance: str
    generator: str
    n_clients: int
    n_experts: int
    k: int
    seed: int | None
    status: str
    message: str = ""
    objective: float = math.nan
    bound: float = math.nan
    gap: float = math.nan
    best_objective: float = math.nan
    gap_to_best: float = math.nan
    build_time: float = math.nan
    solve_time: float = math.nan
    wall_time: float = math.nan
    import_time: float = math.nan
    process_time: float = math.nan
    floor_time: float = math.nan
    x_floor: float = math.nan
    peak_mib: float = math.nan
    load_cv: float = math.nan
    load_max_over_mean: float = math.nan
    under_load_min: int | None = None
    verified: bool | None = None
    violations: str = ""
    time_limit: float | None = None
    memory_limit_gib: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    log: str = ""

    @property
    def rejected(self) -> bool:
        """The backend's answer failed verification (status ``error``)."""
        return self.status == Status.ERROR

    @property
    def has_solution(self) -> bool:
        """A verified assignment that satisfies every constraint."""
        return self.status in (Status.OPTIMAL, Status.FEASIBLE) and self.verified is True

    @property
    def size(self) -> str:
        return f"{self.n_clients}x{self.n_experts}x{self.k}"

    @property
    def key(self) -> tuple[str, str]:
        """(backend, instance): what a resumed sweep skips when it has a row."""
        return self.backend, self.instance

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite floats become the strings ``"nan"``, ``"inf"``."""
        return {key: _json_value(value) for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SolverRun:
        """A row from :meth:`to_dict` output (unknown keys are ignored)."""
        return cls(**_coerce(data))

    def update(self, data: dict[str, Any]) -> None:
        """Set the fields named in `data` (JSON values, as a child process answers)."""
        for key, value in _coerce(data).items():
            setattr(self, key, value)


_FLOAT_FIELDS = {f.name for f in dataclasses.fields(SolverRun) if f.type == "float"}
_FIELDS = {f.name for f in dataclasses.fields(SolverRun)}


def _coerce(data: dict[str, Any]) -> dict[str, Any]:
    """Known fields of `data`, float fields as floats (``"nan"`` → NaN)."""
    return {
        key: float(value) if key in _FLOAT_FIELDS and value is not None else value
        for key, value in data.items()
        if key in _FIELDS
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One JSON object per line (non-finite floats as strings)."""
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")
    return path


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Add one row to a JSONL file and flush it (a journal that survives a kill)."""
    with path.open("a") as fh:
        fh.write(json.dumps({k: _json_value(v) for k, v in row.items()}) + "\n")


def keep_row(rows: list[Any], row: Any, out: Path) -> None:
    """A finished run's row (``SolverRun`` or ``FlRun``): into `rows`, and at once into
    the journal ``out/runs.jsonl``."""
    rows.append(row)
    append_jsonl(out / JOURNAL, row.to_dict())


def in_order(rows: list[Any], keys: list[Any]) -> None:
    """Sort `rows` (in place) by the position of each row's ``key`` in `keys`."""
    position = {key: n for n, key in enumerate(keys)}
    rows.sort(key=lambda row: position.get(row.key, len(position)))


def read_jsonl(path: Path) -> list[SolverRun]:
    """Rows written by :func:`write_jsonl`."""
    lines = path.read_text().splitlines()
    return [SolverRun.from_dict(json.loads(line)) for line in lines if line.strip()]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as CSV; dict and list values are written as JSON."""
    if not rows:
        path.write_text("")
        return path
    columns = list(rows[0])
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
            )
    return path
