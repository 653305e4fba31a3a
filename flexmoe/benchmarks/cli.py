"""``flexmoe-bench``: compare assignment backends and federated policies.

Subcommands: ``solvers`` (backends × instances, each run in its own process under time
and memory limits), ``fl`` (federated methods × partitions × seeds), ``report``
(Markdown from result folders) and ``demo`` (what ``make run`` shows). Bad input exits
with status 2 and a message naming the flag; a backend answer rejected by the
independent verifier exits with status 1. Ctrl-C or SIGTERM ends a sweep within a
second or two with one line (what was kept, and the ``--resume`` command), every
process it started ended, status 130 / 143; a non-empty ``--out`` needs ``--resume``
(skip what finished) or ``--overwrite`` (start again).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from flexmoe.assign import UnknownBackendError, get_backend, registered_backends
from flexmoe.benchmarks.environment import default_memory_limit, load_plugin
from flexmoe.benchmarks.options import (
    Size,
    UsageError,
    parse_int_list,
    parse_names,
    parse_positive,
    parse_sizes,
)
from flexmoe.benchmarks.processes import Interrupted, interruptible
from flexmoe.benchmarks.records import SolverRun
from flexmoe.benchmarks.results import SolverResults, now
from flexmoe.benchmarks.sandbox import DEFAULT_STARTUP, try_plugins
from flexmoe.benchmarks.solvers import SolverGrid
from flexmoe.benchmarks.sweeps import solver_sweep
from flexmoe.extras import MissingExtraError, require_extra

__all__ = ["build_parser", "main"]

logger = logging.getLogger("flexmoe.benchmarks")


def main(argv: list[str] | None = None) -> int:
    """Run ``flexmoe-bench``; returns the exit status.

    0 ok; 1 a backend answer failed verification (or a federated run failed); 2 bad
    input (a flag, an unreadable ``--instances`` file, a missing extra); 130 / 143
    interrupted by SIGINT / SIGTERM (what finished is kept; ``--resume`` continues).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    words = sys.argv[1:] if argv is None else list(argv)
    command = "flexmoe-bench " + shlex.join(words)
    prefix = f"flexmoe-bench {args.subcommand}"
    try:
        for extra in getattr(args, "extras", ()):
            require_extra(extra, part="this command")
        with interruptible():
            status: int = args.run(args, command)
    except (UsageError, MissingExtraError) as err:
        print(f"{prefix}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        kept = f"; {stop.detail}" if stop.detail else ""
        sweep = hasattr(args, "resume")  # a subcommand that writes a result folder
        again = f"; continue with: {_resume_command(words)}" if sweep else ""
        print(f"{prefix}: interrupted by {stop}{kept}{again}", file=sys.stderr)
        return stop.exit_status
    return status


def _resume_command(words: list[str]) -> str:
    """The command line that continues an interrupted sweep."""
    kept = [w for w in words if w not in ("--overwrite", "--resume")]
    return "flexmoe-bench " + shlex.join([*kept, "--resume"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexmoe-bench",
        allow_abbrev=False,
        description="Compare expert-assignment backends and federated MoE policies.",
    )
    commands = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    _add_solvers(commands)
    from flexmoe.benchmarks import cli_fl, cli_report, rounds

    cli_fl.add_parser(commands)
    cli_report.add_parser(commands)
    cli_report.add_demo_parser(commands)
    rounds.add_parser(commands)
    return parser


# -- solvers -------------------------------------------------------------------------


def _add_solvers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "solvers",
        allow_abbrev=False,
        help="backends × instances, each run in its own process",
        description="Run every backend on every instance, each in its own process under "
        "a time and a memory limit; write rows (JSONL, CSV), medians and PNG plots.",
        epilog=_solvers_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backends", help="comma-separated specs (default: every available one)")
    p.add_argument("--sizes", default="100x16x4,1000x64x8", help="NxExK,... (clients×experts×k)")
    p.add_argument("--generator", default="clustered", help="instance kind (default clustered)")
    p.add_argument(
        "--seeds",
        default="0-2",
        help="instance and backend seeds: 0-4 or 0,3,7 (0-2; unused with --instances)",
    )
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds per run (30)")
    p.add_argument(
        "--memory-limit",
        type=float,
        metavar="GiB",
        default=default_memory_limit(),
        help="address-space limit per run (default: half the RAM, at most 16)",
    )
    p.add_argument(
        "--grace",
        type=float,
        metavar="S",
        help="seconds past the time limit before the kill (default max(2, limit/2))",
    )
    p.add_argument(
        "--startup-limit",
        type=float,
        metavar="S",
        default=DEFAULT_STARTUP,
        help="seconds a run may take to import the plugins and the backend's libraries "
        f"and load the problem; plugins are first tried under it (default {DEFAULT_STARTUP:g})",
    )
    p.add_argument(
        "--instances",
        type=Path,
        metavar="DIR",
        help="run on the .npz problems in DIR instead of generating; an unreadable file "
        "is listed and skipped (exit status 2 at the end)",
    )
    add_common(p, default_out="results/solvers")
    p.set_defaults(run=run_solvers)


def _solvers_epilog() -> str:
    from flexmoe.assign.instances import GENERATORS

    return (
        f"registered backends: {', '.join(all_specs(False))}\n"
        f"generators: {', '.join(GENERATORS)}\n\n"
        "example:\n  flexmoe-bench solvers --backends flow,milp,greedy:topk "
        "--sizes 100x16x4,1000x64x8 --seeds 0-4 --out results/solvers\n"
        "exit status: 0 ok, 1 a backend answer failed verification, 2 bad input (a flag, "
        "an unreadable --instances file), 130/143 interrupted (finished runs kept: --resume)"
    )


def add_common(p: argparse.ArgumentParser, *, default_out: str) -> None:
    """``--plugin``, ``--out``, ``--resume``, ``--overwrite`` and ``--quiet``."""
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="module or .py file to import first (registers user backends); repeatable",
    )
    p.add_argument("--out", type=Path, default=Path(default_out), help=f"({default_out})")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in a non-empty --out (same settings): skip what finished",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="empty a non-empty --out (a result folder) and start again",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(extras=("bench",))


def solver_grid(args: argparse.Namespace) -> SolverGrid:
    """The :class:`SolverGrid` of parsed ``solvers`` arguments (plugins loaded)."""
    parse_positive(args.startup_limit, "--startup-limit")
    load_plugins(args.plugin, limit=args.startup_limit)
    parse_positive(args.time_limit, "--time-limit")
    parse_positive(args.memory_limit, "--memory-limit")
    if args.grace is not None and args.grace < 0:
        raise UsageError("--grace", f"expected seconds >= 0; got {args.grace!r}")
    if args.instances is not None:
        if not sorted(Path(args.instances).glob("*.npz")):
            raise UsageError("--instances", f"no .npz problem files in {str(args.instances)!r}")
        sizes: tuple[Size, ...] = ()
        generator = "file"
    else:
        from flexmoe.assign.instances import GENERATORS

        sizes = tuple(parse_sizes(args.sizes))
        generator = parse_names(args.generator, "--generator", sorted(GENERATORS))[0]
    return SolverGrid(
        backends=tuple(parse_backends(args.backends)),
        sizes=sizes,
        generator=generator,
        seeds=tuple(parse_int_list(args.seeds, "--seeds")),
        time_limit=args.time_limit,
        memory_limit_gib=args.memory_limit,
        grace=args.grace,
        startup=args.startup_limit,
        instances_dir=args.instances,
        plugins=tuple(args.plugin),
    )


def load_plugins(plugins: list[str], *, limit: float = DEFAULT_STARTUP) -> None:
    """Import the ``--plugin`` modules: first in a child process killed after `limit`
    seconds (a plugin that hangs at import cannot hang the benchmark), then here."""
    try:
        try_plugins(tuple(plugins), limit)
    except ImportError as err:
        raise UsageError("--plugin", str(err)) from None
    for plugin in plugins:
        try:
            load_plugin(plugin)
        except Exception as err:
            raise UsageError("--plugin", f"cannot import {plugin!r}: {err}") from err


def all_specs(available_only: bool = True) -> list[str]:
    """Every way to name every (available) registered backend."""
    return [s for b in registered_backends().values() if b.available or not available_only
            for s in b.specs()]  # fmt: skip


def parse_backends(text: str | None, flag: str = "--backends") -> list[str]:
    """Backend specs, each a registered ``name`` or ``name:variant``."""
    if text is None:
        specs = all_specs()
        if not specs:
            raise UsageError(flag, "no backend is registered and available")
        return specs
    specs = parse_names(text, flag, [*all_specs(False), *_all_variant_specs()])
    for spec in specs:
        try:
            get_backend(spec.partition(":")[0])
        except UnknownBackendError as err:
            raise UsageError(flag, str(err)) from None
    return specs


def _all_variant_specs() -> list[str]:
    """``name:variant`` for every variant, the default one included."""
    return [f"{b.name}:{v}" for b in registered_backends().values() for v in b.variants]


def run_solvers(args: argparse.Namespace, command: str) -> int:
    grid = solver_grid(args)
    results = solver_sweep(grid, args.out, command, now(), progress=not args.quiet,
                           resume=args.resume, overwrite=args.overwrite,
                           on_row=_shout_if_rejected)  # fmt: skip
    return report_sweep(results)


def _shout_if_rejected(row: SolverRun) -> None:
    if row.rejected or row.verified is False:
        from tqdm import tqdm

        tqdm.write(
            f"!! VERIFIER REJECTED {row.backend} on {row.instance}: {row.message}", file=sys.stderr
        )


def report_sweep(results: SolverResults) -> int:
    """Print the medians and where the files are; 1 if any answer was rejected, else 2
    if an input file was skipped."""
    from flexmoe.benchmarks.summary import summary_table

    print(summary_table(results.summaries))
    print(
        f"\n{len(results.rows)} runs → {results.out}/runs.jsonl, runs.csv, summary.md; "
        f"plots: {', '.join(f.name for f in results.figures)}"
    )
    for row in results.crashed:
        print(f"warning: {row.backend} crashed on {row.instance}: {row.message}", file=sys.stderr)
    for skip in results.skipped:
        print(f"error: skipped {skip.file}: {skip.error}", file=sys.stderr)
    if not results.rejected:
        return 2 if results.skipped else 0
    print("\n" + "!" * 72, file=sys.stderr)
    for row in results.rejected:
        print(f"VERIFIER REJECTED {row.backend} on {row.instance}: {row.message}", file=sys.stderr)
    print("!" * 72, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
