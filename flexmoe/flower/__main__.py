"""``python -m flexmoe.flower``: run a Flower App on a private local federation.

``python -m flexmoe.flower run examples/flower-app [flwr run options]`` is ``flwr run``
against a SuperLink of its own (:class:`~flexmoe.flower.launch.LocalFederation`): no
dependency installation, Flower's and Ray's state in a temporary folder, and nothing
left running afterwards (Ctrl-C or SIGTERM stops the run and the federation). The
nodes default to the run configuration's ``clients``;
``--run-config`` and every other ``flwr run`` option pass through.
``python -m flexmoe.flower config`` prints the ``[tool.flwr.app.config]`` table of the
App (every configuration field with its default); ``python -m flexmoe.flower results
DIR... --out FOLDER`` writes the table and the plots of runs' ``history.json`` (the
Expected results of ``examples/flower-app/README.md``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexmoe.cli import sigterm_interrupts
from flexmoe.fedloop.config import FedConfig
from flexmoe.flower.launch import LocalFederation, RayOptions
from flexmoe.flower.runconfig import AppSettings, config_table, from_run_config, run_config

__all__ = ["main"]

PROG = "python -m flexmoe.flower"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="flwr run APP on a private local federation that leaves nothing running",
        description="flwr run APP against a private SuperLink; options it does not know "
        "go to flwr run (e.g. --run-config 'num-server-rounds=2 method=\"greedy\"')",
    )  # fmt: skip
    run.add_argument("app", type=Path, nargs="?", default=Path("."), help="the App's folder")
    run.add_argument("--num-supernodes", type=int, metavar="N",
                     help="simulated nodes (default: the run config's `clients`)")  # fmt: skip
    run.add_argument("--client-cpus", type=float, default=1.0, metavar="C",
                     help="CPUs Ray reserves per node (default: 1)")  # fmt: skip
    run.add_argument("--client-gpus", type=float, default=0.0, metavar="G",
                     help="GPUs Ray reserves per node (default: 0)")  # fmt: skip
    run.add_argument("--ray-address", metavar="ADDR",
                     help="an existing Ray cluster (default: a private local one)")  # fmt: skip
    run.add_argument("--ray-cpus", type=int, metavar="N",
                     help="CPUs of the private local Ray instance (default: all)")  # fmt: skip
    commands.add_parser("config", help="print the App's [tool.flwr.app.config] table")
    results = commands.add_parser("results", help="table and plots of runs (their out-dir)")
    results.add_argument("runs", type=Path, nargs="+", metavar="DIR",
                         help="out-dir of a run (holding its history.json)")  # fmt: skip
    results.add_argument("--out", type=Path, required=True, metavar="FOLDER",
                         help="where results.md and the PNG plots go")  # fmt: skip
    results.add_argument("--target", type=float, default=0.8, metavar="ACC",
                         help="accuracy of 'rounds to target' (default: 0.8)")  # fmt: skip
    return parser


def write_results(runs: Sequence[Path], out: Path, target: float = 0.8) -> list[Path]:
    """``results.md`` (a row per method and partition, mean ± std over the runs) and the
    plots of ``flexmoe-bench fl`` (accuracy and holders CV per round, expert load) for
    the runs' histories, in `out`."""
    from flexmoe.benchmarks.fl import fl_row, fl_table, summarise_fl
    from flexmoe.benchmarks.plots import fl_figures

    out.mkdir(parents=True, exist_ok=True)
    rows: list[Any] = []
    histories: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        data = json.loads((run / "history.json").read_text(encoding="utf-8"))
        wall = sum(r["time"]["round"] for r in data["rounds"])
        rows.append(fl_row(data, target, wall, str(run / "history.json")))
        histories.setdefault(f"{rows[-1].method}@{rows[-1].partition}", []).append(data)
    (out / "results.md").write_text(fl_table(summarise_fl(rows), markdown=True) + "\n")
    return [out / "results.md", *fl_figures(histories, out)]


def _run_config(app: Path, flwr_args: Sequence[str]) -> dict[str, Any]:
    """The App's run configuration with the ``--run-config`` overrides of `flwr_args`."""
    import click
    from flwr.common.config import flatten_dict, parse_config_args

    pyproject = tomllib.loads((app / "pyproject.toml").read_text(encoding="utf-8"))
    values = flatten_dict(pyproject.get("tool", {}).get("flwr", {}).get("app", {}).get("config"))
    given = [v for flag, v in itertools.pairwise(flwr_args) if flag in ("--run-config", "-c")]
    given += [a.split("=", 1)[1] for a in flwr_args if a.startswith("--run-config=")]
    try:
        return {**values, **parse_config_args(given)}
    except click.ClickException as err:  # Flower's parser: the TOML is malformed
        raise ValueError(f"--run-config {' '.join(given)!r}: {err.format_message()}") from None


def _nodes(args: argparse.Namespace, flwr_args: list[str]) -> int:
    """The node count: the flag, else the run config's `clients` (its values checked
    here, before anything starts, when they are flexmoe's)."""
    values = _run_config(args.app, flwr_args)
    if "clients" in values:
        config, _ = from_run_config(values)
        return args.num_supernodes or config.clients
    return args.num_supernodes or 2  # not flexmoe's App: Flower's default


def _run(args: argparse.Namespace, flwr_args: list[str]) -> int:
    if not (args.app / "pyproject.toml").is_file():
        print(f"{PROG} run: error: {args.app} has no pyproject.toml (not a Flower App)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        nodes = _nodes(args, flwr_args)
        ray = RayOptions(client_cpus=args.client_cpus, client_gpus=args.client_gpus,
                         address=args.ray_address, num_cpus=args.ray_cpus)  # fmt: skip
        ray.check_local()
        with sigterm_interrupts(), LocalFederation(ray, capture=False) as federation:
            result = federation.run(args.app.resolve(), num_supernodes=nodes, arguments=flwr_args)
    except ValueError as err:
        text = str(err).replace("`address`", "--ray-address").replace("`client_cpus`",
                                                                       "--client-cpus")  # fmt: skip
        print(f"{PROG} run: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} run: interrupted; the federation is stopped", file=sys.stderr)
        return 130
    if not result.ok:
        print(f"{PROG} run: the run ended {result.status}: {result.details}", file=sys.stderr)
        return 1
    print(f"{PROG} run: the run ended {result.status}; nothing is left running")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m flexmoe.flower``."""
    args, rest = _parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "config":
        if rest:
            _parser().error(f"unrecognized arguments: {' '.join(rest)}")
        print(config_table(run_config(FedConfig(), AppSettings())), end="")
        return 0
    if args.command == "results":
        if rest:
            _parser().error(f"unrecognized arguments: {' '.join(rest)}")
        missing = [str(r) for r in args.runs if not (r / "history.json").is_file()]
        if missing:
            _parser().error(f"no history.json in {', '.join(missing)}")
        for path in write_results(args.runs, args.out, args.target):
            print(path)
        return 0
    return _run(args, rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
