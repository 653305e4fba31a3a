"""``flexmoe bench fl``: arguments, validation and the printed summary.

The sweep's own settings (methods × partitions × seeds, the rounds-to-target accuracy)
are :class:`FlSweep`; every other setting is a :class:`~flexmoe.fedloop.FedConfig` field
with the same flag as in ``flexmoe train`` (both are generated from the field
declarations). ``--config sweep.toml`` takes both kinds of keys; the resolved settings
are written to ``--out``/config.toml and load back with ``--config``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexmoe import params
from flexmoe.benchmarks.options import UsageError, parse_int_list, parse_names, parse_positive
from flexmoe.params import param

if TYPE_CHECKING:
    from flexmoe.benchmarks.fl import FlGrid
    from flexmoe.benchmarks.results import FlResults

__all__ = ["AXES", "FlSweep", "add_parser", "fl_grid", "run_fl"]

#: The :class:`~flexmoe.fedloop.FedConfig` fields the sweep sets per run.
AXES = ("method", "partition", "seed")


@dataclass(frozen=True)
class FlSweep:
    """The axes of a federated sweep and what it reports (the other settings are
    :class:`~flexmoe.fedloop.FedConfig` fields)."""

    methods: str = field(
        default="flex,greedy,random,full",
        metadata=param("comma-separated assignment methods", metavar="LIST", group="sweep"),
    )
    partitions: str = field(
        default="iid,dirichlet:0.3,shards:2",
        metadata=param(
            "comma-separated partitions: iid, dirichlet:<alpha>, shards:<k>",
            metavar="LIST",
            group="sweep",
        ),
    )
    seeds: str = field(
        default="0-2", metadata=param("seeds, e.g. 0-4 or 0,3,7", metavar="LIST", group="sweep")
    )
    target: float = field(
        default=0.8,
        metadata=param(
            "personalised accuracy whose first reaching is reported as rounds-to-target",
            metavar="ACC",
            group="sweep",
        ),
    )

    def __post_init__(self) -> None:
        params.validate(self)


def _known() -> list[params.Option]:
    from flexmoe.fedloop import FedConfig

    return params.options(FlSweep) + params.options(FedConfig, exclude=AXES)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from flexmoe.benchmarks.cli import add_common
    from flexmoe.cli import add_config_flag, unavailable

    summary = "federated methods × partitions × seeds, in parallel processes"
    try:
        known = _known()
    except ImportError as err:  # the federated loop's extra is not installed
        unavailable(commands, "fl", summary, err)
        return
    p = commands.add_parser(
        "fl",
        allow_abbrev=False,
        help=summary,
        description="Run the federated MoE loop for every method, partition and seed "
        "(one process per run, up to the core count); report accuracy, load balance, "
        "rounds to a target accuracy and bytes moved; plot accuracy and expert load.",
    )
    params.add_arguments(p, known)
    p.add_argument("--jobs", type=int, help="worker processes (default: core count)")
    add_config_flag(p)
    add_common(p, default_out="results/fl")
    p.set_defaults(run=run_fl)


def fl_grid(args: argparse.Namespace) -> FlGrid:
    """The :class:`~flexmoe.benchmarks.fl.FlGrid` of parsed ``fl`` arguments (plugins
    loaded first, so that their methods, data sets and backends are valid)."""
    from flexmoe.benchmarks.cli import load_plugins
    from flexmoe.benchmarks.fl import FlGrid, default_jobs
    from flexmoe.cli import ConfigSource, resolve_config
    from flexmoe.fedloop import METHODS, FedConfig

    load_plugins(args.plugin)
    known, source = _known(), ConfigSource()
    try:
        flat = resolve_config(args, known, source)
        sweep_keys = {o.path for o in params.options(FlSweep)}
        sweep = params.build(FlSweep, {k: v for k, v in flat.items() if k in sweep_keys})
        methods = parse_names(sweep.methods, "--methods", list(METHODS))
        seeds = parse_int_list(sweep.seeds, "--seeds")
        axes = {"method": methods[0], "seed": seeds[0]}
        config = params.build(FedConfig, {k: v for k, v in flat.items() if k not in sweep_keys}
                              | axes)  # fmt: skip
        partitions = [_partition(config, p) for p in sweep.partitions.split(",")]
    except UsageError:
        raise
    except ValueError as err:
        where, text = params.explain(err, known, source.sources)
        raise UsageError(where or "--config", text) from None
    parse_positive(args.jobs, "--jobs", integer=True)
    if not 0 < sweep.target <= 1:
        raise UsageError("--target", f"expected an accuracy in (0, 1]; got {sweep.target!r}")
    n_runs = len(methods) * len(partitions) * len(seeds)
    base = {k: v for k, v in config.to_dict().items() if k not in AXES}
    return FlGrid(
        methods=tuple(methods),
        partitions=tuple(partitions),
        seeds=tuple(seeds),
        base=base,
        target=sweep.target,
        jobs=args.jobs or default_jobs(n_runs),
        plugins=tuple(args.plugin),
    )


def _partition(config: Any, text: str) -> str:
    """One item of ``--partitions``, parsed by the configuration's own field."""
    from flexmoe.fedloop import ConfigError

    try:
        return str(config.replace(partition=text.strip()).partition)
    except ConfigError as err:
        raise UsageError("--partitions", str(err).removeprefix("`partition`: ")) from None


def resolved_settings(grid: FlGrid) -> dict[str, Any]:
    """The flat settings of `grid`, as ``--config`` reads them back."""
    from flexmoe.fedloop import FedConfig

    sweep = FlSweep(",".join(grid.methods), ",".join(grid.partitions),
                    ",".join(str(s) for s in grid.seeds), grid.target)  # fmt: skip
    first = {"method": grid.methods[0], "partition": grid.partitions[0], "seed": grid.seeds[0]}
    config = FedConfig.from_dict({**grid.base, **first})
    base = {k: v for k, v in params.to_flat(config).items() if k not in AXES}
    return params.to_flat(sweep) | base


def run_fl(args: argparse.Namespace, command: str) -> int:
    from flexmoe.benchmarks.results import now
    from flexmoe.benchmarks.sweeps import fl_sweep

    grid = fl_grid(args)

    def write_settings(out: Path) -> None:
        params.write_toml(out / "config.toml", resolved_settings(grid),
                          header="flexmoe bench fl settings; load them with --config")  # fmt: skip

    results = fl_sweep(grid, args.out, command, now(), progress=not args.quiet,
                       resume=args.resume, overwrite=args.overwrite,
                       prepare=write_settings)  # fmt: skip
    return report_fl(results)


def report_fl(results: FlResults) -> int:
    """Print the mean ± std table and where the files are; 1 if any run failed."""
    from flexmoe.benchmarks.fl import fl_table

    print(fl_table(results.summaries))
    files = "runs.jsonl, runs.csv, summary.md, runs/*.json, config.toml"
    print(f"\n{len(results.rows)} runs → {results.out}/{files}; "
          f"plots: {', '.join(f.name for f in results.figures)}")  # fmt: skip
    failed = [row for row in results.rows if row.error]
    for row in failed:
        print(f"error: {row.method} / {row.partition} / seed {row.seed} failed: {row.error}",
              file=sys.stderr)  # fmt: skip
    sys.stdout.flush()
    return 1 if failed else 0
