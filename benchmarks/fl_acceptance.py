"""Acceptance run of the federated loop on a named preset, and issue 12's targets.

Runs ``flexmoe-bench fl --preset NAME`` (5 paired seeds × every arm, in worker processes
with one torch thread each), then prints the preset's report (``summary.md``: validation,
test once, paired 95 % intervals, balance and cost) and the checks:

* ``experts-matter``: flex − greedy > 0, and flex − fixed > 0 and flex − round_robin > 0,
  on the personalised test accuracy (last round, and the mean of the last 5), each with
  both 95 % intervals (BCa bootstrap, paired t) excluding 0;
* every preset: flex's holders CV in every round, the assignment's share of the round
  time, the wall time of the whole sweep (target: 10 minutes) and how loaded the machine
  was (load average before and after).

Usage::

    .venv/bin/python benchmarks/fl_acceptance.py --preset experts-matter
    .venv/bin/python benchmarks/fl_acceptance.py --preset default --out results/default
    .venv/bin/python benchmarks/fl_acceptance.py --preset tiers -- --seeds 0-1

Flags after ``--`` go to ``flexmoe-bench fl`` as they are (they win over the preset's).
The exit status is 1 when a target of the preset is not met.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

#: (reference, other arm) pairs whose difference must be > 0 with both intervals
#: excluding 0, per preset.
TARGETS = {"experts-matter": (("flex", "greedy"), ("flex", "fixed"), ("flex", "round_robin"))}
LIMIT_S = 600.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min; {os.cpu_count()} CPUs)"


def runs_of(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{arm: {seed: history}}`` of the (one) partition of a finished sweep."""
    from flexmoe.benchmarks.fl import FlRun
    from flexmoe.benchmarks.results import fl_histories, read_journal

    rows = [FlRun.from_dict(r) for r in read_journal(out)]
    by_partition = fl_histories(out, rows)
    return next(iter(by_partition.values()), {})


def target_lines(runs: dict[str, dict[int, dict[str, Any]]], preset: str) -> list[str]:
    """One line per target: the paired difference on the last round and the last 5."""
    from flexmoe.benchmarks.fl_stats import paired, per_seed

    lines = []
    for ref, other in TARGETS.get(preset, ()):
        if ref not in runs or other not in runs:
            lines.append(f"target {ref} − {other}: NOT RUN (an arm is missing)")
            continue
        cells, met = [], True
        for key in ("pt", "pt5"):
            p = paired(per_seed(runs[ref], key), per_seed(runs[other], key))
            met &= p.significant and p.mean > 0
            cells.append(f"{key} {p.cell()}")
        verdict = "MET" if met else "NOT MET"
        lines.append(f"target {ref} − {other} > 0, both 95 % intervals excluding 0: {verdict}; "
                     + "; ".join(cells))  # fmt: skip
    return lines


def balance_lines(runs: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    from flexmoe.benchmarks.fl_stats import run_metrics

    if "flex" not in runs:
        return []
    histories = list(runs["flex"].values())
    worst = max(r["holders"]["cv"] for h in histories for r in h["rounds"])
    share = max(run_metrics(h)["assign_share"] for h in histories)
    backends = sorted({r["assignment"]["backend"] for h in histories for r in h["rounds"]})
    return [f"flex: worst holders CV over all rounds and seeds {worst:.4f}",
            f"flex: assignment share of round time, worst seed {100 * share:.2f} %",
            f"flex: assigned by {', '.join(backends)}"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="experts-matter")
    parser.add_argument("--out", type=Path, help="result folder (default: results/<preset>)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    args = parser.parse_args(own)
    out = args.out or Path("results") / args.preset

    from flexmoe.benchmarks.cli import main as bench

    before, start = load(), time.perf_counter()
    status = bench(["fl", "--preset", args.preset, "--jobs", str(args.jobs), "--out", str(out),
                    *(["--resume"] if args.resume else []), *extra])  # fmt: skip
    wall = time.perf_counter() - start
    if status == 2:
        return 2
    print((out / "summary.md").read_text())
    runs = runs_of(out)
    targets = target_lines(runs, args.preset)
    what = "this command (resumed: only the runs not done yet)" if args.resume else "the sweep"
    checks = [f"wall time of {what} {wall:.0f} s (target {LIMIT_S:.0f} s): "
              f"{'met' if wall <= LIMIT_S else 'NOT met'}",
              f"load average before {before}, after {load()}",
              *balance_lines(runs), *targets]  # fmt: skip
    print("\n".join(checks))
    return 1 if status or any("NOT MET" in line or "NOT RUN" in line for line in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
