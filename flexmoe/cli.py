"""The ``flexmoe`` command line: one program for training and benchmarks.

* ``flexmoe train`` runs one federated MoE experiment; its configuration flags are
  generated from :class:`~flexmoe.fedloop.FedConfig`'s own field declarations (every
  field has one, with its help and default), ``--config run.toml`` reads the same
  fields from a file (flags override it), and the resolved configuration is written
  to ``--out``/config.toml (it loads back with ``--config``).
* ``flexmoe bench {solvers,fl,report,demo}`` is ``flexmoe-bench`` (kept as an alias).
* ``flexmoe --version``; ``python -m flexmoe`` is the same program.

Example::

    flexmoe train --dataset digits --partition dirichlet:0.3 --clients 20 --experts 8 \\
        --capacity 2 --rounds 30 --method flex --seed 0 --out runs/x

``--engine flower`` runs the same experiment on Flower's simulation engine (Ray).
Errors are one line naming the flag (or file key) and the rule, then a pointer to
``--help``. Ctrl-C or SIGTERM stops a run, keeps its last checkpoint and prints the
command that continues it. ``--resume`` verifies the checkpoint and falls back to the one
before a damaged one (a warning names the file and the round); when none is usable it
prints one line naming each bad file and its fault and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "ArgumentParser",
    "ConfigSource",
    "add_config_flag",
    "build_parser",
    "import_plugins",
    "main",
    "resolve_config",
    "unavailable",
]

#: Files ``flexmoe train`` writes to ``--out`` (what ``--overwrite`` removes).
OUTPUTS = ("history.json", "config.toml", "checkpoint")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: --flag: rule`` and a pointer to
    ``--help`` instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ", "", message)
        self.exit(2, f"{self.prog}: error: {message}\n(see: {self.prog} --help)\n")


# -- shared by `flexmoe train` and `flexmoe bench fl` -----------------------------------


def add_config_flag(parser: argparse._ActionsContainer) -> None:
    """``--config FILE``: settings from a TOML (or JSON) file, overridden by flags."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML (or JSON) file of settings: top-level keys are the field names "
        '(rounds = 5, capacity = "2"), [train] and [fitness] tables for the nested '
        "ones; flags override it",
    )


class ConfigSource:
    """Where each setting came from: a flag, the ``--config`` file, or the default."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}

    def explain(
        self, err: Exception, known: list[Any], parser: argparse.ArgumentParser | None = None
    ) -> str:
        """`err` as ``--flag: rule`` (or ``file: `key`: rule``). Field names that are no
        configuration field but the destination of one of `parser`'s flags (``client_cpus``
        of ``--client-cpus``) are written as that flag too."""
        from flexmoe import params

        where, text = params.explain(err, known, self.sources)
        if parser is not None:
            fields = {o.path for o in known}
            flags = {a.dest: a.option_strings[-1] for a in parser._actions
                     if a.option_strings and a.dest not in fields}  # fmt: skip
            text = re.sub(r"`(\w+)`", lambda m: flags.get(m[1], m[0]), text)
        return f"{where}: {text}" if where else text


def resolve_config(
    args: argparse.Namespace, known: list[Any], source: ConfigSource
) -> dict[str, Any]:
    """The flat settings: the ``--config`` file's, then the flags given (which win)."""
    from flexmoe import params

    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values = params.read_file(args.config, known)
        source.sources.update(dict.fromkeys(values, str(args.config)))
    flags = params.given(args, known)
    by_path = {o.path: o.flag for o in known}
    source.sources.update({path: by_path[path] for path in flags})
    return values | flags


def import_plugins(argv: Sequence[str], prog: str) -> list[str]:
    """Import every ``--plugin MODULE`` of `argv` before the parser is built, so that the
    methods, data sets, signals and backends they register are valid choices."""
    from flexmoe.benchmarks.environment import load_plugin

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--plugin", action="append", default=[])
    plugins: list[str] = pre.parse_known_args(list(argv))[0].plugin
    for plugin in plugins:
        try:
            load_plugin(plugin)
        except Exception as err:
            print(f"{prog}: error: --plugin: cannot import {plugin!r}: {err}", file=sys.stderr)
            sys.exit(2)
    return plugins


# -- flexmoe train ----------------------------------------------------------------------


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("run")
    add_config_flag(out)
    out.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="module or .py file to import first (registers methods, data "
                     "sets, fitness signals, backends); repeatable")  # fmt: skip
    out.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="folder for config.toml, history.json and checkpoints")  # fmt: skip
    out.add_argument("--resume", action="store_true", help="continue the run in --out")
    out.add_argument("--overwrite", action="store_true",
                     help="start over in a --out that holds a run")  # fmt: skip
    out.add_argument("--threads", type=int, default=1, metavar="N",
                     help="torch threads (default: 1)")  # fmt: skip
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "engine", "where the clients run: in this process (local), or as Flower virtual "
        "nodes on Ray (flower; needs the `flower` extra, same seeded assignments)",
    )  # fmt: skip
    group.add_argument("--engine", choices=("local", "flower"), default="local",
                       help="(default: local)")  # fmt: skip
    group.add_argument("--client-cpus", type=float, default=1.0, metavar="C",
                       help="flower: CPUs Ray reserves per client, also its torch threads "
                       "(default: 1)")  # fmt: skip
    group.add_argument("--client-gpus", type=float, default=0.0, metavar="G",
                       help="flower: GPUs Ray reserves per client (default: 0)")  # fmt: skip
    group.add_argument("--ray-address", dest="address", metavar="ADDR",
                       help="flower: an existing Ray cluster ('auto' or <head-ip>:6379); "
                       "default: a private local Ray instance")  # fmt: skip
    group.add_argument(
        "--ray-cpus",
        dest="num_cpus",
        type=int,
        metavar="N",
        help="flower: CPUs of the private local Ray instance (default: all)",
    )


def build_parser() -> ArgumentParser:
    """The ``flexmoe`` argument parser (``--plugin`` modules already imported)."""
    from flexmoe import __version__

    parser = ArgumentParser(prog="flexmoe", allow_abbrev=False, description="Federated "
                            "MoE with load-balanced expert assignment (FLEX-MoE).")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"flexmoe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=ArgumentParser)  # fmt: skip
    description = "Train a federated MoE; write config.toml, history.json and a checkpoint "
    description += "per round to --out."
    try:
        from flexmoe import params
        from flexmoe.fedloop import FedConfig
    except ImportError as err:  # the federated loop's extra is not installed
        unavailable(commands, "train", "run one federated MoE experiment", err)
    else:
        train = commands.add_parser("train", help="run one federated MoE experiment",
                                    allow_abbrev=False, description=description)  # fmt: skip
        train.set_defaults(handler=_train, command_parser=train)
        params.add_arguments(train, params.options(FedConfig))
        _add_output_flags(train)
        _add_engine_flags(train)
    bench_help = "benchmarks: solvers, fl, report, demo (flexmoe bench --help; = flexmoe-bench)"
    commands.add_parser("bench", help=bench_help, add_help=False)
    return parser


def unavailable(commands: Any, name: str, help: str, err: ImportError) -> Any:
    """A subcommand whose part is not installed: whatever it is given, it says which
    extra to install (`err`'s message) and exits with status 2."""
    # "+" as the only prefix: every argument, flags included, lands in `ignored`
    stub = commands.add_parser(name, help=f"{help} (not installed)", prefix_chars="+",
                               add_help=False)  # fmt: skip
    stub.add_argument("ignored", nargs="*")

    def handler(*args: Any) -> int:
        print(f"{stub.prog}: error: {err}", file=sys.stderr)
        return 2

    stub.set_defaults(handler=handler, command_parser=stub, run=lambda *a: handler())
    return stub


def _check_engine(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.threads < 1:
        parser.error(f"argument --threads: must be >= 1; got {args.threads}")
    if args.engine == "flower":
        if args.resume:
            parser.error("argument --resume: the flower engine does not checkpoint; "
                         "resume runs of --engine local")  # fmt: skip
        if args.threads != parser.get_default("threads"):
            parser.error("argument --threads: with --engine flower each client trains with "
                         "--client-cpus threads")  # fmt: skip
        if not args.client_cpus > 0:
            parser.error(f"argument --client-cpus: must be > 0; got {args.client_cpus:g}")
        if args.client_gpus < 0:
            parser.error(f"argument --client-gpus: must be >= 0; got {args.client_gpus:g}")
        return
    for dest, flag in (("client_cpus", "--client-cpus"), ("client_gpus", "--client-gpus"),
                       ("address", "--ray-address"), ("num_cpus", "--ray-cpus")):  # fmt: skip
        if getattr(args, dest) != parser.get_default(dest):
            parser.error(f"argument {flag}: only for --engine flower")


def _prepare_out(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a --out that holds something (besides a config.toml: a run that failed
    before its first round) unless --resume or --overwrite says what to do with it;
    --overwrite removes what an earlier run wrote there."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {out} exists and is not a folder")
    if args.resume and args.overwrite:
        parser.error("argument --overwrite: not with --resume; choose one")
    if args.overwrite:
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    elif not args.resume and out.is_dir() and any(p.name != "config.toml" for p in out.iterdir()):
        parser.error(f"argument --out: {out} is not empty; pass --resume to continue the "
                     "run in it, or --overwrite to start over")  # fmt: skip


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    from flexmoe import params
    from flexmoe.fedloop import FedConfig

    known = params.options(FedConfig)
    source = ConfigSource()
    try:
        return params.build(FedConfig, resolve_config(args, known, source))
    except ValueError as err:
        parser.error(source.explain(err, known))


class _Progress:
    """A progress bar (when tqdm is installed and not --quiet) that counts rounds."""

    def __init__(self, total: int, start: int, quiet: bool) -> None:
        self.done = start
        self.bar: Any = None
        if not quiet:
            try:
                from tqdm import tqdm
            except ImportError:  # the `bench` extra brings it
                return
            self.bar = tqdm(total=total, initial=start, desc="rounds", unit="round",
                            file=sys.stderr, dynamic_ncols=True, delay=1.0)  # fmt: skip

    def __call__(self, rnd: int, state: Any, history: Any) -> None:
        self.done = rnd + 1
        if self.bar is not None:
            last = history.rounds[-1]
            self.bar.set_postfix(acc=_fmt(last.personalized_acc), cv=_fmt(last.holders.cv, ".2f"),
                                 refresh=False)  # fmt: skip
            self.bar.update(self.done - self.bar.n)  # a fallback resumes before `start`

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def final_table(history: Any, every: int | None = None) -> str:
    """A text table of the rounds (every `every`-th and the last) and a summary line."""
    rounds = history.rounds
    every = every or max(1, len(rounds) // 10)
    headers = ("round", "pers acc", "glob acc", "holders CV", "routed CV", "untrained",
               "assign ms", "round s")  # fmt: skip
    rows = [
        (str(r.round + 1), _fmt(r.personalized_acc), _fmt(r.global_acc), _fmt(r.holders.cv),
         _fmt(r.routed.cv), str(r.never_trained), _fmt(1e3 * r.time.assign, ".2f"),
         _fmt(r.time.round, ".2f"))
        for i, r in enumerate(rounds)
        if (i + 1) % every == 0 or i == len(rounds) - 1
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    final = history.final()
    lines.append(
        f"final: personalised {_fmt(final['personalized_acc'])}, global "
        f"{_fmt(final['global_acc'])}, worst holders CV {_fmt(final['max_holders_cv'])}, "
        f"rounds with an untrained expert {final['never_trained_rounds']}, assignment "
        f"{100 * final['assign_time_share']:.2f}% of round time"
    )
    return "\n".join(lines)


def _run_engine(args: argparse.Namespace, config: Any, hook: Any) -> Any:
    if args.engine == "local":
        from flexmoe.fedloop import run

        return run(config, out=args.out, resume=args.resume, hooks=[hook], threads=args.threads)
    from flexmoe.flower import RayOptions, run_flower

    ray = RayOptions(client_cpus=args.client_cpus, client_gpus=args.client_gpus,
                     address=args.address, num_cpus=args.num_cpus)  # fmt: skip
    return run_flower(config, out=args.out, ray=ray, hooks=[hook])


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (restored afterwards)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues the run of `argv` (``flexmoe train ...``).

    Examples
    --------
    >>> resume_command(["train", "--rounds", "5", "--out", "runs/a b", "--overwrite"])
    "flexmoe train --rounds 5 --out 'runs/a b' --resume"
    """
    kept = [a for a in argv if a != "--overwrite"]
    return shlex.join(["flexmoe", *kept, *([] if "--resume" in kept else ["--resume"])])


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    from flexmoe import params
    from flexmoe.extras import MissingExtraError, require_extra
    from flexmoe.fedloop import FedConfig

    try:
        require_extra("fl", part="`flexmoe train`")
    except MissingExtraError as err:
        print(f"flexmoe train: error: {err}", file=sys.stderr)
        return 2
    from flexmoe.fedloop.checkpoint import CheckpointError, completed_rounds

    _check_engine(parser, args)
    config = _config(parser, args)
    _prepare_out(parser, args)
    start = completed_rounds(args.out / "checkpoint") if args.resume else 0
    args.out.mkdir(parents=True, exist_ok=True)

    def write_config() -> None:
        params.write_toml(args.out / "config.toml", params.to_flat(config),
                          header="flexmoe train configuration; load it with --config")  # fmt: skip

    if not args.resume:  # a resume writes it once its checkpoint was accepted
        write_config()
    progress = _Progress(config.rounds, min(start, config.rounds), args.quiet)
    try:
        with _sigterm_interrupts():
            history = _run_engine(args, config, progress)
    except KeyboardInterrupt:
        if args.resume and progress.done > start:
            write_config()
        progress.close()
        done = max(progress.done, completed_rounds(args.out / "checkpoint"))
        print(f"flexmoe train: interrupted after {done} of {config.rounds} rounds; "
              f"continue with: {resume_command(argv)}", file=sys.stderr)  # fmt: skip
        return INTERRUPTED
    except CheckpointError as err:  # bad input, though no flag's: one line, status 2
        progress.close()
        print(f"flexmoe train: error: {err}; start over with --overwrite", file=sys.stderr)
        return 2
    except (FileNotFoundError, ImportError, ValueError) as err:
        progress.close()
        parser.error(ConfigSource().explain(err, params.options(FedConfig), parser))
    except RuntimeError as err:  # e.g. the simulation engine found no resources
        progress.close()
        print(f"flexmoe train: error: {err}", file=sys.stderr)
        return 1
    progress.close()
    if args.resume:
        write_config()
    print(final_table(history))
    print(f"history: {args.out / 'history.json'}")
    return 0


# -- the program ------------------------------------------------------------------------


#: The exit status of an interrupted run (128 + SIGINT, as shells report it).
INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flexmoe`` console script (and ``python -m flexmoe``).

    Called as the program (`argv` None), an interrupted run ends the process at once
    once its last line is out: torch's interpreter teardown alone can take seconds.
    """
    status = _main(list(sys.argv[1:] if argv is None else argv))
    if argv is None and status == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:
        from flexmoe.benchmarks.cli import main as bench

        return bench(argv[1:])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import_plugins(argv, "flexmoe train")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.ArgumentParser, argparse.Namespace, list[str]], int]
    handler = args.handler
    return handler(args.command_parser, args, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
