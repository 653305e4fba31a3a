"""Child process of ``flexmoe-bench solvers``: solve one job, write one JSON answer.

Run as ``python -m flexmoe.benchmarks.child JOB.json READY_FD`` by
:func:`flexmoe.benchmarks.sandbox.run_isolated`; not meant to be run by hand.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from flexmoe.assign import (
    Assignment,
    AssignmentProblem,
    LoadStats,
    Status,
    UnsupportedProblemError,
    get_backend,
    load_problem,
    registered_backends,
    solve,
    verify,
)
from flexmoe.benchmarks.environment import load_plugin, spec_modules
from flexmoe.benchmarks.processes import become_subreaper, die_with_parent
from flexmoe.benchmarks.records import Outcome
from flexmoe.benchmarks.sandbox import SolverJob

__all__ = ["describe", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``JOB.json READY_FD``."""
    job_path, ready_fd = argv if argv is not None else sys.argv[1:]
    die_with_parent()
    become_subreaper()  # what a solver starts stays in this process's tree
    job = SolverJob.from_json(Path(job_path).read_text())
    _limit_memory(job.memory_limit_gib)
    try:
        answer = _run(job, int(ready_fd)) if job.backend else _import_plugins(job)
    except MemoryError:
        answer = {"status": str(Outcome.MEMORY), "message": "MemoryError"}
    except Exception as err:
        where = traceback.extract_tb(err.__traceback__)[-1]
        message = f"{type(err).__name__}: {err} (at {Path(where.filename).name}:{where.lineno})"
        answer = {"status": str(Outcome.CRASH), "message": message}
        traceback.print_exc()
    tmp = Path(job.result + ".tmp")
    tmp.write_text(json.dumps(answer))
    tmp.replace(job.result)
    return 0


def _limit_memory(gib: float | None) -> None:
    if gib is None:
        return
    limit = int(gib * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _import_plugins(job: SolverJob) -> dict[str, Any]:
    """Import the plugins only: the backends they register, or the error they raise."""
    before = set(registered_backends())
    for plugin in job.plugins:
        load_plugin(plugin)
    added = [name for name in registered_backends() if name not in before]
    return {"status": "imported", "backends": added}


def _run(job: SolverJob, ready_fd: int) -> dict[str, Any]:
    """Load and import outside the timed region, signal ready, solve, describe."""
    for plugin in job.plugins:
        load_plugin(plugin)
    problem = load_problem(job.problem)
    get_backend(job.backend.partition(":")[0])  # registered (plugins loaded)?
    start = time.perf_counter()
    for module in spec_modules(job.backend):
        importlib.import_module(module)
    import_time = time.perf_counter() - start
    os.write(ready_fd, b"ready")
    try:
        result = solve(
            problem, job.backend, time_limit=job.time_limit, seed=job.seed, **job.options
        )
    except UnsupportedProblemError as err:
        return {"status": str(Outcome.UNSUPPORTED), "message": str(err)}
    answer = describe(problem, result)
    answer["import_time"] = import_time
    return answer


def describe(problem: AssignmentProblem, result: Assignment) -> dict[str, Any]:
    """Status, objective, times, load statistics and an independent verification.

    The verifier re-checks every constraint and the claimed objective and bound. A
    ``relaxed`` answer breaks constraints by design: for it only the claimed objective
    is checked, and the constraints it breaks are listed in ``violations``.
    """
    answer: dict[str, Any] = {
        "status": str(result.status),
        "message": result.message,
        "objective": _finite(result.objective),
        "bound": _finite(result.bound),
        "gap": _finite(result.gap),
        "build_time": result.build_time,
        "solve_time": result.solve_time,
        "wall_time": result.wall_time,
    }
    if result.x is None:
        return answer
    relaxed = result.status is Status.RELAXED
    verdict = verify(
        problem, result.x, objective=result.objective, bound=None if relaxed else result.bound
    )
    claims = [v for v in verdict.violations if v.startswith(("objective", "bound"))]
    stats = LoadStats.of(verdict.loads)
    slack = 1e-9 * max(1.0, float(problem.load_min.max()))
    answer.update(
        verified=not claims if relaxed else verdict.ok,
        violations=verdict.reason,
        load_cv=_finite(stats.cv),
        load_max_over_mean=_finite(stats.max_over_mean),
        under_load_min=int((verdict.loads < problem.load_min - slack).sum()),
    )
    return answer


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


if __name__ == "__main__":
    code = main()
    # The answer is written: end now. A solve abandoned at its time limit may still run
    # in a worker thread that the interpreter would otherwise join at exit (for up to a
    # minute), past the sandbox's kill, which would discard the answer; the sandbox kills
    # whatever the solver started once this process is gone.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
