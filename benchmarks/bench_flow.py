"""flow at 10,000 × 64 × 8 (target: build + solve ≤ 0.3 s and ≤ 1.5× a bare OR-Tools
``SimpleMinCostFlow`` on the same graph) and at 100,000 × 128 × 8 (target: ≤ 10 s; peak
memory is measured in a subprocess by ``benchmarks/flow_medians.py``): `make bench`, or

    .venv/bin/pytest benchmarks/bench_flow.py --benchmark-only \\
        --benchmark-columns=median,min,max,rounds

``bare`` gets the dense network's arrays built outside the timing (tails, heads,
capacities, int64 costs, supplies: exactly what the backend hands OR-Tools) and times
adding them to a fresh ``SimpleMinCostFlow`` and solving. ``flow`` is the backend as
called by users (pruned candidates + certificate by default), ``flow-dense`` the same
with every pair (``candidates=64``): its ratio to ``bare`` is the backend's overhead.
"""

from __future__ import annotations

import numpy as np
import pytest
from ortools.graph.python import min_cost_flow

from flexmoe.assign import AssignmentProblem, Status
from flexmoe.assign.backends import flow
from flexmoe.assign.instances import generate


def dense_arrays(problem: AssignmentProblem) -> tuple[np.ndarray, ...]:
    """The arrays the backend hands OR-Tools for the network with every pair."""
    network = flow._build_network(problem)
    arcs = flow._network_arcs(network, flow._every_pair(problem))
    return arcs.tails, arcs.heads, arcs.caps, arcs.costs, network.supplies


def bare_ortools(tails, heads, caps, costs, supplies) -> min_cost_flow.SimpleMinCostFlow:
    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    solver.set_nodes_supplies(np.arange(supplies.size, dtype=np.int32), supplies)
    status = solver.solve()
    assert status == solver.OPTIMAL
    return solver


@pytest.fixture(scope="module", params=[0.1, 0.2], ids=["band10", "band20"])
def mid(request) -> AssignmentProblem:
    return generate("uniform", 10_000, 64, 8, seed=0, load_slack=request.param)


@pytest.fixture(scope="module")
def big() -> AssignmentProblem:
    return generate("uniform", 100_000, 128, 8, seed=0, load_slack=0.1)


def test_flow_10000x64x8(benchmark, mid):
    result = benchmark(flow.solve, mid)
    assert result.status is Status.OPTIMAL and result.gap <= 1e-9


def test_flow_dense_10000x64x8(benchmark, mid):
    result = benchmark(flow.solve, mid, candidates=64)
    assert result.status is Status.OPTIMAL and not result.info["pruned"]


def test_bare_ortools_10000x64x8(benchmark, mid):
    arrays = dense_arrays(mid)
    benchmark(bare_ortools, *arrays)


def test_flow_clustered_10000x64x8(benchmark):
    problem = generate("clustered", 10_000, 64, 8, seed=0)
    result = benchmark(flow.solve, problem)
    assert result.status is Status.OPTIMAL


def test_flow_100000x128x8(benchmark, big):
    result = benchmark.pedantic(flow.solve, (big,), rounds=3, iterations=1)
    assert result.status is Status.OPTIMAL and result.gap <= 1e-9
