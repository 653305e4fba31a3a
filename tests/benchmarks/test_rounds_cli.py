"""``flexmoe-bench rounds``: federated re-solves, cold against warm, beside the floor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexmoe.assign.instances import generate
from flexmoe.benchmarks.cli import main
from flexmoe.benchmarks.options import Size
from flexmoe.benchmarks.rounds import RoundsConfig, federated, run_rounds, topk_floor


def test_rounds_writes_medians_and_multiples_of_the_floor(tmp_path, capsys):
    out = tmp_path / "rounds"
    status = main(
        ["rounds", "--backends", "flow,greedy", "--size", "300x12x3", "--rounds", "3",
         "--out", str(out)]
    )  # fmt: skip
    assert status == 0
    record = json.loads((out / "rounds.json").read_text())
    flow, greedy = record["summaries"]
    assert flow["backend"] == "flow" and flow["warm_equals_cold"] is True
    assert flow["warm_s"] > 0 and flow["warm_x_floor"] == flow["warm_s"] / flow["floor_s"]
    assert "warm_s" not in greedy  # no session: cold only
    assert len(record["rows"][0]["cold"]) == 3
    printed = capsys.readouterr().out
    assert "| flow |" in printed and "| greedy |" in printed and "—" in printed


def test_federated_moves_only_the_held_pairs():
    base = generate("clustered", 50, 6, 2, seed=1)
    problems = federated(base, RoundsConfig(rounds=2, beta=0.5, noise=0.1))
    first = next(problems)
    x = np.zeros(first.shape, dtype=bool)
    x[:, 0] = True
    second = problems.send(x)
    moved = second.utility != first.utility
    assert moved[:, 0].any() and not moved[:, 1:].any()


def test_warm_and_cold_agree_over_the_rounds():
    config = RoundsConfig(size=Size(400, 16, 4), rounds=4, balance_penalty=0.01)
    (row,) = run_rounds(config)
    assert row.agree and len(row.warm) == len(row.cold) == 4
    assert set(row.statuses) == {"optimal"}


def test_floor_is_one_top_k_pass():
    p = generate("uniform", 200, 16, 4, seed=0)
    assert 0 < topk_floor(p, repeats=3) < 1.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "10x4"], "--size: expected NxExK"),
        (["--rounds", "1"], "--rounds: expected at least 2; got 1"),
        (["--generator", "odd"], "--generator: expected one of"),
        (["--beta", "1.5"], "--beta: expected a step in (0, 1]; got 1.5"),
        (["--backends", "nope"], "--backends"),
    ],
)
def test_bad_flags_name_themselves(tmp_path, capsys, argv, message):
    assert main(["rounds", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
