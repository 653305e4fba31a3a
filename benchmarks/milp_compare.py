"""``milp`` of two source trees side by side: time to a certified gap, interleaved.

Each measurement is one fresh process (``--worker``) that imports flexmoe from one tree,
builds one instance and times one ``milp`` solve; the driver alternates the trees
(A B B A ...) over the repeats so that the load of a shared machine falls on both alike,
and prints medians. Each tree is a git revision exported with ``git archive`` (the new
one is the working tree unless ``--new`` names a revision)::

    python benchmarks/milp_compare.py --old 5949caf --repeats 3 \\
        --instance general:1000:64:8:0 --gap 1e-3 --gap 1e-6

An instance is ``kind:N:E:k:seed[:lam[:metric]]``: ``general`` is the storage + compute +
weighted-loads model of ``bench_milp.py``; any other kind is a generator of
:mod:`flexmoe.assign.instances`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def build(spec: str):  # type: ignore[no-untyped-def]
    """The problem named by `spec` (see the module docstring)."""
    from flexmoe.assign.instances import generate

    kind, n, e, k, seed, *rest = spec.split(":")
    extra = {}
    if rest:
        extra["balance_penalty"] = float(rest[0])
    if len(rest) > 1:
        extra["balance_metric"] = rest[1]
    if kind == "general":
        sys.path.insert(0, str(HERE))
        from bench_milp import general

        problem = general(int(n), int(e), int(k), seed=int(seed))
        return problem.replace(**extra) if extra else problem
    return generate(kind, int(n), int(e), int(k), seed=int(seed), **extra)


def worker(source: str, spec: str, gap: float, limit: float) -> None:
    sys.path.insert(0, source)
    from flexmoe.assign.backends import milp

    problem = build(spec)
    tick = time.perf_counter()
    result = milp.solve(problem, mip_gap=gap, time_limit=limit)
    wall = time.perf_counter() - tick
    print(json.dumps({"wall": wall, "status": str(result.status), "objective": result.objective,
                      "bound": result.bound, "gap": result.gap}))  # fmt: skip


def export(revision: str, into: str) -> str:
    """The tree of `revision` (git archive) under `into`."""
    os.makedirs(into, exist_ok=True)
    archive = os.path.join(into, "tree.tar")
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", archive, revision, "flexmoe"],
                   check=True)  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(source: str, spec: str, gap: float, limit: float) -> dict:
    command = [sys.executable, __file__, "--worker", source, spec, str(gap), str(limit)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=limit * 3)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="main", help="git revision of the old tree")
    parser.add_argument("--new", default=None, help="git revision of the new tree")
    parser.add_argument("--instance", action="append", required=True)
    parser.add_argument("--gap", action="append", type=float, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=float, default=120.0, help="time limit per solve (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="milp-old-") as tmp:
        new = str(ROOT) if args.new is None else export(args.new, os.path.join(tmp, "new"))
        trees = {"old": export(args.old, os.path.join(tmp, "old")), "new": new}
        rows = {}
        for r in range(args.repeats):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for spec in args.instance:
                for gap in args.gap:
                    for name in order:
                        got = measure(trees[name], spec, gap, args.limit)
                        rows.setdefault((spec, gap, name), []).append(got)
                        print(f"{spec} gap={gap:g} {name}: {got}", file=sys.stderr, flush=True)
        report(rows, args)


HEADER = "| instance | gap | old (s) | new (s) | new/old | old: status gap | new: status gap |"


def report(rows: dict, args: argparse.Namespace) -> None:
    new = "working tree" if args.new is None else args.new
    print(f"\nmedians of {args.repeats}, interleaved; old = {args.old}, new = {new}")
    print(HEADER)
    print("|---|---|---|---|---|---|---|")
    for spec in args.instance:
        for gap in args.gap:
            old, new = rows[(spec, gap, "old")], rows[(spec, gap, "new")]
            t_old = statistics.median(g["wall"] for g in old)
            t_new = statistics.median(g["wall"] for g in new)
            state = [", ".join(f"{g['status']} {g['gap']:.1e}" for g in s) for s in (old, new)]
            print(f"| {spec} | {gap:g} | {t_old:.2f} | {t_new:.2f} | {t_new / t_old:.2f} | "
                  f"{state[0]} | {state[1]} |")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
