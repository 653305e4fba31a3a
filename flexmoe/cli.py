"""The ``flexmoe`` command line: ``flexmoe train`` runs one federated MoE experiment.

Example::

    flexmoe train --dataset digits --partition dirichlet:0.3 --clients 20 --experts 8 \\
        --capacity 2 --rounds 30 --method flex --seed 0 --out runs/x

``--engine flower`` runs the same experiment on Flower's simulation engine (Ray).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

#: FedConfig fields → the flag that sets them (for error messages).
_FLAGS = {
    "dataset": "--dataset",
    "partition": "--partition",
    "clients": "--clients",
    "experts": "--experts",
    "capacity": "--capacity",
    "top_k": "--top-k",
    "rounds": "--rounds",
    "method": "--method",
    "backend": "--backend",
    "participation": "--participation",
    "dropout": "--dropout",
    "switch_cost": "--switch-cost",
    "epochs": "--local-epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "feedback": "--feedback",
    "signal": "--signal",
    "beta": "--beta",
    "alpha": "--alpha",
    "initial": "--initial-fitness",
    "bonus": "--bonus",
    "val_fraction": "--val-fraction",
    "test_fraction": "--test-fraction",
    "min_size": "--min-size",
    "n_samples": "--samples",
    "seed": "--seed",
    "root": "--data-dir",
    "client_cpus": "--client-cpus",
    "client_gpus": "--client-gpus",
    "address": "--ray-address",
}


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser that raises ValueError with a helpful message."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _number(kind: type, low: float, high: float | None = None, *, open_low: bool = False) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"expected {kind.__name__}; got {text!r}") from None
        bad_low = value <= low if open_low else value < low
        if bad_low or (high is not None and value > high):
            bound = f"> {low:g}" if open_low else f">= {low:g}"
            span = bound if high is None else f"{bound} and <= {high:g}"
            raise ValueError(f"must be {span}; got {text}")
        return value

    parse.__name__ = kind.__name__
    return _checked(parse)


def _partition(text: str) -> str:
    from flexmoe.fedloop.partition import parse_partition

    return str(parse_partition(text))


def _capacity(text: str) -> str:
    from flexmoe.fedloop.clients import parse_capacity

    return str(parse_capacity(text))


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    from flexmoe.fedloop.data import DATASETS

    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        default="digits",
        metavar="NAME",
        help=f"one of {', '.join(DATASETS)} (emnist:<split>); default digits",
    )
    group.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="folder with the files of cifar10 / mnist / emnist / gtsrb",
    )
    group.add_argument(
        "--samples",
        type=_number(int, 1),
        metavar="N",
        help="samples to generate (mnist1d, clustered) or a subset to keep",
    )
    group.add_argument(
        "--partition",
        type=_checked(_partition),
        default="dirichlet:0.3",
        help="iid, dirichlet:<alpha> or shards:<k>; default dirichlet:0.3",
    )
    group.add_argument(
        "--min-size",
        type=_number(int, 1),
        default=20,
        metavar="N",
        help="samples every client gets at least (default 20)",
    )
    group.add_argument(
        "--val-fraction",
        type=_number(float, 0, 0.9),
        default=0.1,
        metavar="F",
        help="of each client's data, for validation (0.1)",
    )
    group.add_argument("--test-fraction", type=_number(float, 0, 0.9), default=0.2,
                       metavar="F", help="of each client's data, for testing (0.2)")  # fmt: skip


def _add_federation_flags(parser: argparse.ArgumentParser) -> None:
    from flexmoe.fedloop.policies import METHODS

    group = parser.add_argument_group("federation")
    group.add_argument("--clients", type=_number(int, 1), default=20, metavar="N")
    group.add_argument("--experts", type=_number(int, 1), default=8, metavar="E")
    group.add_argument(
        "--capacity",
        type=_checked(_capacity),
        default="2",
        help="experts per client: <k> or tiers:2/4/8 (default 2)",
    )
    group.add_argument(
        "--top-k",
        type=_number(int, 1),
        metavar="K",
        help="experts per sample (default: the smallest capacity)",
    )
    group.add_argument("--rounds", type=_number(int, 1), default=30, metavar="R")
    group.add_argument("--method", choices=METHODS, default="flex")
    group.add_argument(
        "--backend", default="auto", help="assignment backend for flex (default auto = flow)"
    )
    group.add_argument(
        "--participation",
        type=_number(float, 0, 1, open_low=True),
        default=1.0,
        metavar="F",
        help="fraction of clients per round (1.0)",
    )
    group.add_argument(
        "--dropout",
        type=_number(float, 0, 0.99),
        default=0.0,
        metavar="P",
        help="probability a participant drops out mid-round (0)",
    )
    group.add_argument(
        "--carry-deficit",
        action="store_true",
        help="carry each expert's load deficit into the next round's bounds",
    )
    group.add_argument(
        "--switch-cost",
        type=_number(float, 0),
        default=0.0,
        metavar="MU",
        help="flex/greedy: utility lost per newly held expert (0)",
    )
    group.add_argument("--seed", type=_number(int, 0), default=0)  # fmt: skip


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    from flexmoe.fedloop.fitness import SIGNALS
    from flexmoe.fedloop.task import FEEDBACK

    group = parser.add_argument_group("local training and fitness")
    group.add_argument("--local-epochs", type=_number(int, 1), default=2, metavar="N")
    group.add_argument("--batch-size", type=_number(int, 1), default=16, metavar="B")
    group.add_argument("--lr", type=_number(float, 0, open_low=True), default=0.1)
    group.add_argument("--momentum", type=_number(float, 0, 1), default=0.9)
    group.add_argument("--weight-decay", type=_number(float, 0), default=0.0)
    group.add_argument(
        "--feedback",
        choices=FEEDBACK,
        default="during",
        help="where per-expert accuracy/loss is measured (default during)",
    )
    group.add_argument(
        "--signal",
        choices=SIGNALS,
        default="accuracy",
        help="fitness signal: accuracy or exp(-alpha*loss)",
    )
    group.add_argument(
        "--beta",
        type=_number(float, 0, 1, open_low=True),
        default=0.3,
        help="fitness EMA step (0.3)",
    )
    group.add_argument(
        "--alpha",
        type=_number(float, 0, open_low=True),
        default=1.0,
        help="loss temperature of the loss signal (1.0)",
    )
    group.add_argument(
        "--initial-fitness",
        type=_number(float, -1e9),
        default=1.0,
        metavar="Q0",
        help="initial (optimistic) fitness (1.0)",
    )
    group.add_argument("--bonus", type=_number(float, 0), default=0.0,
                       help="exploration bonus c/sqrt(1+tries) (0)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``flexmoe`` argument parser."""
    parser = argparse.ArgumentParser(prog="flexmoe", description="Federated MoE with "
                                     "load-balanced expert assignment (FLEX-MoE).")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train", help="run one federated MoE experiment",
        description="Train a federated MoE and write history.json (and a checkpoint per "
        "round) to --out.",
    )  # fmt: skip
    train.set_defaults(handler=_train, command_parser=train)
    _add_data_flags(train)
    _add_federation_flags(train)
    _add_training_flags(train)
    out = train.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for history.json and checkpoints",
    )
    out.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    out.add_argument("--threads", type=_number(int, 1), default=1, help="torch threads (default 1)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")  # fmt: skip
    _add_engine_flags(train)
    return parser


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "engine", "where the clients run: in this process (local), or as Flower virtual "
        "nodes on Ray (flower; needs the `flower` extra, same seeded assignments)",
    )  # fmt: skip
    group.add_argument("--engine", choices=("local", "flower"), default="local",
                       help="default local")  # fmt: skip
    group.add_argument(
        "--client-cpus",
        type=_number(float, 0, open_low=True),
        default=1.0,
        metavar="C",
        help="flower: CPUs Ray reserves per client (also its torch threads); default 1",
    )
    group.add_argument(
        "--client-gpus",
        type=_number(float, 0),
        default=0.0,
        metavar="G",
        help="flower: GPUs Ray reserves per client (default 0)",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="flower: an existing Ray cluster ('auto' or <head-ip>:6379); default: a "
        "private local Ray instance",
    )
    group.add_argument(
        "--ray-cpus",
        type=_number(int, 1),
        metavar="N",
        help="flower: CPUs of the private local Ray instance (default all)",
    )


def _config(args: argparse.Namespace) -> Any:
    from flexmoe.fedloop import FedConfig, FitnessConfig, TrainConfig

    train = TrainConfig(
        epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, feedback=args.feedback,
    )  # fmt: skip
    fitness = FitnessConfig(
        signal=args.signal, beta=args.beta, alpha=args.alpha, initial=args.initial_fitness,
        bonus=args.bonus,
    )  # fmt: skip
    return FedConfig(
        dataset=args.dataset, partition=args.partition, clients=args.clients,
        experts=args.experts, capacity=args.capacity, top_k=args.top_k, rounds=args.rounds,
        method=args.method, backend=args.backend, participation=args.participation,
        dropout=args.dropout, carry_deficit=args.carry_deficit,
        switch_cost=args.switch_cost, train=train, fitness=fitness,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction,
        min_size=args.min_size, n_samples=args.samples, seed=args.seed,
        data_dir=None if args.data_dir is None else str(args.data_dir),
    )  # fmt: skip


def _flagged(message: str) -> str:
    """Replace backticked config field names with the flags that set them."""
    return re.sub(r"`(\w+)`", lambda m: _FLAGS.get(m.group(1), m.group(0)), message)


def _check_backend(parser: argparse.ArgumentParser, spec: str) -> None:
    from flexmoe.assign import UnknownBackendError, get_backend

    if spec == "auto":
        return
    try:
        get_backend(spec.partition(":")[0])
    except UnknownBackendError as err:
        parser.error(f"argument --backend: {err}")


def _check_out(parser: argparse.ArgumentParser, out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {out} exists and is not a folder")
    if not resume and (out / "checkpoint" / "latest.json").exists():
        parser.error(
            f"argument --out: {out} already holds a checkpoint; pass --resume to continue "
            "it, or choose another folder"
        )


def _progress_hook(total: int, start: int, quiet: bool) -> tuple[Any, Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="rounds", unit="round", file=sys.stderr,
               disable=quiet, dynamic_ncols=True, delay=1.0)  # fmt: skip

    def hook(rnd: int, state: Any, history: Any) -> None:
        last = history.rounds[-1]
        bar.set_postfix(acc=_fmt(last["personalized_acc"]), cv=_fmt(last["holders"]["cv"], ".2f"),
                        refresh=False)  # fmt: skip
        bar.update(1)

    return hook, bar


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def final_table(history: Any, every: int | None = None) -> str:
    """A text table of the rounds (every `every`-th and the last) and a summary line."""
    rounds = history.rounds
    every = every or max(1, len(rounds) // 10)
    headers = ("round", "pers acc", "glob acc", "holders CV", "routed CV", "untrained",
               "assign ms", "round s")  # fmt: skip
    rows = [
        (str(r["round"] + 1), _fmt(r["personalized_acc"]), _fmt(r["global_acc"]),
         _fmt(r["holders"]["cv"]), _fmt(r["routed"]["cv"]), str(r["never_trained"]),
         _fmt(1e3 * r["time"]["assign"], ".2f"), _fmt(r["time"]["round"], ".2f"))
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


def _check_engine(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.engine == "flower":
        if args.resume:
            parser.error("argument --resume: the flower engine does not checkpoint; "
                         "resume runs of --engine local")  # fmt: skip
        if args.threads != parser.get_default("threads"):
            parser.error("argument --threads: with --engine flower each client trains with "
                         "--client-cpus threads")  # fmt: skip
        return
    for flag in ("client_cpus", "client_gpus", "ray_address", "ray_cpus"):
        if getattr(args, flag) != parser.get_default(flag):
            parser.error(f"argument --{flag.replace('_', '-')}: only for --engine flower")


def _run_engine(args: argparse.Namespace, config: Any, hook: Any) -> Any:
    if args.engine == "local":
        from flexmoe.fedloop import run

        return run(config, out=args.out, resume=args.resume, hooks=[hook], threads=args.threads)
    from flexmoe.flower import RayOptions, run_flower

    ray = RayOptions(client_cpus=args.client_cpus, client_gpus=args.client_gpus,
                     address=args.ray_address, num_cpus=args.ray_cpus)  # fmt: skip
    return run_flower(config, out=args.out, ray=ray, hooks=[hook])


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from flexmoe.fedloop.checkpoint import load_checkpoint

    _check_backend(parser, args.backend)
    _check_engine(parser, args)
    _check_out(parser, args.out, args.resume)
    try:
        config = _config(args)
    except ValueError as err:
        parser.error(_flagged(str(err)))
    start = 0
    if args.resume:
        found = load_checkpoint(args.out / "checkpoint", config.fitness)
        start = 0 if found is None else found.next_round
    hook, bar = _progress_hook(config.rounds, min(start, config.rounds), args.quiet)
    try:
        history = _run_engine(args, config, hook)
    except (FileNotFoundError, ImportError, ValueError) as err:
        bar.close()
        parser.error(_flagged(str(err)))
    except RuntimeError as err:  # e.g. the simulation engine found no resources
        bar.close()
        print(f"flexmoe train: error: {err}", file=sys.stderr)
        return 1
    bar.close()
    print(final_table(history))
    print(f"history: {args.out / 'history.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flexmoe`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.ArgumentParser, argparse.Namespace], int] = args.handler
    return handler(args.command_parser, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
