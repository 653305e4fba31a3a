"""flow at 10,000 × 64 × 8 beside the top-k floor it is measured against (issue 14 targets:
cold ≤ 15× the floor, ≤ 30× with a balance penalty λ = 0.01; a warm re-solve ≤ 5×), and
at 100,000 × 128 × 8 (≤ 1.5 s): `make bench`, or

    .venv/bin/pytest benchmarks/bench_flow.py --benchmark-only \\
        --benchmark-columns=median,min,max,rounds --benchmark-group-by=param:problem

Each group holds the floor (``np.argpartition(U, E − k, axis=1)``: every client's top-k)
and the backend on the same problem, so the ratio of their medians is the multiple of the
floor. ``benchmarks/flow_medians.py`` measures the same ratios interleaved, against the
old algorithm, on every instance family, and the memory of the large sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign import AssignmentProblem, Status
from flexmoe.assign.backends import flow
from flexmoe.assign.instances import generate
from flexmoe.benchmarks.rounds import RoundsConfig, federated

SIZE = (10_000, 64, 8)


@pytest.fixture(
    scope="module",
    params=["uniform", "clustered", "clustered-penalty"],
)
def problem(request) -> AssignmentProblem:
    kind, _, penalty = request.param.partition("-")
    p = generate(kind, *SIZE, seed=0)
    return p.replace(balance_penalty=0.01) if penalty else p


def floor(problem: AssignmentProblem) -> None:
    np.argpartition(problem.utility, problem.n_experts - int(problem.max_experts.max()), axis=1)


def test_floor(benchmark, problem):
    benchmark(floor, problem)


def test_flow_cold(benchmark, problem):
    result = benchmark(flow.solve, problem)
    assert result.status is Status.OPTIMAL and result.gap <= 1e-9


def test_flow_warm(benchmark):
    """One re-solve of a federated sequence's round, from the previous round's prices."""
    base = generate("clustered", *SIZE, seed=0)
    problems = federated(base, RoundsConfig())
    first = next(problems)
    sessions: list[flow.FlowSolver] = []

    def setup():
        session = flow.FlowSolver()
        x = session.solve(first).x
        sessions.append(session)
        return (session, problems.send(x)), {}

    result = benchmark.pedantic(lambda s, p: s.solve(p), setup=setup, rounds=7)
    assert result.status is Status.OPTIMAL


@pytest.fixture(scope="module")
def big() -> AssignmentProblem:
    return generate("clustered", 100_000, 128, 8, seed=0)


def test_floor_100000x128x8(benchmark, big):
    benchmark(floor, big)


def test_flow_100000x128x8(benchmark, big):
    result = benchmark.pedantic(flow.solve, (big,), rounds=3, iterations=1)
    assert result.status is Status.OPTIMAL and result.gap <= 1e-9
