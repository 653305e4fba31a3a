"""greedy at 10,000 × 64 × 8 (target: ``balanced`` ≤ 50 ms on ``uniform``) on every generated
family, beside a bare row argsort of the same matrix as a yardstick for the machine.

    .venv/bin/pytest benchmarks/bench_greedy.py --benchmark-only \
        --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign.backends import greedy
from flexmoe.assign.instances import GENERATORS, generate

SIZE = (10_000, 64, 8)


@pytest.fixture(scope="module", params=list(GENERATORS))
def problem(request):
    return generate(request.param, *SIZE, seed=0)


@pytest.mark.parametrize("method", ["balanced", "topk"])
def test_greedy_10000x64x8(benchmark, problem, method):
    result = benchmark(greedy.solve, problem, method=method)
    assert result.x is not None
    if method == "balanced":
        assert result.status == "feasible", result.message


def test_yardstick_row_argsort(benchmark):
    utility = generate("uniform", *SIZE, seed=0).utility
    benchmark(np.argsort, utility, axis=1)
