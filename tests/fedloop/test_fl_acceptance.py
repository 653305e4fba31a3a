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
    # greedy ignores the load: its holder spread stays well above flex's in every round.
    # (It used to leave experts untrained too; with ties broken at random and probes it
    # rarely does: 3 rounds of 30 in 1 seed of 5 of the `default` preset.)
    assert min(greedy.series("holders.cv")) > 0.1
    assert all(g > f + 0.1 for g, f in zip(greedy.series("holders.cv"),
                                            flex.series("holders.cv"), strict=True))  # fmt: skip
