"""Medians over seeds of a solver sweep: one row per (backend, instance group)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

from flexmoe.assign import Status
from flexmoe.benchmarks.records import Outcome, SolverRun
from flexmoe.benchmarks.solvers import FROM_FILE
from flexmoe.benchmarks.tables import fmt, markdown_table, median, text_table

__all__ = ["SolverSummary", "group_of", "summarise", "summary_table"]


@dataclass(frozen=True)
class SolverSummary:
    """Medians over the seeds of one backend on one instance group."""

    backend: str
    group: str
    n_clients: int
    n_experts: int
    k: int
    runs: int
    statuses: str
    """Counts per status, e.g. ``"optimal 4, timeout 1"``."""
    wall_time: float
    solve_time: float
    build_time: float
    peak_mib: float
    objective: float
    gap: float
    """The backend's own certified gap (objective to its proved bound); inf: no bound."""
    gap_to_best: float
    load_cv: float
    load_max_over_mean: float
    under_load_min: float
    verified: str
    """``yes`` (every answer checked out), ``NO (n)`` (n rejected), ``-`` (no answer)."""
    floor_time: float = math.nan
    """The top-k pass on these instances (seconds)."""
    x_floor: float = math.nan
    """Median of each run's ``wall_time`` over its instance's floor."""
    time_limit: float | None = None
    timeouts: int = 0
    """Runs killed at the time limit (they have no time and no answer)."""
    relaxed: int = 0
    """Runs answered ``relaxed`` (an assignment that breaks constraints by design)."""
    infeasible: int = 0
    """Runs answered ``infeasible``."""
    failed: int = 0
    """Runs without an answer for another reason (crash, memory, rejected)."""

    @property
    def pairs(self) -> int:
        return self.n_clients * self.n_experts

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def group_of(row: SolverRun) -> str:
    """Generated instances group by generator and size; files stand alone."""
    return row.instance if row.generator == FROM_FILE else f"{row.generator} {row.size}"


def summarise(rows: list[SolverRun]) -> list[SolverSummary]:
    """Medians per (backend, group), groups by size then backends in sweep order."""
    keys: dict[tuple[str, str], list[SolverRun]] = {}
    for row in rows:
        keys.setdefault((row.backend, group_of(row)), []).append(row)
    order = {b: i for i, b in enumerate(dict.fromkeys(r.backend for r in rows))}
    ordered = sorted(
        keys.items(),
        key=lambda kv: (kv[1][0].n_clients * kv[1][0].n_experts, kv[0][1], order[kv[0][0]]),
    )
    return [_summary(backend, group, members) for (backend, group), members in ordered]


def _summary(backend: str, group: str, rows: list[SolverRun]) -> SolverSummary:
    first = rows[0]
    counts = Counter(row.status for row in rows)
    checked = [row.verified for row in rows if row.verified is not None]
    rejected = sum(1 for row in rows if row.rejected or row.verified is False)
    verified = f"NO ({rejected})" if rejected else ("yes" if checked else "-")
    return SolverSummary(
        backend=backend,
        group=group,
        n_clients=first.n_clients,
        n_experts=first.n_experts,
        k=first.k,
        runs=len(rows),
        statuses=", ".join(f"{status} {n}" for status, n in counts.most_common()),
        wall_time=median([r.wall_time for r in rows]),
        solve_time=median([r.solve_time for r in rows]),
        build_time=median([r.build_time for r in rows]),
        peak_mib=median([r.peak_mib for r in rows]),
        objective=median([r.objective for r in rows]),
        gap=_median_gap([r.gap for r in rows if r.has_solution]),
        gap_to_best=median([r.gap_to_best for r in rows]),
        load_cv=median([r.load_cv for r in rows]),
        load_max_over_mean=median([r.load_max_over_mean for r in rows]),
        under_load_min=median([r.under_load_min for r in rows]),
        verified=verified,
        floor_time=median([r.floor_time for r in rows]),
        x_floor=median([r.x_floor for r in rows]),
        time_limit=first.time_limit,
        timeouts=counts[Outcome.TIMEOUT],
        relaxed=counts[Status.RELAXED],
        infeasible=counts[Status.INFEASIBLE],
        failed=counts[Outcome.CRASH] + counts[Outcome.MEMORY] + rejected,
    )


def _median_gap(gaps: list[float]) -> float:
    """Median certified gap; inf when the answers carry no finite bound (heuristics)."""
    if gaps and not any(math.isfinite(g) for g in gaps):
        return math.inf
    return median(gaps)


HEADERS = (
    "backend",
    "instances",
    "runs",
    "status",
    "wall s",
    "× floor",
    "build s",
    "solve s",
    "peak MiB",
    "objective",
    "certified gap",
    "gap to best",
    "load CV",
    "max/mean",
    "< load_min",
    "verified",
)


def summary_table(summaries: list[SolverSummary], *, markdown: bool = False) -> str:
    """The medians as a terminal (or Markdown) table."""
    cells = [
        [
            s.backend,
            s.group,
            str(s.runs),
            s.statuses,
            fmt(s.wall_time, "s"),
            fmt(s.x_floor, "x"),
            fmt(s.build_time, "s"),
            fmt(s.solve_time, "s"),
            fmt(s.peak_mib, ".0f") if math.isnan(s.peak_mib) else f"{s.peak_mib:.0f}",
            fmt(s.objective),
            "none" if s.gap == math.inf else fmt(s.gap, "%"),
            fmt(s.gap_to_best, "%"),
            fmt(s.load_cv, "g"),
            fmt(s.load_max_over_mean, "g"),
            fmt(s.under_load_min, "g"),
            s.verified,
        ]
        for s in summaries
    ]
    return (markdown_table if markdown else text_table)(HEADERS, cells)
