"""``flexmoe-bench fl``: federated methods × partitions × seeds, in parallel processes.

Each run is :func:`flexmoe.fedloop.run` on one :class:`~flexmoe.fedloop.FedConfig`, in a
worker process of a spawn pool (:class:`~flexmoe.benchmarks.workers.WorkerPool`: one
torch thread each, up to the core count); its :class:`~flexmoe.fedloop.History` is saved
as ``runs/<method>-<partition>-s<seed>.json`` and its row goes to the journal
``runs.jsonl`` as soon as it finishes.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from flexmoe.benchmarks.records import in_order, keep_row

__all__ = ["FlGrid", "FlRun", "FlSummary", "fl_jobs", "run_fl_grid", "summarise_fl"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlGrid:
    """The federated sweep.

    Attributes
    ----------
    methods, partitions : tuple of str
        :data:`flexmoe.fedloop.METHODS` and partition specs (``iid``, ``dirichlet:0.3``,
        ``shards:2``).
    seeds : tuple of int
    base : dict
        The other :class:`~flexmoe.fedloop.FedConfig` fields (dataset, clients, ...).
    target : float
        Personalised accuracy whose first reaching is reported as rounds-to-target.
    jobs : int
        Worker processes.
    plugins : tuple of str
        Imported in every worker (user backends for ``flex``).
    """

    methods: tuple[str, ...]
    partitions: tuple[str, ...]
    seeds: tuple[int, ...]
    base: dict[str, Any] = field(default_factory=dict)
    target: float = 0.8
    jobs: int = 1
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlJob:
    """One federated run: a full FedConfig as a dict, and where its history goes."""

    name: str
    config: dict[str, Any]
    history: str
    plugins: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, int]:
        """(method, partition, seed): what a resumed sweep skips when it has a row."""
        return self.config["method"], self.config["partition"], int(self.config["seed"])


@dataclass
class FlRun:
    """Headline figures of one federated run."""

    method: str
    partition: str
    seed: int
    rounds: int
    personalized_acc: float
    global_acc: float
    load_cv: float
    """Mean over rounds of the coefficient of variation of holders per expert."""
    routed_cv: float
    """Mean over rounds of the CV of samples routed to each expert."""
    rounds_to_target: int | None
    """First round (1-based) whose personalised accuracy reaches the target."""
    bytes_moved: int
    """Bytes sent to and received from clients, all rounds."""
    assign_time: float
    """Mean seconds per round spent solving the assignment."""
    wall_time: float
    history: str
    """The saved history, relative to the result folder."""
    error: str = ""
    """Why the run failed (empty when it did not)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlRun:
        """A row from :meth:`to_dict` output (a JSON line: NaN may come as a string)."""
        names = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {
            k: float(v) if names[k] == "float" else v for k, v in data.items() if k in names
        }
        return cls(**values)

    @property
    def key(self) -> tuple[str, str, int]:
        """(method, partition, seed), as :attr:`FlJob.key`."""
        return self.method, self.partition, self.seed


def fl_jobs(grid: FlGrid, out: Path) -> list[FlJob]:
    """One job per (method, partition, seed), in that order."""
    jobs = []
    for partition in grid.partitions:
        for method in grid.methods:
            for seed in grid.seeds:
                name = f"{method}-{partition.replace(':', '')}-s{seed}"
                config = {**grid.base, "method": method, "partition": partition, "seed": seed}
                history = str(out / "runs" / f"{name}.json")
                jobs.append(FlJob(name, config, history, grid.plugins))
    return jobs


def run_fl_grid(
    grid: FlGrid,
    out: Path,
    rows: list[FlRun] | None = None,
    *,
    progress: bool = True,
    on_done: Callable[[FlRun], None] | None = None,
) -> list[FlRun]:
    """Run every job that has no row in `rows` yet, `grid.jobs` at a time.

    Each finished run is added to `rows` and to the journal ``out/runs.jsonl`` (and
    passed to `on_done`) at once, so that what finished survives an interruption: on
    :class:`~flexmoe.benchmarks.processes.Interrupted` the workers are killed and the
    exception goes on to the caller, which writes the tables of `rows`. Returns `rows`
    in job order.
    """
    from tqdm import tqdm

    from flexmoe.benchmarks.workers import WorkerPool

    rows = [] if rows is None else rows
    (out / "runs").mkdir(parents=True, exist_ok=True)
    every = fl_jobs(grid, out)
    done = {row.key for row in rows}
    jobs = [job for job in every if job.key not in done]
    rounds = int(grid.base.get("rounds", 30))
    bar = tqdm(total=len(every) * rounds, initial=len(done) * rounds, desc="fl", unit="round",
               file=sys.stderr, disable=not progress)  # fmt: skip
    try:
        with WorkerPool(min(grid.jobs, len(jobs)), run_fl_work) as pool:
            for kind, value in pool.run([(job, grid.target) for job in jobs]):
                if kind == "tick":
                    bar.update(value)
                    continue
                (job, _), result = value
                row = result if kind == "done" else failed_row(job.config, str(result))
                keep_row(rows, row, out)
                if on_done is not None:
                    on_done(row)
    finally:
        bar.close()
    in_order(rows, [job.key for job in every])
    return rows


def run_fl_work(task: tuple[FlJob, float], tick: Callable[[int], None]) -> FlRun:
    """A worker's job: :func:`run_fl_job` with progress ticks to the parent."""
    job, target = task
    return run_fl_job(job, target, tick)


def run_fl_job(job: FlJob, target: float, tick: Callable[[int], None] | None = None) -> FlRun:
    """One federated run with one torch thread; saves its history.

    `tick(1)` is called after every round (the progress bar of the parent).
    """
    import time

    import torch

    from flexmoe.benchmarks.environment import load_plugin
    from flexmoe.fedloop import FedConfig, run

    torch.set_num_threads(1)
    for plugin in job.plugins:
        load_plugin(plugin)
    hooks = [] if tick is None else [lambda rnd, state, history: tick(1)]
    start = time.perf_counter()
    try:
        history = run(FedConfig.from_dict(job.config), hooks=hooks)
    except Exception as err:
        logger.exception("federated run %s failed", job.name)
        return failed_row(job.config, f"{type(err).__name__}: {err}")
    wall = time.perf_counter() - start
    history.save(job.history)
    return fl_row(history.to_dict(), target, wall, f"runs/{Path(job.history).name}")


def failed_row(config: dict[str, Any], error: str) -> FlRun:
    """The row of a run that raised: NaN figures and the error."""
    nan = math.nan
    return FlRun(
        config["method"], config["partition"], int(config["seed"]), 0, nan, nan, nan, nan,
        None, 0, nan, nan, "", error=error,
    )  # fmt: skip


def fl_row(history: dict[str, Any], target: float, wall: float, path: str) -> FlRun:
    """Headline figures of a saved history (``History.to_dict()``)."""
    config, rounds = history["config"], history["rounds"]
    accuracy = [r.get("personalized_acc") for r in rounds]
    reached = [i + 1 for i, a in enumerate(accuracy) if a is not None and a >= target]
    last = rounds[-1] if rounds else {}
    return FlRun(
        method=config["method"],
        partition=config["partition"],
        seed=int(config["seed"]),
        rounds=len(rounds),
        personalized_acc=_float(last.get("personalized_acc")),
        global_acc=_float(last.get("global_acc")),
        load_cv=_mean([r["holders"]["cv"] for r in rounds]),
        routed_cv=_mean([r["routed"]["cv"] for r in rounds]),
        rounds_to_target=reached[0] if reached else None,
        bytes_moved=int(sum(sum(r["bytes_down"]) + sum(r["bytes_up"]) for r in rounds)),
        assign_time=_mean([r["time"]["assign"] for r in rounds]),
        wall_time=wall,
        history=path,
    )


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _mean(values: list[Any]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.fmean(finite) if finite else math.nan


@dataclass(frozen=True)
class FlSummary:
    """Mean ± standard deviation over seeds of one (method, partition)."""

    method: str
    partition: str
    runs: int
    personalized_acc: float
    personalized_std: float
    global_acc: float
    global_std: float
    load_cv: float
    routed_cv: float
    rounds_to_target: str
    """Median over the seeds that reached it, with how many did: ``"12 (2/3)"``."""
    bytes_moved: float
    assign_time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_fl(rows: list[FlRun]) -> list[FlSummary]:
    """One summary per (method, partition), in the order first seen; failed runs are
    left out."""
    groups: dict[tuple[str, str], list[FlRun]] = {}
    for row in rows:
        if row.error:
            continue
        groups.setdefault((row.method, row.partition), []).append(row)
    return [_fl_summary(m, p, members) for (m, p), members in groups.items()]


def _fl_summary(method: str, partition: str, rows: list[FlRun]) -> FlSummary:
    reached = [r.rounds_to_target for r in rows if r.rounds_to_target is not None]
    to_target = "never" if not reached else f"{statistics.median(reached):g}"
    if reached and len(reached) < len(rows):
        to_target += f" ({len(reached)}/{len(rows)})"
    return FlSummary(
        method=method,
        partition=partition,
        runs=len(rows),
        personalized_acc=_mean([r.personalized_acc for r in rows]),
        personalized_std=_std([r.personalized_acc for r in rows]),
        global_acc=_mean([r.global_acc for r in rows]),
        global_std=_std([r.global_acc for r in rows]),
        load_cv=_mean([r.load_cv for r in rows]),
        routed_cv=_mean([r.routed_cv for r in rows]),
        rounds_to_target=to_target,
        bytes_moved=_mean([r.bytes_moved for r in rows]),
        assign_time=_mean([r.assign_time for r in rows]),
    )


def _std(values: list[float]) -> float:
    """Sample standard deviation; NaN with fewer than two values (no spread to show)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.stdev(finite) if len(finite) > 1 else math.nan


def default_jobs(n_runs: int) -> int:
    """Worker processes: one per core, at most one per run."""
    return max(1, min(os.cpu_count() or 1, n_runs))


FL_HEADERS = (
    "method",
    "partition",
    "runs",
    "personalised acc",
    "global acc",
    "load CV",
    "routed CV",
    "rounds to target",
    "MB moved",
    "assign s/round",
)


def fl_table(summaries: list[FlSummary], *, markdown: bool = False) -> str:
    """Mean ± std over seeds as a terminal (or Markdown) table; one seed shows no ±."""
    from flexmoe.benchmarks.tables import fmt, markdown_table, mean_pm, text_table

    cells = [
        [
            s.method,
            s.partition,
            str(s.runs),
            mean_pm(s.personalized_acc, s.personalized_std),
            mean_pm(s.global_acc, s.global_std),
            fmt(s.load_cv),
            fmt(s.routed_cv),
            s.rounds_to_target,
            fmt(s.bytes_moved / 1e6),
            fmt(s.assign_time, "s"),
        ]
        for s in summaries
    ]
    return (markdown_table if markdown else text_table)(FL_HEADERS, cells)
