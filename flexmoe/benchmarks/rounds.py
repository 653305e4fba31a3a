"""``flexmoe-bench rounds``: federated re-solves per backend, cold against warm.

A federated run re-solves the assignment every round after the fitness moved: the held
pairs' utility takes an EMA step towards the clients' feedback,
``Q ← (1 − β)·Q + β·s`` (:class:`flexmoe.fedloop.fitness.FitnessConfig`'s β), here with
``s`` the instance's own utility plus Gaussian noise, clipped to [0, 1]. Each round every
backend solves the same problem twice, interleaved: cold (``solve(problem, backend)``) and
warm (a session that keeps its state between rounds, where the backend has one), and the
top-k pass over the utilities that no solver can beat (:func:`topk_floor`) is timed
beside them. The next round's problem follows the first backend's cold answer.

    flexmoe-bench rounds --backends flow --size 10000x64x8 --rounds 30 --out results/rounds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.assign import Assignment, AssignmentProblem, solve
from flexmoe.assign.registry import Session
from flexmoe.benchmarks.floor import topk_floor
from flexmoe.benchmarks.options import Size, UsageError, parse_positive, parse_sizes

__all__ = ["RoundsConfig", "RoundsRow", "add_parser", "run_rounds", "topk_floor"]


def warm_session(spec: str) -> Session | None:
    """A :class:`flexmoe.assign.Solver` for `spec` when its backend keeps state between
    solves (declares a session class, as flow and convex do); None otherwise."""
    from flexmoe.assign import Solver, get_backend

    if get_backend(spec.partition(":")[0]).session is None:
        return None
    return Solver(spec)


@dataclass(frozen=True)
class RoundsConfig:
    """What ``flexmoe-bench rounds`` runs."""

    backends: tuple[str, ...] = ("flow",)
    size: Size = field(default_factory=lambda: Size(10_000, 64, 8))
    generator: str = "clustered"
    rounds: int = 30
    seed: int = 0
    beta: float | None = None
    """EMA step; None: the federated loop's default."""
    noise: float = 0.05
    balance_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.rounds < 2:
            raise ValueError(
                f"`rounds` must be >= 2 (the first warm round is cold); got {self.rounds}"
            )


@dataclass
class RoundsRow:
    """One backend's times over the rounds (seconds; the floor measured beside them)."""

    backend: str
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    agree: bool = True
    """Whether warm and cold found the same objective every round (exact backends)."""

    def summary(self) -> dict[str, Any]:
        """Medians over the rounds after the first (the first warm round is cold)."""
        cold, floor = statistics.median(self.cold[1:]), statistics.median(self.floor[1:])
        out: dict[str, Any] = {
            "backend": self.backend,
            "cold_s": cold,
            "floor_s": floor,
            "cold_x_floor": cold / floor,
            "first_s": self.cold[0],
            "statuses": sorted(set(self.statuses)),
            "warm_equals_cold": self.agree,
        }
        if self.warm:
            warm = statistics.median(self.warm[1:])
            out |= {"warm_s": warm, "warm_x_floor": warm / floor, "warm_over_cold": warm / cold}
        return out


def federated(
    problem: AssignmentProblem, config: RoundsConfig
) -> Generator[AssignmentProblem, NDArray[np.bool_], None]:
    """The problems of a federated run: send each round's held pairs (``x``) back with
    ``generator.send(x)`` to get the next problem."""
    from flexmoe.fedloop.fitness import FitnessConfig

    beta = FitnessConfig().beta if config.beta is None else config.beta
    rng = np.random.default_rng(config.seed)
    truth = problem.utility
    utility = np.array(problem.utility, dtype=np.float64)
    while True:
        x = yield problem.replace(utility=utility)
        signal = np.clip(truth + config.noise * rng.standard_normal(truth.shape), 0.0, 1.0)
        utility = np.where(x, (1 - beta) * utility + beta * signal, utility)


def run_rounds(config: RoundsConfig) -> list[RoundsRow]:
    """Time every backend cold and warm on the same federated sequence."""
    from flexmoe.assign.instances import generate

    size = config.size
    base = generate(config.generator, size.n_clients, size.n_experts, size.k, seed=config.seed)
    base = base.replace(balance_penalty=config.balance_penalty)
    rows = [RoundsRow(spec) for spec in config.backends]
    sessions = [warm_session(spec) for spec in config.backends]
    problems = federated(base, config)
    problem = next(problems)
    for _ in range(config.rounds):
        lead: Assignment | None = None
        for row, session in zip(rows, sessions, strict=True):
            cold = _timed(solve, problem, row.backend)
            row.cold.append(cold[1])
            row.statuses.append(str(cold[0].status))
            if session is not None:
                warm = _timed(session.solve, problem)
                row.warm.append(warm[1])
                row.agree &= _same(cold[0], warm[0])
            row.floor.append(topk_floor(problem, repeats=3))
            lead = lead or cold[0]
        if lead is None or lead.x is None:
            raise RuntimeError(f"{config.backends[0]} found no assignment: {lead}")
        problem = problems.send(lead.x)
    return rows


def _timed(fn: Callable[..., Assignment], *args: Any) -> tuple[Assignment, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _same(a: Assignment, b: Assignment) -> bool:
    if a.x is None or b.x is None:
        return a.status == b.status
    return abs(a.objective - b.objective) <= 1e-9 * max(1.0, abs(a.objective))


def table(summaries: list[dict[str, Any]]) -> str:
    """A Markdown table of the summaries."""
    lines = [
        "| backend | cold (s) | × floor | warm (s) | × floor | warm / cold | floor (s) | same |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        warm = (
            f"{s['warm_s']:.4f} | {s['warm_x_floor']:.1f} | {s['warm_over_cold']:.2f}"
            if "warm_s" in s
            else "— | — | —"
        )
        lines.append(
            f"| {s['backend']} | {s['cold_s']:.4f} | {s['cold_x_floor']:.1f} | {warm} "
            f"| {s['floor_s']:.4f} | {'yes' if s['warm_equals_cold'] else 'NO'} |"
        )
    return "\n".join(lines)


# -- the subcommand ------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flexmoe-bench rounds``."""
    p = commands.add_parser(
        "rounds",
        allow_abbrev=False,
        help="federated re-solves per backend, cold vs warm, as multiples of the top-k pass",
        description=(__doc__ or "").split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--backends", default="flow", help="comma-separated specs (flow)")
    p.add_argument("--size", default="10000x64x8", help="NxExK (10000x64x8)")
    p.add_argument("--generator", default="clustered", help="instance kind (clustered)")
    p.add_argument("--rounds", type=int, default=30, help="re-solves (30)")
    p.add_argument("--seed", type=int, default=0, help="instance and noise seed (0)")
    p.add_argument("--beta", type=float, default=None, help="EMA step (the loop's default)")
    p.add_argument("--noise", type=float, default=0.05, help="feedback noise std (0.05)")
    p.add_argument("--balance-penalty", type=float, default=0.0, help="λ (0)")
    p.add_argument("--out", type=Path, default=Path("results/rounds"), help="(results/rounds)")
    p.set_defaults(run=run_command)


def _config(args: argparse.Namespace) -> RoundsConfig:
    from flexmoe.assign.instances import GENERATORS
    from flexmoe.benchmarks.cli import parse_backends

    sizes = parse_sizes(args.size, "--size")
    if len(sizes) != 1:
        raise UsageError("--size", f"expected one NxExK; got {args.size!r}")
    if args.generator not in GENERATORS:
        raise UsageError(
            "--generator", f"expected one of {', '.join(GENERATORS)}; got {args.generator!r}"
        )
    if args.rounds < 2:
        raise UsageError("--rounds", f"expected at least 2; got {args.rounds}")
    parse_positive(args.noise, "--noise") if args.noise else None
    if args.beta is not None and not 0 < args.beta <= 1:
        raise UsageError("--beta", f"expected a step in (0, 1]; got {args.beta}")
    if args.balance_penalty < 0:
        raise UsageError("--balance-penalty", f"expected >= 0; got {args.balance_penalty}")
    return RoundsConfig(
        backends=tuple(parse_backends(args.backends)),
        size=sizes[0],
        generator=args.generator,
        rounds=args.rounds,
        seed=args.seed,
        beta=args.beta,
        noise=args.noise,
        balance_penalty=args.balance_penalty,
    )


def run_command(args: argparse.Namespace, command: str) -> int:
    config = _config(args)
    rows = run_rounds(config)
    summaries = [row.summary() for row in rows]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command,
        "config": asdict(config) | {"size": str(config.size)},
        "summaries": summaries,
        "rows": [asdict(row) for row in rows],
    }
    (out / "rounds.json").write_text(json.dumps(record, indent=1))
    text = table(summaries)
    (out / "rounds.md").write_text(f"`{command}`\n\n{text}\n")
    print(text)
    print(f"\n{config.rounds} rounds → {out}/rounds.json, rounds.md")
    return 0 if all(s["warm_equals_cold"] for s in summaries) else 1
