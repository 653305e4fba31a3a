"""The largest time-limit overrun of every backend: many limited solves, worst ``wall − limit``.

    .venv/bin/python benchmarks/time_limits.py [--limits 0.05 0.3 1] [--repeats 1] [--quick]

Every solve goes through :func:`flexmoe.assign.solve` with ``time_limit=...`` and is timed
around the call, in one process and one after the other: a solve abandoned at its limit
(:mod:`flexmoe.assign.deadline`) keeps running in the background and competes with the
next ones, which is the worst case the promise (an answer by the limit + 1 s) must
survive. The instances:

* the reproducer of issue 13, item 4 (:func:`flexmoe.assign.testing.overrunning_instance`:
  170 × 14, compute rows, a variance term, utilities of 3e7): HiGHS 1.16 ran 10-12 s past
  a 1 s limit in its root separation;
* the generator's kinds at sizes where the exact backends do not finish in the limits:
  ``heterogeneous`` (storage and compute rows), ``weighted`` (weighted loads, variance),
  ``clustered`` with a range penalty, ``uniform`` (flow's structure, large).

Prints, per backend, the solves, the worst ``wall − limit`` (and where), how many were
abandoned, and the statuses; then the worst over every backend. Exit status 1 when some
solve broke the promise. With ``--isolated`` every solve runs in a fresh process (after
a warm-up solve there, so imports are not counted): the overrun of one call, without
earlier abandoned solves sharing the interpreter.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time

import numpy as np

from flexmoe.assign import AssignmentProblem, UnsupportedProblemError, solve
from flexmoe.assign.deadline import PROMISE
from flexmoe.assign.instances import generate
from flexmoe.assign.testing import overrunning_instance

SPECS = ("flow", "flow:networkx", "milp", "milp:scipy", "milp:pulp", "convex", "greedy")


def instances(quick: bool) -> list[AssignmentProblem]:
    scale = 1 if quick else 2
    return [
        overrunning_instance(),
        generate("heterogeneous", 300 * scale, 32, 4, seed=1),
        generate("weighted", 200 * scale, 24, 3, seed=2, balance_penalty=0.05),
        generate(
            "clustered", 300 * scale, 32, 4, seed=3, balance_penalty=0.5, balance_metric="range"
        ),
        generate("uniform", 2000 * scale, 64, 8, seed=4),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limits", type=float, nargs="+", default=[0.05, 0.3, 1.0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smaller instances")
    parser.add_argument("--specs", nargs="+", default=list(SPECS))
    parser.add_argument("--isolated", action="store_true", help="a fresh process per solve")
    parser.add_argument("--one", nargs=3, metavar=("INSTANCE", "SPEC", "LIMIT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    problems = instances(args.quick)
    if args.one:
        return child(problems, *args.one)
    worst: dict[str, tuple[float, str]] = {}
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for _ in range(args.repeats):
        for index, problem in enumerate(problems):
            for limit in args.limits:
                for spec in args.specs:
                    if args.isolated:
                        over = isolated(index, spec, limit, args.quick, counts[spec])
                    else:
                        over = run(problem, spec, limit, counts[spec])
                    if over is not None and over > worst.get(spec, (-np.inf, ""))[0]:
                        worst[spec] = (over, f"{problem.name}, limit {limit:g} s")
    where = "a fresh process per solve" if args.isolated else "solves in one process"
    print(f"worst wall − limit per backend (promise: ≤ {PROMISE:g} s; {where})")
    for spec in args.specs:
        if spec in worst:
            over, where = worst[spec]
            tally = ", ".join(f"{n} {s}" for s, n in sorted(counts[spec].items()))
            print(f"  {spec:<14} {over:+.3f} s  ({where})   {tally}")
    overall = max(over for over, _ in worst.values())
    print(f"worst over every backend: {overall:+.3f} s")
    return 0 if overall <= PROMISE else 1


def run(
    problem: AssignmentProblem, spec: str, limit: float, tally: collections.Counter
) -> float | None:
    """One limited solve: its ``wall − limit`` (None when the backend does not take the
    problem), its status counted in `tally`."""
    start = time.perf_counter()
    try:
        result = solve(problem, spec, time_limit=limit, seed=0)
    except UnsupportedProblemError:
        return None
    wall = time.perf_counter() - start
    tally[str(result.status)] += 1
    if result.info.get("abandoned"):
        tally["(abandoned)"] += 1
    return wall - limit


def isolated(
    index: int, spec: str, limit: float, quick: bool, tally: collections.Counter
) -> float | None:
    """:func:`run` in a fresh process (see :func:`child`)."""
    command = [sys.executable, __file__, "--one", str(index), spec, str(limit)]
    out = subprocess.run(command + (["--quick"] if quick else []), capture_output=True,
                         text=True, check=True)  # fmt: skip
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    tally.update(answer["tally"])
    return answer["over"]


def child(problems: list[AssignmentProblem], index: str, spec: str, limit: str) -> int:
    """One limited solve after a warm-up (imports, first compilations), as JSON."""
    problem = problems[int(index)]
    try:
        solve(generate("uniform", 20, 4, 2, seed=0), spec, time_limit=30)
    except UnsupportedProblemError:
        pass
    tally: collections.Counter[str] = collections.Counter()
    over = run(problem, spec, float(limit), tally)
    print(json.dumps({"over": over, "tally": dict(tally)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
