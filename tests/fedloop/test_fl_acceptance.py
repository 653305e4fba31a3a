"""The acceptance figures that are cheap enough to check: load balance on digits (slow)."""

from __future__ import annotations

import pytest

from flexmoe.fedloop import FedConfig, run

DIGITS = FedConfig(dataset="digits", partition="dirichlet:0.3", clients=20, experts=8,
                   capacity="2", rounds=30, seed=0)  # fmt: skip


@pytest.mark.slow
def test_flex_is_balanced_every_round_and_greedy_is_not() -> None:
    flex = run(DIGITS, threads=1)
    assert max(flex.series("holders.cv")) <= 0.05
    assert all(n == 0 for n in flex.series("never_trained"))
    assert flex.final()["assign_time_share"] <= 0.02
    greedy = run(DIGITS.replace(method="greedy"), threads=1)
    assert min(greedy.series("holders.cv")) > 0.1
    assert sum(n > 0 for n in greedy.series("never_trained")) > 0
