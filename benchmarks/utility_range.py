"""The utility range on which each backend's certificate holds, measured (plain script).

    .venv/bin/python benchmarks/utility_range.py [--problems 30] [--step 10]

Small problems (N·E ≤ 10: count and weighted loads, storage and compute rows, a mask,
churn, variance and range penalties; seeded) are scaled by 10^k — utilities, λ and μ
alike — for k from -323 (subnormal) to the largest that keeps every objective finite,
and solved by every backend. Each answer is compared with a brute force over all
assignments of the scaled problem (numpy, no library code). Per backend and scale:

* exact backends are ``ok`` when every problem they take is ``OPTIMAL`` at the
  brute-force optimum (relative 1e-6 of the larger of it and the largest utility), or
  ``INFEASIBLE`` when the brute force finds nothing;
* heuristics (and convex) are ``ok`` when they never claim ``OPTIMAL``, and every answer
  is feasible, at most the optimum, and under a bound at least the optimum;
* anything else is counted by what happened (``FEASIBLE: no certificate``, an error...).

Prints, per backend, the range of k where every problem was ``ok`` and what happened
outside it.
"""

from __future__ import annotations

import argparse
import collections
import itertools

import numpy as np

from flexmoe.assign import (
    AssignmentProblem,
    InvalidProblemError,
    Status,
    UnsupportedProblemError,
    registered_backends,
    solve,
)

SPECS = ("flow", "flow:networkx", "milp", "milp:scipy", "milp:pulp", "convex", "greedy")
TOL = 1e-6


def problems(count: int, seed: int = 0) -> list[AssignmentProblem]:
    """`count` small feasible-or-not problems with every feature at random."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        n, e = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        hi = rng.integers(1, e + 1, n)
        kw: dict = {"max_experts": hi, "min_experts": np.where(rng.random(n) < 0.5, hi, 0)}
        kw["load_max"] = rng.integers(1, n + 1, e).astype(float)
        if rng.random() < 0.3:
            kw["load_weight"] = rng.integers(0, 4, (n, e)) / 2
        if rng.random() < 0.3:
            kw["compute_cost"] = rng.integers(0, 3, (n, e)).astype(float)
            kw["compute_budget"] = rng.integers(1, 5, n).astype(float)
        if rng.random() < 0.2:
            kw["allowed"] = rng.random((n, e)) < 0.8
        if rng.random() < 0.2:
            kw["previous"], kw["switch_cost"] = rng.random((n, e)) < 0.5, 0.5
        if rng.random() < 0.5:
            kw["balance_penalty"] = float(rng.choice([0.1, 1.0]))
            kw["balance_metric"] = str(rng.choice(["variance", "range"]))
        utility = np.round(rng.normal(size=(n, e)) * 2, 2)
        out.append(AssignmentProblem(utility, **kw))
    return out


def brute_force(p: AssignmentProblem) -> float | None:
    """The optimum by enumeration (None if infeasible), from the raw fields only."""
    n, e = p.shape
    w = np.ones((n, e)) if p.load_weight is None else p.load_weight
    best = None
    for bits in itertools.product((False, True), repeat=n * e):
        x = np.array(bits).reshape(n, e)
        held = x.sum(axis=1)
        if (held < p.min_experts).any() or (held > p.max_experts).any():
            continue
        if p.allowed is not None and (x & ~p.allowed).any():
            continue
        if any(((x * row.cost).sum(axis=1) > row.limit + 1e-9).any() for row in p.budgets):
            continue
        loads = (x * w).sum(axis=0)
        if (loads < p.load_min - 1e-9).any() or (loads > p.load_max + 1e-9).any():
            continue
        value = float((x * p.utility).sum())
        if p.balance_penalty:
            spread = (
                ((loads - loads.mean()) ** 2).sum()
                if p.balance_metric == "variance"
                else loads.max() - loads.min()
            )
            value -= p.balance_penalty * spread
        if p.previous is not None:
            value -= p.switch_cost * float((x & ~p.previous).sum())
        best = value if best is None else max(best, value)
    return best


def verdict(spec: str, problem: AssignmentProblem, optimum: float | None) -> str:
    """``ok``, ``unsupported`` or what went wrong."""
    exact = registered_backends()[spec.partition(":")[0]].exact
    try:
        r = solve(problem, spec, seed=0)
    except UnsupportedProblemError:
        return "unsupported"
    except Exception as err:  # a crash is a finding
        return f"raised {type(err).__name__}"
    tol = TOL * max(abs(optimum or 0.0), float(np.abs(problem.utility).max()))
    if optimum is None:
        wanted = Status.INFEASIBLE if exact else None
        if r.has_solution:
            return f"{r.status} on an infeasible problem"
        return "ok" if wanted is None or r.status is wanted else f"{r.status}: {r.message[:60]}"
    if r.status is Status.OPTIMAL and abs(r.objective - optimum) > tol:
        return "OPTIMAL at a wrong objective"
    if exact and r.status is not Status.OPTIMAL:
        return f"{r.status}" + (": no certificate" if "no certificate" in r.message else "")
    if not exact and r.status is Status.OPTIMAL:
        return "a heuristic claims OPTIMAL"
    if r.has_solution and (r.objective > optimum + tol or r.bound < optimum - tol):
        return "objective above the optimum or bound below it"
    return "ok" if r.has_solution or not exact else f"{r.status}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--step", type=int, default=10)
    parser.add_argument("--specs", nargs="+", default=list(SPECS))
    args = parser.parse_args(argv)
    base = problems(args.problems)
    exponents = sorted({-323, -320, -310, -308, -300, -290, -285, -280, 300, 305, 306, 307}
                       | set(range(-300, 301, args.step)))  # fmt: skip
    table: dict[str, dict[int, collections.Counter[str]]] = collections.defaultdict(dict)
    for k in exponents:
        factor = 10.0**k
        scaled = []
        for p in base:
            try:
                scaled.append(
                    p.replace(
                        utility=p.utility * factor,
                        balance_penalty=p.balance_penalty * factor,
                        switch_cost=p.switch_cost * factor,
                    )
                )
            except InvalidProblemError:  # an objective beyond float64: refused, by design
                continue
        optima = [brute_force(p) for p in scaled]
        for spec in args.specs:
            tally = collections.Counter(
                verdict(spec, p, o) for p, o in zip(scaled, optima, strict=True)
            )
            tally.pop("unsupported", None)
            table[spec][k] = tally
        print(f"k = {k:+d}: {len(scaled)} problems", flush=True)
    report(table, exponents, len(base))


def report(table: dict, exponents: list[int], count: int) -> None:
    print("\nper backend: the scales 10^k on which every problem was ok")
    for spec, by_k in table.items():
        good = [k for k in exponents if set(by_k[k]) <= {"ok"} and by_k[k]]
        outside = collections.Counter()
        for k in exponents:
            if k not in good:
                outside.update(
                    {f"{what} (k={k:+d})": n for what, n in by_k[k].items() if what != "ok"}
                )
        lo, hi = (min(good), max(good)) if good else (None, None)
        print(f"  {spec:<14} ok for k in [{lo}, {hi}] ({len(good)}/{len(exponents)} scales)")
        for what, n in sorted(outside.items())[:12]:
            print(f"      {n:>3} × {what}")


if __name__ == "__main__":
    main()
