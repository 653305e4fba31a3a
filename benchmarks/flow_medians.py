"""Medians of the flow backend's speed targets, measured side by side (plain script).

    .venv/bin/python benchmarks/flow_medians.py [--rounds 15] [--big-rounds 3] [--dense-big]

10,000 × 64 × 8 (uniform, bands ±10 % and ±20 %): the backend (``flow``: pruned
candidates + certificate), the backend on every pair (``flow-dense``) and a bare OR-Tools
``SimpleMinCostFlow`` on the dense network's arrays built outside the timing (``bare``),
interleaved round by round so that the machine's noise hits all three alike. Times are
wall-clock of the call (build + solve + extraction for the backend).

100,000 × 128 × 8 (uniform, ±10 %): each run in a fresh subprocess that reports its wall
time and peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``); the problem alone
(generation + validation) is reported too, as the floor the backend adds to.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_flow import bare_ortools, dense_arrays

from flexmoe.assign.backends import flow
from flexmoe.assign.instances import generate


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def mid(rounds: int) -> None:
    for slack in (0.1, 0.2):
        problem = generate("uniform", 10_000, 64, 8, seed=0, load_slack=slack)
        arrays = dense_arrays(problem)
        result = flow.solve(problem)  # warm-up, and the figures to report
        times: dict[str, list[float]] = {"flow": [], "flow-dense": [], "bare": []}
        for _ in range(rounds):
            times["flow"].append(timed(flow.solve, problem))
            times["flow-dense"].append(timed(flow.solve, problem, candidates=64))
            times["bare"].append(timed(bare_ortools, *arrays))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"10,000 × 64 × 8, band ±{slack * 100:.0f} %, {rounds} interleaved rounds (median s):"
        )
        for name, value in med.items():
            print(f"  {name:<11} {value:.3f}   (min {min(times[name]):.3f})")
        print(
            f"  flow / bare = {med['flow'] / med['bare']:.2f}, "
            f"flow-dense / bare = {med['flow-dense'] / med['bare']:.2f}; "
            f"flow: {result.info['arcs']} arcs, {result.info['solves']} solve(s), "
            f"gap {result.gap:.1e}"
        )


def child(kind: str, candidates: int | None) -> None:
    start = time.perf_counter()
    problem = generate("uniform", 100_000, 128, 8, seed=0, load_slack=0.1)
    made = time.perf_counter()
    report: dict = {"generate_s": made - start}
    if kind == "solve":
        result = flow.solve(problem, candidates=candidates)
        report |= {
            "wall_s": time.perf_counter() - made,
            "build_s": result.build_time,
            "solve_s": result.solve_time,
            "status": str(result.status),
            "gap": result.gap,
            "info": result.info,
        }
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(report))


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def big(rounds: int, dense: bool) -> None:
    floor = run_child("problem")
    print(f"100,000 × 128 × 8, band ±10 %: problem alone peaks at {floor['peak_rss_gib']:.2f} GiB")
    runs = [run_child("solve") for _ in range(rounds)]
    walls = [r["wall_s"] for r in runs]
    last = runs[-1]
    print(
        f"  flow        median {statistics.median(walls):.2f} s over {rounds} subprocess runs "
        f"(min {min(walls):.2f}); build {last['build_s']:.2f} s, solve {last['solve_s']:.2f} s; "
        f"peak RSS {max(r['peak_rss_gib'] for r in runs):.2f} GiB; {last['status']}, "
        f"gap {last['gap']:.1e}, {last['info']['arcs']} arcs, {last['info']['solves']} solve(s)"
    )
    if dense:
        r = run_child("solve", "--candidates", "128")
        print(
            f"  flow-dense  {r['wall_s']:.2f} s (build {r['build_s']:.2f}, solve "
            f"{r['solve_s']:.2f}); peak RSS {r['peak_rss_gib']:.2f} GiB; {r['status']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--big-rounds", type=int, default=3)
    parser.add_argument("--dense-big", action="store_true", help="also every pair at 100k")
    parser.add_argument("--child", choices=["problem", "solve"], help=argparse.SUPPRESS)
    parser.add_argument("--candidates", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.candidates)
        return
    mid(args.rounds)
    big(args.big_rounds, args.dense_big)


if __name__ == "__main__":
    main()
