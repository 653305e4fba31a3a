"""Result folders: what a sweep writes, and ``meta.json``, which says what is there.

Every result folder holds ``meta.json`` with ``kind`` (``solvers`` or ``fl``), the
command, the environment and library versions, the summary table file and the figures;
:mod:`flexmoe.benchmarks.report` renders folders from it.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexmoe.benchmarks.environment import environment, spec_modules, versions
from flexmoe.benchmarks.fl import FlGrid, FlRun, FlSummary, fl_table, summarise_fl
from flexmoe.benchmarks.plots import fl_figures, solver_figures
from flexmoe.benchmarks.records import SolverRun, write_csv, write_jsonl
from flexmoe.benchmarks.solvers import SolverGrid
from flexmoe.benchmarks.summary import SolverSummary, summarise, summary_table

__all__ = [
    "META",
    "FlResults",
    "SolverResults",
    "read_meta",
    "write_fl_results",
    "write_meta",
    "write_solver_results",
]

META = "meta.json"


@dataclass(frozen=True)
class SolverResults:
    """The files of a finished solver sweep."""

    out: Path
    rows: list[SolverRun]
    summaries: list[SolverSummary]
    figures: list[Path]

    @property
    def rejected(self) -> list[SolverRun]:
        """Runs whose answer failed verification: these make the exit status non-zero."""
        return [row for row in self.rows if row.rejected or row.verified is False]

    @property
    def crashed(self) -> list[SolverRun]:
        return [row for row in self.rows if row.status == "crash"]


def write_solver_results(
    out: Path, grid: SolverGrid, rows: list[SolverRun], command: str, started: str
) -> SolverResults:
    """Write rows (JSONL, CSV), medians (CSV, Markdown), figures and ``meta.json``."""
    summaries = summarise(rows)
    _write_tables(out, rows, summaries, summary_table(summaries, markdown=True))
    figures = solver_figures(summaries, out)
    modules = sorted({m for spec in grid.backends for m in spec_modules(spec)})
    grid_dict = {k: _plain(v) for k, v in asdict(grid).items()}
    results = SolverResults(out, rows, summaries, figures)
    write_meta(
        out,
        kind="solvers",
        command=command,
        started=started,
        settings=grid_dict,
        versions=versions(modules),
        figures=figures,
        counts={"runs": len(rows), "rejected": len(results.rejected)},
    )
    return results


@dataclass(frozen=True)
class FlResults:
    """The files of a finished federated sweep."""

    out: Path
    rows: list[FlRun]
    summaries: list[FlSummary]
    figures: list[Path]


def write_fl_results(
    out: Path, grid: FlGrid, rows: list[FlRun], command: str, started: str
) -> FlResults:
    """Write rows (JSONL, CSV), mean ± std (CSV, Markdown), figures and ``meta.json``."""
    summaries = summarise_fl(rows)
    _write_tables(out, rows, summaries, fl_table(summaries, markdown=True))
    histories: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.error:
            continue
        history = json.loads((out / row.history).read_text())
        histories.setdefault(f"{row.method}@{row.partition}", []).append(history)
    figures = fl_figures(histories, out)
    write_meta(
        out,
        kind="fl",
        command=command,
        started=started,
        settings={k: _plain(v) for k, v in asdict(grid).items()},
        versions=versions(["torch"]),
        figures=figures,
        counts={"runs": len(rows), "failed": sum(1 for row in rows if row.error)},
    )
    return FlResults(out, rows, summaries, figures)


def _write_tables(out: Path, rows: list[Any], summaries: list[Any], markdown: str) -> None:
    """Rows as ``runs.jsonl`` and ``runs.csv``, summaries as ``summary.csv``, and the
    summary's Markdown table as ``summary.md``."""
    write_jsonl(out / "runs.jsonl", [row.to_dict() for row in rows])
    write_csv(out / "runs.csv", [row.to_dict() for row in rows])
    write_csv(out / "summary.csv", [s.to_dict() for s in summaries])
    (out / "summary.md").write_text(markdown + "\n")


def now() -> str:
    """The current local time, ISO 8601 to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def write_meta(
    out: Path,
    *,
    kind: str,
    command: str,
    started: str,
    settings: dict[str, Any],
    versions: dict[str, str],
    figures: list[Path],
    counts: dict[str, int],
) -> Path:
    """``meta.json`` of a result folder (figure paths relative to it)."""
    meta = {
        "kind": kind,
        "command": command,
        "started": started,
        "finished": now(),
        "settings": settings,
        "environment": environment(),
        "versions": versions,
        "summary": "summary.md",
        "figures": [str(f.relative_to(out)) for f in figures],
        "counts": counts,
    }
    path = out / META
    path.write_text(json.dumps(meta, indent=1) + "\n")
    return path


def read_meta(folder: Path) -> dict[str, Any]:
    """The ``meta.json`` of a result folder; a clear error when it is not one."""
    path = folder / META
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a flexmoe-bench result folder (no {META})")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _plain(value: Any) -> Any:
    """JSON-ready settings: paths as strings, sizes as ``NxExK``."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict) and set(value) == {"n_clients", "n_experts", "k"}:
        return f"{value['n_clients']}x{value['n_experts']}x{value['k']}"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
