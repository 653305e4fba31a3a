"""``flexmoe-bench report`` and ``flexmoe-bench demo`` (what ``make run`` runs)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flexmoe.benchmarks.options import Size, UsageError
from flexmoe.extras import require_extra

__all__ = ["DemoConfig", "add_demo_parser", "add_parser", "run_demo", "run_report"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "report",
        allow_abbrev=False,
        help="a Markdown report from result folders",
        description="Render tables and figure links of result folders into one Markdown file.",
    )
    p.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="result folder(s)")
    p.add_argument("-o", "--output", type=Path, default=Path("report.md"), help="(report.md)")
    p.set_defaults(run=run_report, extras=())


def run_report(args: argparse.Namespace, command: str) -> int:
    from flexmoe.benchmarks.report import write_report

    for folder in args.folders:
        if not (folder / "meta.json").is_file():
            raise UsageError("DIR", f"{str(folder)!r} is not a flexmoe-bench result folder "
                             "(no meta.json)")  # fmt: skip
    path = write_report(args.folders, args.output)
    print(f"report → {path}")
    return 0


@dataclass(frozen=True)
class DemoConfig:
    """What ``flexmoe-bench demo`` runs: a small solver comparison and a small
    federated comparison, sized for about three minutes on two cores."""

    sizes: tuple[Size, ...] = (Size(100, 16, 4), Size(1000, 64, 8))
    generator: str = "clustered"
    seeds: tuple[int, ...] = (0,)
    time_limit: float = 20.0
    methods: tuple[str, ...] = ("flex", "greedy", "random")
    partition: str = "dirichlet:0.3"
    dataset: str = "digits"
    clients: int = 10
    experts: int = 8
    capacity: str = "2"
    rounds: int = 12
    target: float = 0.5


def add_demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from flexmoe.benchmarks.cli import add_common

    p = commands.add_parser(
        "demo",
        allow_abbrev=False,
        help="the `make run` job: solvers at 1,000 × 64 and a federated run on digits",
        description="Compare every available backend on clustered 100×16 and 1,000×64 "
        "instances, then flex / greedy / random on a federated digits task; write tables, "
        "plots and report.md under --out (the sweeps in OUT/solvers and OUT/fl).",
    )
    p.add_argument("--skip-fl", action="store_true", help="only the solver comparison")
    add_common(p, default_out="results")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace, command: str) -> int:
    from flexmoe.benchmarks.cli import load_plugins
    from flexmoe.benchmarks.report import write_report

    load_plugins(args.plugin)
    if not args.skip_fl:
        require_extra("fl", part="its federated part (--skip-fl skips it)")
    demo = DemoConfig()
    start = time.perf_counter()
    status = _demo_solvers(demo, args, command)
    folders = [args.out / "solvers"]
    if not args.skip_fl:
        status = max(status, _demo_fl(demo, args, command))
        folders.append(args.out / "fl")
    report = write_report(folders, args.out / "report.md")
    print(f"\nreport → {report}  ({time.perf_counter() - start:.0f} s in all)")
    return status


def _demo_solvers(demo: DemoConfig, args: argparse.Namespace, command: str) -> int:
    from flexmoe.benchmarks.cli import all_specs, report_sweep
    from flexmoe.benchmarks.environment import default_memory_limit
    from flexmoe.benchmarks.results import now
    from flexmoe.benchmarks.solvers import SolverGrid
    from flexmoe.benchmarks.sweeps import solver_sweep

    grid = SolverGrid(
        backends=tuple(all_specs()),
        sizes=demo.sizes,
        generator=demo.generator,
        seeds=demo.seeds,
        time_limit=demo.time_limit,
        memory_limit_gib=default_memory_limit(),
        plugins=tuple(args.plugin),
    )
    sizes = ", ".join(str(s) for s in demo.sizes)
    print(f"== Assignment backends on {demo.generator} instances {sizes} "
          f"({', '.join(grid.backends)})")  # fmt: skip
    sys.stdout.flush()
    results = solver_sweep(grid, args.out / "solvers", command, now(), progress=not args.quiet,
                           resume=args.resume, overwrite=args.overwrite)  # fmt: skip
    return report_sweep(results)


def _demo_fl(demo: DemoConfig, args: argparse.Namespace, command: str) -> int:
    from flexmoe.benchmarks.cli_fl import report_fl
    from flexmoe.benchmarks.fl import FlGrid, default_jobs
    from flexmoe.benchmarks.results import now
    from flexmoe.benchmarks.sweeps import fl_sweep

    grid = FlGrid(
        methods=demo.methods,
        partitions=(demo.partition,),
        seeds=(0,),
        base={
            "dataset": demo.dataset,
            "clients": demo.clients,
            "experts": demo.experts,
            "capacity": demo.capacity,
            "rounds": demo.rounds,
        },
        target=demo.target,
        jobs=default_jobs(len(demo.methods)),
        plugins=tuple(args.plugin),
    )
    print(
        f"\n== Federated MoE on {demo.dataset}: {demo.clients} clients, {demo.experts} "
        f"experts, {demo.capacity} per client, {demo.rounds} rounds, {demo.partition}"
    )
    sys.stdout.flush()
    results = fl_sweep(grid, args.out / "fl", command, now(), progress=not args.quiet,
                       resume=args.resume, overwrite=args.overwrite)  # fmt: skip
    return report_fl(results)
