"""20 clients × 10 rounds on the in-process engine and as a Flower App on Flower's
simulation runtime, side by side in one session:
`pytest benchmarks/bench_engines.py --benchmark-only --benchmark-columns=median,min,max,rounds`
(three runs of each).

The two give the same history (checked). The Flower run's time is all of ``run_flower``:
starting its SuperLink, the simulation process and a private local Ray instance (one CPU
per client), the rounds, and stopping them; the local run's is ``run(config)`` with one
torch thread (``flexmoe train``'s default).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from flexmoe.fedloop import FedConfig, History, run

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")

from flexmoe.flower import run_flower

CONFIG = FedConfig(clients=20, rounds=10, seed=0)
HISTORIES: dict[str, History] = {}


def _local() -> History:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(CONFIG)
    finally:
        torch.set_num_threads(saved)


def _flower() -> History:
    return run_flower(CONFIG)


@pytest.mark.parametrize("engine", ["local", "flower"])
def test_engine(benchmark, engine: str) -> None:  # type: ignore[no-untyped-def]
    history = benchmark.pedantic(_local if engine == "local" else _flower, rounds=3,
                                 iterations=1)  # fmt: skip
    HISTORIES[engine] = history
    assert len(history.rounds) == CONFIG.rounds
    if len(HISTORIES) == 2:
        assert HISTORIES["local"].without_timings() == HISTORIES["flower"].without_timings()
