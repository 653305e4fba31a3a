"""``flexmoe-bench fl``: arguments, validation and the printed summary."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

from flexmoe.benchmarks.options import UsageError, parse_int_list, parse_names, parse_positive

if TYPE_CHECKING:
    from flexmoe.benchmarks.results import FlResults

__all__ = ["add_parser", "fl_grid", "run_fl"]

#: Other spellings of partitions: the issue's ``kclass:<k>`` is the fedloop's ``shards:<k>``.
PARTITION_ALIASES = {"kclass": "shards"}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from flexmoe.benchmarks.cli import add_common

    p = commands.add_parser(
        "fl",
        allow_abbrev=False,
        help="federated methods × partitions × seeds, in parallel processes",
        description="Run the federated MoE loop for every method, partition and seed "
        "(one process per run, up to the core count); report accuracy, load balance, "
        "rounds to a target accuracy and bytes moved; plot accuracy and expert load.",
    )
    p.add_argument(
        "--methods",
        default="flex,greedy,random,full",
        help="of flex, greedy, random, round_robin, full (flex,greedy,random,full)",
    )
    p.add_argument(
        "--partitions",
        default="iid,dirichlet:0.3,kclass:2",
        help="iid, dirichlet:<alpha>, kclass:<k> (= shards:<k>)",
    )
    p.add_argument("--seeds", default="0-2", help="e.g. 0-4 or 0,3,7 (0-2)")
    p.add_argument("--dataset", default="digits", help="digits (default), mnist1d, clustered, ...")
    p.add_argument("--clients", type=int, default=20, help="(20)")
    p.add_argument("--experts", type=int, default=8, help="(8)")
    p.add_argument("--capacity", default="2", help="experts per client: 2 or tiers:2/4/8")
    p.add_argument("--rounds", type=int, default=30, help="(30)")
    p.add_argument("--backend", default="auto", help="assignment backend of flex (auto)")
    p.add_argument(
        "--target", type=float, default=0.8, help="personalised accuracy for rounds-to-target (0.8)"
    )
    p.add_argument("--jobs", type=int, help="worker processes (default: core count)")
    add_common(p, default_out="results/fl")
    p.set_defaults(run=run_fl)


def fl_grid(args: argparse.Namespace) -> Any:
    """The :class:`~flexmoe.benchmarks.fl.FlGrid` of parsed ``fl`` arguments."""
    from flexmoe.benchmarks.cli import load_plugins
    from flexmoe.benchmarks.fl import FlGrid, default_jobs
    from flexmoe.fedloop import METHODS

    load_plugins(args.plugin)
    methods = parse_names(args.methods, "--methods", METHODS)
    partitions = [_partition(p) for p in args.partitions.split(",")]
    seeds = parse_int_list(args.seeds, "--seeds")
    parse_positive(args.jobs, "--jobs", integer=True)
    if not 0 < args.target <= 1:
        raise UsageError("--target", f"expected an accuracy in (0, 1]; got {args.target!r}")
    base = {
        "dataset": args.dataset,
        "clients": args.clients,
        "experts": args.experts,
        "capacity": args.capacity,
        "rounds": args.rounds,
        "backend": args.backend,
    }
    _check_config(base, methods[0], partitions[0])
    n_runs = len(methods) * len(partitions) * len(seeds)
    return FlGrid(
        methods=tuple(methods),
        partitions=tuple(partitions),
        seeds=tuple(seeds),
        base=base,
        target=args.target,
        jobs=args.jobs or default_jobs(n_runs),
        plugins=tuple(args.plugin),
    )


def _partition(text: str) -> str:
    from flexmoe.fedloop import parse_partition

    kind, sep, value = text.strip().partition(":")
    spec = f"{PARTITION_ALIASES.get(kind.lower(), kind)}{sep}{value}"
    try:
        return str(parse_partition(spec))
    except ValueError as err:
        raise UsageError("--partitions", f"{err}; kclass:<k> is shards:<k>") from None


def _check_config(base: dict[str, Any], method: str, partition: str) -> None:
    """Build one FedConfig now, so a bad value fails before any process starts."""
    from flexmoe.fedloop import FedConfig

    try:
        FedConfig(**base, method=method, partition=partition)
    except ValueError as err:
        match = re.search(r"`(\w+)`", str(err))
        flag = f"--{match[1]}" if match and match[1] in base else "--dataset"
        raise UsageError(flag, str(err)) from None
    if base["backend"] != "auto":
        from flexmoe.benchmarks.cli import parse_backends

        parse_backends(base["backend"], "--backend")


def run_fl(args: argparse.Namespace, command: str) -> int:
    from flexmoe.benchmarks.results import now
    from flexmoe.benchmarks.sweeps import fl_sweep

    grid = fl_grid(args)
    results = fl_sweep(grid, args.out, command, now(), progress=not args.quiet,
                       resume=args.resume, overwrite=args.overwrite)  # fmt: skip
    return report_fl(results)


def report_fl(results: FlResults) -> int:
    """Print the mean ± std table and where the files are; 1 if any run failed."""
    from flexmoe.benchmarks.fl import fl_table

    print(fl_table(results.summaries))
    print(f"\n{len(results.rows)} runs → {results.out}/runs.jsonl, runs.csv, summary.md, "
          f"runs/*.json; plots: {', '.join(f.name for f in results.figures)}")  # fmt: skip
    failed = [row for row in results.rows if row.error]
    for row in failed:
        print(f"error: {row.method} / {row.partition} / seed {row.seed} failed: {row.error}",
              file=sys.stderr)  # fmt: skip
    sys.stdout.flush()
    return 1 if failed else 0
