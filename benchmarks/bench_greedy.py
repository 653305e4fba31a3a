"""greedy at 10,000 × 64 × 8 (target ≤ 50 ms for balanced), beside a bare row argsort of the
same matrix as a yardstick for the machine: `make bench` or
`pytest benchmarks/bench_greedy.py --benchmark-only`."""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign.backends import greedy
from flexmoe.assign.instances import generate


@pytest.fixture(scope="module")
def problem():
    return generate("uniform", 10_000, 64, 8, seed=0)


@pytest.mark.parametrize("method", ["balanced", "topk"])
def test_greedy_10000x64x8(benchmark, problem, method):
    result = benchmark(greedy.solve, problem, method=method)
    assert result.x is not None


def test_yardstick_row_argsort(benchmark, problem):
    benchmark(np.argsort, problem.utility, axis=1)
