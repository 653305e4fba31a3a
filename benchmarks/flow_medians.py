"""The flow backend as multiples of the top-k floor, the old algorithm beside the new one.

    .venv/bin/python benchmarks/flow_medians.py [--repeats 7] [--old-ref 7737a11]
        [--rounds 30] [--big] [--huge] [--families uniform,clustered,...] [--json FILE]
        [--clock wall|cpu] [--dense]

The floor is one ``np.argpartition(U, E − k, axis=1)`` pass over the utilities (each
client's top-k: what no assignment solver can beat), timed in the same run, interleaved
with the solvers, so that the machine's noise hits all alike; every figure is a median of
`--repeats` (at least 5) and its multiple of the floor is the ratio of medians. "old" is
``flexmoe/assign/backends/flow.py`` as it was at `--old-ref` (prune + certify, before
issue 14), loaded from git into this process; "new" is the current backend
(``strategy="prices"``); "dense" (``--dense``) the current backend on every pair.

1. Cold, 10,000 × 64 × 8 (±10 % band), every instance family of
   :mod:`flexmoe.assign.instances`: uniform and clustered as generated, also with a balance
   penalty λ = 0.01; heterogeneous and weighted are outside the flow structure (both old
   and new decline them), so their count-load projection is timed instead (storage,
   compute and load weights dropped, a ±10 % count band): per-client tiers of 2/4/8
   experts, the path where clients do not all hold the same number.
2. Warm, 10,000 × 64 × 8 clustered: a federated sequence of `--rounds` problems (the EMA
   of ``flexmoe-bench rounds``); per round old (cold: it keeps nothing), new cold and new
   warm (:class:`~flexmoe.assign.backends.flow.FlowSolver`), medians after round 1.
3. ``--big``: 100,000 × 128 × 8, uniform and clustered, new and old, each run in a fresh
   subprocess: wall time, and peak RSS above the RSS before the solve (the kernel's peak
   counter is reset first), i.e. the memory the solve needs on top of the problem.
4. ``--huge``: 1,000,000 × 256 × 8 (U alone is 1.9 GiB), uniform and clustered, new only,
   one subprocess each (run it alone, under ``nice``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from flexmoe.assign import AssignmentProblem
from flexmoe.assign.backends import flow
from flexmoe.assign.instances import generate, load_band

REPO = Path(__file__).resolve().parent.parent
SIZE = (10_000, 64, 8)
#: The clock of every figure: wall time, or (``--clock cpu``) the CPU time of this process,
#: which other jobs on a shared machine disturb far less (every solver here is one thread).
CLOCK = time.perf_counter


def topk_floor(problem: AssignmentProblem) -> float:
    """Seconds of one top-k pass: ``np.argpartition(U, E − k, axis=1)`` (the floor of
    ``flexmoe-bench``, :func:`flexmoe.benchmarks.floor.topk_floor`), on this script's
    `CLOCK` (wall or CPU time) so that it compares with the solves timed beside it."""
    k = int(problem.max_experts.max())
    start = CLOCK()
    np.argpartition(problem.utility, problem.n_experts - k, axis=1)
    return CLOCK() - start


def old_flow(ref: str) -> ModuleType:
    """The flow backend module at git revision `ref`, imported under its own name."""
    source = subprocess.run(
        ["git", "show", f"{ref}:flexmoe/assign/backends/flow.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.gettempdir()) / f"flexmoe_flow_{ref}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"flexmoe_flow_{ref}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def families() -> dict[str, AssignmentProblem]:
    """The 10,000 × 64 × 8 instances of part 1, by label."""
    out: dict[str, AssignmentProblem] = {}
    for kind in ("uniform", "clustered"):
        p = generate(kind, *SIZE, seed=0)
        out[kind] = p
        out[f"{kind} λ=0.01"] = p.replace(balance_penalty=0.01)
    tiers = generate("heterogeneous", *SIZE, seed=0)
    lo, hi = load_band(tiers.max_experts.sum() / SIZE[1], 0.1, SIZE[1])
    out["heterogeneous (counts)"] = tiers.replace(
        expert_size=None, storage=None, compute_cost=None, compute_budget=None,
        load_min=lo, load_max=hi,
    )  # fmt: skip
    weighted = generate("weighted", *SIZE, seed=0)
    lo, hi = load_band(SIZE[0] * SIZE[2] / SIZE[1], 0.1, SIZE[1])
    out["weighted (counts)"] = weighted.replace(load_weight=None, load_min=lo, load_max=hi)
    return out


def interleaved(
    problem: AssignmentProblem, solvers: dict[str, Callable[[], Any]], repeats: int
) -> dict[str, list[float]]:
    """Seconds of every solver and of the floor, `repeats` times, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in ["floor", *solvers]}
    for fn in solvers.values():  # warm-up (imports, first allocations)
        fn()
    for _ in range(repeats):
        times["floor"].append(topk_floor(problem))
        for name, fn in solvers.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return times


def report(label: str, times: dict[str, list[float]], notes: str = "") -> dict[str, Any]:
    med = {name: statistics.median(values) for name, values in times.items()}
    floor = med["floor"]
    cells = "  ".join(
        f"{name} {value * 1e3:8.1f} ms = {value / floor:6.1f}×"
        for name, value in med.items()
        if name != "floor"
    )
    print(f"{label:<26} floor {floor * 1e3:6.2f} ms  {cells}  {notes}", flush=True)
    return {"label": label, "median_s": med, "x_floor": {k: v / floor for k, v in med.items()}}


def cold(
    old: ModuleType, repeats: int, labels: list[str] | None, dense: bool
) -> list[dict[str, Any]]:
    print(f"\n1. cold, {'×'.join(map(str, SIZE))}, medians of {repeats} (interleaved)")
    rows = []
    for label, p in families().items():
        if labels and label.split(" ")[0] not in labels:
            continue
        new = flow.solve(p)
        was = old.solve(p)
        assert abs(new.objective - was.objective) <= 1e-9 * abs(was.objective), label
        solvers = {"new": lambda p=p: flow.solve(p), "old": lambda p=p: old.solve(p)}
        if dense:
            solvers["dense"] = lambda p=p: flow.solve(p, strategy="dense")
        times = interleaved(p, solvers, repeats)
        notes = (
            f"new: {new.info['solves']} flow(s), {new.info['contested']} contested, "
            f"{new.info['arcs']} arcs, {new.info['price_rounds']} price rounds, gap "
            f"{new.gap:.1e}; old: {was.info['solves']} solve(s), {was.info['arcs']} arcs"
        )
        rows.append(report(label, times, notes) | {"new_info": _info(new.info)})
    return rows


def warm(old: ModuleType, rounds: int) -> dict[str, Any]:
    from flexmoe.benchmarks.rounds import RoundsConfig, federated

    print(f"\n2. warm, clustered {'×'.join(map(str, SIZE))}, {rounds} federated rounds")
    base = generate("clustered", *SIZE, seed=0)
    problems = federated(base, RoundsConfig(rounds=rounds))
    problem = next(problems)
    session = flow.FlowSolver()
    flow.solve(problem), old.solve(problem)  # warm-up
    times: dict[str, list[float]] = {"floor": [], "new warm": [], "new cold": [], "old": []}
    for _ in range(rounds):
        times["floor"].append(topk_floor(problem))
        for name, fn in (
            ("new warm", lambda: session.solve(problem)),  # noqa: B023
            ("new cold", lambda: flow.solve(problem)),  # noqa: B023
            ("old", lambda: old.solve(problem)),  # noqa: B023
        ):
            start = CLOCK()
            result = fn()
            times[name].append(CLOCK() - start)
            if name == "new warm":
                x, objective = result.x, result.objective
            elif name == "old":
                assert abs(result.objective - objective) <= 1e-9 * abs(objective)
        problem = problems.send(x)
    later = {name: values[1:] for name, values in times.items()}
    note = "(new warm: FlowSolver.solve; like the cold rows, no precheck or verifier)"
    return report("clustered, rounds 2..", later, note)


def child(kind: str, n: int, e: int, which: str, ref: str) -> None:
    """One solve in this process; prints JSON: wall time and memory above the problem."""
    problem = generate(kind, n, e, 8, seed=0)
    module = flow if which == "new" else old_flow(ref)
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS counter
    start = time.perf_counter()
    result = module.solve(problem)
    wall = time.perf_counter() - start
    peak = _status("VmHWM")
    print(
        json.dumps(
            {
                "wall_s": wall,
                "above_gib": peak - before,
                "u_gib": problem.utility.nbytes / 2**30,
                "status": str(result.status),
                "gap": result.gap,
                "info": _info(result.info),
            }
        )
    )


def _status(key: str) -> float:
    """A ``/proc/self/status`` size, GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 2**20
    raise KeyError(key)


def _info(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k != "prices"}


def big(sizes: list[tuple[int, int]], which: list[str], ref: str) -> list[dict[str, Any]]:
    rows = []
    for n, e in sizes:
        print(f"\n{'3' if n < 10**6 else '4'}. {n:,} × {e} × 8, each in a fresh subprocess")
        for kind in ("uniform", "clustered"):
            for version in which:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", kind, str(n), str(e), version, ref],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"  {kind:<10} {version:<4} {r['wall_s']:7.2f} s, memory above U "
                    f"{r['above_gib']:.2f} GiB ({r['above_gib'] / r['u_gib']:.2f} × U = "
                    f"{r['u_gib']:.2f} GiB), {r['status']}, gap {r['gap']:.1e}",
                    flush=True,
                )
                rows.append({"n": n, "e": e, "kind": kind, "version": version} | r)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="medians of (7, at least 5)")
    parser.add_argument("--old-ref", default="7737a11", help="git revision of the old flow")
    parser.add_argument("--rounds", type=int, default=30, help="federated rounds (30)")
    parser.add_argument("--families", help="only these (uniform,clustered,heterogeneous,...)")
    parser.add_argument("--dense", action="store_true", help="also every pair (slow)")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-warm", action="store_true")
    parser.add_argument("--big", action="store_true", help="100,000 × 128 × 8, new and old")
    parser.add_argument("--huge", action="store_true", help="1,000,000 × 256 × 8, new only")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="(wall)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n, e, which, ref = args.child
        child(kind, int(n), int(e), which, ref)
        return
    if args.repeats < 5:
        parser.error("--repeats: medians need at least 5")
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    old = old_flow(args.old_ref)
    record: dict[str, Any] = {"old_ref": args.old_ref, "repeats": args.repeats, "clock": args.clock}
    print(f"clock: {args.clock} ({'CPU time of this process' if args.clock == 'cpu' else 'wall'})")
    labels = args.families.split(",") if args.families else None
    if not args.skip_cold:
        record["cold"] = cold(old, args.repeats, labels, args.dense)
    if not args.skip_warm:
        record["warm"] = warm(old, args.rounds)
    if args.big:
        record["big"] = big([(100_000, 128)], ["new", "old"], args.old_ref)
    if args.huge:
        record["huge"] = big([(1_000_000, 256)], ["new"], args.old_ref)
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
