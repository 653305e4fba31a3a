"""Acceptance run of the federated loop: flex against the baselines on digits.

Digits, 20 clients, Dirichlet α = 0.3, 8 experts, 2 per client, 30 rounds, seeds 0–2, the
five methods, in a pool of worker processes with one torch thread each. Prints, per
method, personalised and global test accuracy (mean ± std over seeds), validation
accuracy, load CV by holders, rounds with an untrained expert, the assignment's share of
round time, then flex − baseline paired by seed, and the acceptance checks.

Usage::

    .venv/bin/python benchmarks/fl_acceptance.py            # the acceptance grid
    .venv/bin/python benchmarks/fl_acceptance.py --set train.lr=0.1 --metric val

``--set`` overrides a :class:`flexmoe.fedloop.FedConfig` field (dotted for ``train.*`` and
``fitness.*``); tune on ``--metric val`` (each client's validation split), never on test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

METHODS = ("flex", "greedy", "random", "round_robin", "full")
BASE = {
    "dataset": "digits",
    "partition": "dirichlet:0.3",
    "clients": 20,
    "experts": 8,
    "capacity": "2",
    "rounds": 30,
}


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (values parsed as JSON when they can be), keyed by the dotted
    field paths :meth:`FedConfig.from_dict <flexmoe.fedloop.FedConfig.from_dict>` reads."""
    from flexmoe.fedloop import FedConfig

    config: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value; got {pair!r}")
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    try:
        FedConfig.from_dict({**BASE, **config})
    except ValueError as err:
        raise SystemExit(f"--set: {err}") from None
    return config


def one_run(config: dict[str, Any], plugins: list[str], out: str | None) -> dict[str, Any]:
    """Worker: one federated run with one torch thread; its headline figures."""
    import torch

    from flexmoe.fedloop import FedConfig, run

    torch.set_num_threads(1)
    for plugin in plugins:
        from flexmoe.benchmarks.environment import load_plugin

        load_plugin(plugin)
    start = time.perf_counter()
    history = run(FedConfig.from_dict(config))
    wall = time.perf_counter() - start
    if out is not None:
        history.save(Path(out) / f"{config['method']}-s{config['seed']}.json")
    last = history.rounds[-1]
    times = history.series("time.round")
    return {
        "method": config["method"],
        "seed": config["seed"],
        "test": last.personalized_acc,
        "val": last.personalized_val_acc,
        "global": last.global_acc,
        "global_val": last.global_val_acc,
        "cv": history.series("holders.cv"),
        "untrained_rounds": sum(1 for r in history.rounds if r.never_trained > 0),
        "assign_share": sum(history.series("time.assign")) / sum(times),
        "median_round": statistics.median(times),
        "wall": wall,
    }


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def table(rows: list[dict[str, Any]], methods: list[str], metric: str) -> str:
    """Per method; with ``metric == "val"`` only validation accuracies are shown."""
    first, second = ("test", "global") if metric == "test" else ("val", "global_val")
    names = ("personalised", "global") if metric == "test" else ("pers. val", "global val")
    head = (
        f"{'method':<12} {names[0]:>14} {names[1]:>14} "
        f"{'holders CV':>17} {'untrained':>9} {'assign %':>8} {'round s':>7}"
    )
    lines = [head, "-" * len(head)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cvs = [c for r in mine for c in r["cv"]]
        lines.append(
            f"{method:<12} {mean_std([r[first] for r in mine]):>14} "
            f"{mean_std([r[second] for r in mine]):>14} "
            f"{min(cvs):>7.3f}..{max(cvs):<7.3f} "
            f"{sum(r['untrained_rounds'] for r in mine):>9} "
            f"{100 * statistics.median(r['assign_share'] for r in mine):>8.2f} "
            f"{statistics.median(r['median_round'] for r in mine):>7.3f}"
        )
    return "\n".join(lines)


def paired(rows: list[dict[str, Any]], methods: list[str], metric: str) -> str:
    """flex − other, per seed, on `metric`."""
    by = {(r["method"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"paired by seed, flex − other ({metric}):"]
    for other in methods:
        if other == "flex" or ("flex", seeds[0]) not in by:
            continue
        diffs = [by["flex", s][metric] - by[other, s][metric] for s in seeds if (other, s) in by]
        wins = sum(d > 0 for d in diffs)
        cells = " ".join(f"{d:+.3f}" for d in diffs)
        lines.append(f"  vs {other:<12} {cells}   mean {statistics.fmean(diffs):+.3f}, "
                     f"flex ahead on {wins}/{len(diffs)} seeds")  # fmt: skip
    return "\n".join(lines)


def checks(rows: list[dict[str, Any]], wall: float) -> list[str]:
    flex = [r for r in rows if r["method"] == "flex"]
    greedy = [r for r in rows if r["method"] == "greedy"]
    out = [f"total wall time {wall:.1f} s (limit 300 s)"]
    if flex:
        worst = max(c for r in flex for c in r["cv"])
        out.append(f"flex: worst holders CV over all rounds and seeds {worst:.4f} (limit 0.05)")
        out.append(
            f"flex: rounds with an untrained expert {sum(r['untrained_rounds'] for r in flex)}"
        )
        share = max(r["assign_share"] for r in flex)
        out.append(
            f"flex: assignment share of round time, worst seed {100 * share:.2f}% (limit 2%)"
        )
    if greedy:
        cvs = [c for r in greedy for c in r["cv"]]
        out.append(
            f"greedy: holders CV min over rounds {min(cvs):.3f}, mean {statistics.fmean(cvs):.3f}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=BASE["rounds"])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a FedConfig field, e.g. train.lr=0.1",
    )
    parser.add_argument(
        "--metric",
        choices=("test", "val"),
        default="test",
        help="accuracy for the paired comparison (tune on val)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        help="module or .py file imported in every worker (own backends)",
    )
    parser.add_argument("--out", help="folder for each run's history JSON")  # fmt: skip
    args = parser.parse_args(argv)
    extra = overrides(args.set)
    configs = []
    for method in args.methods:
        for seed in args.seeds:
            config = {**BASE, "rounds": args.rounds, **extra, "method": method, "seed": seed}
            configs.append(config)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        futures = [pool.submit(one_run, c, args.plugin, args.out) for c in configs]
        rows = [f.result() for f in futures]
    wall = time.perf_counter() - start
    print(f"digits, {BASE['clients']} clients, {BASE['partition']}, {BASE['experts']} experts, "
          f"capacity {BASE['capacity']}, {args.rounds} rounds, seeds {args.seeds}, "
          f"overrides {extra or 'none'}")  # fmt: skip
    print(table(rows, args.methods, args.metric))
    print(paired(rows, args.methods, args.metric))
    print(paired(rows, args.methods, "global" if args.metric == "test" else "global_val"))
    print("\n".join(checks(rows, wall)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
