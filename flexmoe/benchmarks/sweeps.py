"""The two sweeps, start to end: claim the folder, run, keep what finished.

:func:`solver_sweep` and :func:`fl_sweep` write ``meta.json`` when they start, journal
every finished run, and write the tables and figures when they end. On
:class:`~flexmoe.benchmarks.processes.Interrupted` (SIGINT, SIGTERM) their runs' processes
are already ended (the sandbox and the worker pool see to it); the sweep writes the
tables of what finished, records the state ``interrupted`` and lets the exception go on
with a line saying what was kept. ``--resume`` skips every run that has a row.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flexmoe.benchmarks.fl import FlGrid, FlRun, fl_jobs, run_fl_grid
from flexmoe.benchmarks.processes import Interrupted
from flexmoe.benchmarks.records import JOURNAL, SolverRun, write_jsonl
from flexmoe.benchmarks.results import (
    FlResults,
    SolverResults,
    State,
    claim_out,
    grid_versions,
    read_journal,
    settings_of,
    write_fl_results,
    write_meta,
    write_solver_results,
)
from flexmoe.benchmarks.solvers import (
    Skipped,
    SolverGrid,
    assign_gaps,
    prepare_instances,
    run_grid,
)

__all__ = ["fl_sweep", "solver_sweep"]

Row = TypeVar("Row", SolverRun, FlRun)


def solver_sweep(
    grid: SolverGrid,
    out: Path,
    command: str,
    started: str,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    on_row: Callable[[SolverRun], None] | None = None,
    prepare: Callable[[Path], None] | None = None,
) -> SolverResults:
    """Generate (or read) the instances, run the grid, write every output file.

    `resume` and `overwrite` say what to do with a non-empty `out`
    (:func:`~flexmoe.benchmarks.results.claim_out`); `prepare(out)` runs once the
    folder is claimed, before any run (to write the resolved configuration there).
    """
    rows = _claim(out, "solvers", grid, command, started, SolverRun.from_dict, resume, overwrite)
    if prepare is not None:
        prepare(out)
    skipped: list[Skipped] = []
    total: int | str = "?"
    try:
        instances, skipped = prepare_instances(grid, out)
        total = len(instances) * len(grid.backends)
        names = {instance.name for instance in instances}
        rows[:] = [r for r in rows if r.instance in names and r.backend in grid.backends]
        write_jsonl(out / JOURNAL, [row.to_dict() for row in rows])
        run_grid(grid, instances, out, rows, progress=progress, on_row=on_row)
        return write_solver_results(out, grid, rows, command, started, skipped=skipped)
    except Interrupted as stop:
        assign_gaps(rows)
        write_solver_results(out, grid, rows, command, started, skipped=skipped,
                             state=State.INTERRUPTED)  # fmt: skip
        stop.detail = f"{len(rows)} of {total} runs finished, kept in {out}"
        raise


def fl_sweep(
    grid: FlGrid,
    out: Path,
    command: str,
    started: str,
    *,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    prepare: Callable[[Path], None] | None = None,
) -> FlResults:
    """Run every (method, partition, seed) of `grid`, write every output file.

    `resume`, `overwrite` and `prepare` as :func:`solver_sweep`.
    """
    rows = _claim(out, "fl", grid, command, started, FlRun.from_dict, resume, overwrite)
    if prepare is not None:
        prepare(out)
    keys = {job.key for job in fl_jobs(grid, out)}
    rows[:] = [row for row in rows if row.key in keys and _kept_run(out, row)]
    write_jsonl(out / JOURNAL, [row.to_dict() for row in rows])
    try:
        run_fl_grid(grid, out, rows, progress=progress)
        return write_fl_results(out, grid, rows, command, started)
    except Interrupted as stop:
        write_fl_results(out, grid, rows, command, started, state=State.INTERRUPTED)
        stop.detail = f"{len(rows)} of {len(keys)} runs finished, kept in {out}"
        raise


def _kept_run(out: Path, row: FlRun) -> bool:
    """A finished run: failed, or its history is there."""
    return bool(row.error) or (out / row.history).is_file()


def _claim(
    out: Path,
    kind: str,
    grid: SolverGrid | FlGrid,
    command: str,
    started: str,
    parse: Callable[[dict[str, Any]], Row],
    resume: bool,
    overwrite: bool,
) -> list[Row]:
    """Claim `out`, write ``meta.json`` first (the folder is a result folder from now
    on, even if the sweep is killed) and return the rows a resumed sweep keeps."""
    settings = settings_of(grid)
    resuming = claim_out(out, kind, settings, resume=resume, overwrite=overwrite)
    kept = [parse(data) for data in read_journal(out)] if resuming else []
    write_meta(out, kind=kind, command=command, started=started, settings=settings,
               versions=grid_versions(grid), figures=[], counts={},
               state=State.RUNNING)  # fmt: skip
    return kept
