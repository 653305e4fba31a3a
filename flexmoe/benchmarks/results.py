"""Result folders: what a sweep writes, and ``meta.json``, which says what is there.

Every result folder holds ``meta.json`` with ``kind`` (``solvers`` or ``fl``), its
``state`` (running, interrupted, finished), the command, the settings, the environment
and library versions, the summary table file, the figures and the skipped input files;
:mod:`flexmoe.benchmarks.report` renders folders from it, and ``--resume`` continues the
sweep it describes when the settings are the same.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from flexmoe.benchmarks.environment import environment, spec_modules, versions
from flexmoe.benchmarks.fl import FlGrid, FlRun, FlSummary, fl_table, summarise_fl
from flexmoe.benchmarks.options import UsageError
from flexmoe.benchmarks.plots import fl_figures, solver_figures
from flexmoe.benchmarks.records import JOURNAL, SolverRun, write_csv, write_jsonl
from flexmoe.benchmarks.solvers import Skipped, SolverGrid
from flexmoe.benchmarks.summary import SolverSummary, summarise, summary_table

__all__ = [
    "META",
    "FlResults",
    "SolverResults",
    "State",
    "claim_out",
    "grid_versions",
    "read_journal",
    "read_meta",
    "settings_of",
    "write_fl_results",
    "write_meta",
    "write_solver_results",
]

META = "meta.json"

logger = logging.getLogger(__name__)


class State(StrEnum):
    """Where the sweep of a result folder stands (``meta.json``'s ``state``)."""

    RUNNING = "running"
    """Started and not ended: still running, or killed without a chance to say so."""
    INTERRUPTED = "interrupted"
    """Stopped by SIGINT or SIGTERM; the finished runs and their tables are there."""
    FINISHED = "finished"


@dataclass(frozen=True)
class SolverResults:
    """The files of a solver sweep (finished, or interrupted: then without figures)."""

    out: Path
    rows: list[SolverRun]
    summaries: list[SolverSummary]
    figures: list[Path]
    skipped: list[Skipped] = field(default_factory=list)
    """``--instances`` files that could not be read as problems."""

    @property
    def rejected(self) -> list[SolverRun]:
        """Runs whose answer failed verification: these make the exit status non-zero."""
        return [row for row in self.rows if row.rejected or row.verified is False]

    @property
    def crashed(self) -> list[SolverRun]:
        return [row for row in self.rows if row.status == "crash"]


def settings_of(grid: SolverGrid | FlGrid) -> dict[str, Any]:
    """A grid as ``meta.json`` keeps it (what ``--resume`` compares)."""
    return {k: _plain(v) for k, v in asdict(grid).items()}


def write_solver_results(
    out: Path,
    grid: SolverGrid,
    rows: list[SolverRun],
    command: str,
    started: str,
    *,
    skipped: list[Skipped] | None = None,
    state: State = State.FINISHED,
) -> SolverResults:
    """Write rows (JSONL, CSV), medians (CSV, Markdown), figures and ``meta.json``.

    An interrupted sweep writes everything but the figures (they take seconds; the
    run that resumes it draws them).
    """
    skipped = skipped or []
    summaries = summarise(rows)
    _write_tables(out, rows, summaries, summary_table(summaries, markdown=True))
    finished = state is State.FINISHED
    figures = solver_figures(summaries, out, time_limit=grid.time_limit) if finished else []
    results = SolverResults(out, rows, summaries, figures, skipped)
    write_meta(
        out,
        kind="solvers",
        command=command,
        started=started,
        settings=settings_of(grid),
        versions=grid_versions(grid),
        figures=figures,
        counts={"runs": len(rows), "rejected": len(results.rejected)}
        | ({"skipped": len(skipped)} if skipped else {}),
        state=state,
        skipped=[s.to_dict() for s in skipped],
    )
    return results


def grid_versions(grid: SolverGrid | FlGrid) -> dict[str, str]:
    """Versions of Python, flexmoe, numpy and the libraries the sweep's runs use
    (cached: the first call scans the installed distributions)."""
    if isinstance(grid, FlGrid):
        return versions(["torch"])
    return versions(sorted({m for spec in grid.backends for m in spec_modules(spec)}))


@dataclass(frozen=True)
class FlResults:
    """The files of a federated sweep (finished, or interrupted: then without figures)."""

    out: Path
    rows: list[FlRun]
    summaries: list[FlSummary]
    figures: list[Path]


def write_fl_results(
    out: Path,
    grid: FlGrid,
    rows: list[FlRun],
    command: str,
    started: str,
    *,
    state: State = State.FINISHED,
) -> FlResults:
    """Write rows (JSONL, CSV), mean ± std (CSV, Markdown), figures and ``meta.json``."""
    summaries = summarise_fl(rows)
    _write_tables(out, rows, summaries, fl_table(summaries, markdown=True))
    figures: list[Path] = []
    if state is State.FINISHED:
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
        settings=settings_of(grid),
        versions=grid_versions(grid),
        figures=figures,
        counts={"runs": len(rows), "failed": sum(1 for row in rows if row.error)},
        state=state,
    )
    return FlResults(out, rows, summaries, figures)


def _write_tables(out: Path, rows: list[Any], summaries: list[Any], markdown: str) -> None:
    """Rows as ``runs.jsonl`` and ``runs.csv``, summaries as ``summary.csv``, and the
    summary's Markdown table as ``summary.md``."""
    write_jsonl(out / JOURNAL, [row.to_dict() for row in rows])
    write_csv(out / "runs.csv", [row.to_dict() for row in rows])
    write_csv(out / "summary.csv", [s.to_dict() for s in summaries])
    (out / "summary.md").write_text(markdown + "\n")


def read_journal(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out/runs.jsonl``; a torn last line (a kill mid-write) is left out,
    so that its run runs again."""
    path = out / JOURNAL
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}:{number}: not a JSON row: {line[:80]!r}") from None
            logger.warning("%s: the last row is incomplete; its run runs again", path)
    return rows


def claim_out(
    out: Path, kind: str, settings: dict[str, Any], *, resume: bool, overwrite: bool
) -> bool:
    """Make `out` ready for a sweep of `kind`; True when it resumes the one there.

    An empty or missing folder is used as it is. A non-empty one must be a result
    folder of the same kind, and then `overwrite` empties it (no stale answer file
    stays) while `resume` continues it — with the same settings, or it refuses.

    Raises
    ------
    UsageError
        `out` holds something and neither flag says what to do with it, or the flag
        cannot apply (not a result folder, another kind, other settings).
    """
    if resume and overwrite:
        raise UsageError("--resume", "cannot be combined with --overwrite: pick one")
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{str(out)!r} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return False
    if not (resume or overwrite):
        raise UsageError("--out", f"{str(out)!r} is not empty (an earlier sweep?); pass "
                         "--resume to continue it or --overwrite to start again")  # fmt: skip
    flag = "--resume" if resume else "--overwrite"
    meta = _meta_or_none(out)
    if meta is None or meta.get("kind") != kind:
        what = "no meta.json" if meta is None else f"it holds a `{meta.get('kind')}` sweep"
        raise UsageError(flag, f"{str(out)!r} is not a `{kind}` result folder ({what}); "
                         "nothing was changed: choose an empty --out")  # fmt: skip
    if overwrite:
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return False
    _check_same_settings(out, meta.get("settings", {}), settings)
    return True


def _check_same_settings(out: Path, before: dict[str, Any], now: dict[str, Any]) -> None:
    ignored = {"jobs"}  # how many processes run it: not what it runs
    differ = [k for k in sorted(set(before) | set(now))
              if k not in ignored and before.get(k) != now.get(k)]  # fmt: skip
    if differ:
        shown = "; ".join(f"{k}: {before.get(k)!r} there, {now.get(k)!r} now" for k in differ)
        raise UsageError("--resume", f"{str(out)!r} holds a sweep with other settings "
                         f"({shown}); repeat its command, or pass --overwrite")  # fmt: skip


def _meta_or_none(out: Path) -> dict[str, Any] | None:
    try:
        return read_meta(out)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


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
    state: State = State.FINISHED,
    skipped: list[dict[str, str]] | None = None,
) -> Path:
    """``meta.json`` of a result folder (figure paths relative to it).

    Written when a sweep starts (``state`` running), and again when it ends.
    """
    meta = {
        "kind": kind,
        "state": str(state),
        "command": command,
        "started": started,
        "finished": None if state is State.RUNNING else now(),
        "settings": settings,
        "environment": environment(),
        "versions": versions,
        "summary": "summary.md",
        "figures": [str(f.relative_to(out)) for f in figures],
        "counts": counts,
        "skipped": skipped or [],
    }
    path = out / META
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(path)
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
