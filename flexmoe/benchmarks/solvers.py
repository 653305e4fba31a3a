"""``flexmoe-bench solvers``: every backend on every instance, each in its own process.

Instances are generated (or read) in the parent and saved as ``.npz`` under
``OUT/instances``, outside any timed region; each (backend, instance) pair then runs in
a child process under a time and a memory limit (:mod:`flexmoe.benchmarks.sandbox`).
A backend that declines an instance is recorded as ``unsupported``; one that hangs as
``timeout``; one that exhausts memory as ``memory``; an ``--instances`` file that is not
a readable problem is listed as skipped with its fault; none of these stops the sweep.
Every finished row goes to the journal ``runs.jsonl`` at once: an interrupted sweep
keeps them, and ``--resume`` runs only the rest.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flexmoe.assign import AssignmentProblem, get_backend, load_problem, save_problem
from flexmoe.benchmarks.environment import spec_modules, versions
from flexmoe.benchmarks.floor import topk_floor
from flexmoe.benchmarks.options import Size
from flexmoe.benchmarks.records import WITH_SOLUTION, Outcome, SolverRun, in_order, keep_row
from flexmoe.benchmarks.sandbox import DEFAULT_STARTUP, Limits, SolverJob, run_isolated

__all__ = [
    "Instance",
    "Skipped",
    "SolverGrid",
    "assign_gaps",
    "prepare_instances",
    "run_grid",
]

logger = logging.getLogger(__name__)

#: ``generator`` of instances read with ``--instances``.
FROM_FILE = "file"


@dataclass(frozen=True)
class SolverGrid:
    """The sweep ``flexmoe-bench solvers`` runs.

    Attributes
    ----------
    backends : tuple of str
        Backend specs (``"flow"``, ``"greedy:topk"``, ...).
    sizes : tuple of Size
        Instance sizes to generate (ignored with `instances_dir`).
    generator : str
        An instance kind of :mod:`flexmoe.assign.instances`.
    seeds : tuple of int
        One instance per (size, seed); the seed is also passed to the backend.
    time_limit, memory_limit_gib : float, optional
        Per run.
    grace : float, optional
        Seconds past the time limit before the kill (see :class:`Limits`).
    startup : float
        Seconds a run's child may take to import the plugins and the backend's
        libraries and load the problem; plugins are first tried under it too.
    instances_dir : Path, optional
        Run on the ``.npz`` problems found there instead of generating.
    plugins : tuple of str
        Modules or ``.py`` files imported in every process (user backends).
    """

    backends: tuple[str, ...]
    sizes: tuple[Size, ...] = ()
    generator: str = "clustered"
    seeds: tuple[int, ...] = (0,)
    time_limit: float | None = 30.0
    memory_limit_gib: float | None = None
    grace: float | None = None
    startup: float = DEFAULT_STARTUP
    instances_dir: Path | None = None
    plugins: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Instance:
    """A saved problem of the sweep."""

    name: str
    path: Path
    generator: str
    seed: int | None
    problem: AssignmentProblem

    @property
    def k(self) -> int:
        return int(self.problem.max_experts.max())


@dataclass(frozen=True)
class Skipped:
    """An ``--instances`` file the sweep could not read: it is listed, not run."""

    file: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "error": self.error}


def prepare_instances(grid: SolverGrid, out: Path) -> tuple[list[Instance], list[Skipped]]:
    """Generate (or read) every instance and save it under ``out/instances``.

    A file of `grid.instances_dir` that cannot be read as a problem is skipped and
    listed with its fault; the others are run.
    """
    folder = out / "instances"
    folder.mkdir(parents=True, exist_ok=True)
    if grid.instances_dir is not None:
        instances, skipped = [], []
        for path in sorted(grid.instances_dir.glob("*.npz")):
            try:
                instances.append(_copy_instance(path, folder))
            except Exception as err:  # whatever load_problem raises on a bad file
                skipped.append(Skipped(str(path), f"{type(err).__name__}: {err}"))
        return instances, skipped
    from flexmoe.assign.instances import generate

    instances = []
    for size in grid.sizes:
        for seed in grid.seeds:
            name = f"{grid.generator}-{size}-s{seed}"
            problem = generate(grid.generator, size.n_clients, size.n_experts, size.k, seed=seed)
            problem = problem.replace(name=name)
            path = save_problem(folder / f"{name}.npz", problem)
            instances.append(Instance(name, path, grid.generator, seed, problem))
    return instances, []


def _copy_instance(source: Path, folder: Path) -> Instance:
    problem = load_problem(source)
    name = problem.name or source.stem
    path = save_problem(folder / f"{source.stem}.npz", problem.replace(name=name))
    return Instance(name, path, FROM_FILE, None, problem)


def run_grid(
    grid: SolverGrid,
    instances: list[Instance],
    out: Path,
    rows: list[SolverRun],
    *,
    progress: bool = True,
    on_row: Callable[[SolverRun], None] | None = None,
) -> list[SolverRun]:
    """Run every backend on every instance that has no row in `rows` yet.

    Each finished row is added to `rows` and to the journal ``out/runs.jsonl`` at once,
    so that what finished survives an interruption (the caller catches it and writes
    the tables of `rows`). The top-k floor of an instance is measured here, in this
    process, just before its first run, while no child runs. Returns `rows` in grid
    order, with gaps to the best objective.
    """
    from tqdm import tqdm

    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    done = {row.key for row in rows}
    pairs = [(i, s) for i, s in _pairs(grid, instances) if (s, i.name) not in done]
    floors: dict[str, float] = {}
    bar = tqdm(pairs, desc="solvers", unit="run", file=sys.stderr, disable=not progress,
               initial=len(done), total=len(done) + len(pairs))  # fmt: skip
    try:
        for instance, spec in bar:
            bar.set_postfix_str(f"{spec} on {instance.name}", refresh=False)
            if instance.name not in floors:
                floors[instance.name] = topk_floor(instance.problem)
            row = run_one(grid, instance, spec, out, floor=floors[instance.name])
            keep_row(rows, row, out)
            if on_row is not None:
                on_row(row)
    finally:
        bar.close()
    in_order(rows, [(s, i.name) for i, s in _pairs(grid, instances)])
    assign_gaps(rows)
    return rows


def _pairs(grid: SolverGrid, instances: list[Instance]) -> list[tuple[Instance, str]]:
    """(instance, backend spec) in sweep order: every backend on one instance, then the
    next instance."""
    return [(instance, spec) for instance in instances for spec in grid.backends]


def run_one(
    grid: SolverGrid, instance: Instance, spec: str, out: Path, *, floor: float = math.nan
) -> SolverRun:
    """One backend on one instance: declined up front, or solved in a child process.

    `floor` is the instance's top-k pass in seconds; the row reports its time as a
    multiple of it.
    """
    row = _blank_row(grid, instance, spec)
    row.floor_time = floor
    backend = get_backend(spec.partition(":")[0])
    if not backend.available:
        row.status = Outcome.UNAVAILABLE
        row.message = f"needs {', '.join(backend.missing_modules)}"
        return row
    reason = backend.why_unsupported(instance.problem)
    if reason is not None:
        row.status, row.message = Outcome.UNSUPPORTED, reason
        return row
    stem = f"{instance.name}--{spec.replace(':', '-')}"
    job = SolverJob(
        problem=str(instance.path),
        backend=spec,
        result=str(out / "answers" / f"{stem}.json"),
        time_limit=grid.time_limit,
        seed=instance.seed,
        memory_limit_gib=grid.memory_limit_gib,
        plugins=grid.plugins,
    )
    log = out / "logs" / f"{stem}.log"
    outcome = run_isolated(job, Limits(grid.time_limit, grid.grace, grid.startup), log)
    row.log = str(log.relative_to(out))
    row.peak_mib, row.process_time = outcome.peak_mib, outcome.elapsed
    if outcome.answer is None:
        row.status, row.message = str(outcome.status), outcome.message
        return row
    row.update(outcome.answer)
    if floor > 0 and math.isfinite(row.wall_time):
        row.x_floor = row.wall_time / floor
    return row


def _blank_row(grid: SolverGrid, instance: Instance, spec: str) -> SolverRun:
    n, e = instance.problem.shape
    name, _, variant = spec.partition(":")
    backend = get_backend(name)
    options: dict[str, object] = {"time_limit": grid.time_limit, "seed": instance.seed}
    if backend.variant_option is not None:
        options[backend.variant_option] = variant or backend.variants[0]
    return SolverRun(
        backend=spec,
        instance=instance.name,
        generator=instance.generator,
        n_clients=n,
        n_experts=e,
        k=instance.k,
        seed=instance.seed,
        status="",
        time_limit=grid.time_limit,
        memory_limit_gib=grid.memory_limit_gib,
        options=options,
        versions=versions(spec_modules(spec)),
    )


def assign_gaps(rows: Iterable[SolverRun]) -> None:
    """Set `best_objective` and `gap_to_best` of every row, per instance.

    The best known objective of an instance is the largest verified objective of an
    answer that satisfies every constraint, over all backends of the sweep.
    """
    rows = list(rows)
    best: dict[str, float] = {}
    for row in rows:
        if row.has_solution and math.isfinite(row.objective):
            best[row.instance] = max(best.get(row.instance, -math.inf), row.objective)
    for row in rows:
        if row.instance not in best:
            continue
        row.best_objective = best[row.instance]
        if row.status in WITH_SOLUTION and math.isfinite(row.objective):
            scale = max(abs(row.best_objective), 1e-12)
            row.gap_to_best = (row.best_objective - row.objective) / scale
