"""`flexmoe-bench fl`, `report` and `demo`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bench_support import (  # fixtures
    instances_fixture,  # noqa: F401
    isolated_registry_fixture,  # noqa: F401
    plugin_fixture,  # noqa: F401
)

from flexmoe.benchmarks.cli import main
from flexmoe.benchmarks.fl import FlRun, fl_row, summarise_fl
from flexmoe.benchmarks.plots import PNG_SIGNATURE


def _round(acc: float, cv: float) -> dict[str, object]:
    return {
        "personalized_acc": acc,
        "global_acc": acc / 2,
        "holders": {"cv": cv},
        "routed": {"cv": 2 * cv},
        "bytes_down": [100, 200],
        "bytes_up": [100, 0],
        "time": {"assign": 0.5},
    }


def test_fl_row_headline_figures():
    history = {
        "config": {"method": "flex", "partition": "iid", "seed": 3},
        "rounds": [_round(0.5, 0.0), _round(0.85, 0.2), _round(0.9, 0.1)],
    }
    row = fl_row(history, 0.8, 12.0, "runs/x.json")
    assert (row.method, row.partition, row.seed, row.rounds) == ("flex", "iid", 3, 3)
    assert row.personalized_acc == 0.9 and row.global_acc == 0.45
    assert row.rounds_to_target == 2
    assert row.bytes_moved == 3 * 400
    assert math.isclose(row.load_cv, 0.1) and math.isclose(row.routed_cv, 0.2)


def test_fl_summary_mean_std_and_rounds_to_target():
    def run(seed: int, acc: float, reached: int | None) -> FlRun:
        return FlRun("flex", "iid", seed, 5, acc, acc, 0.0, 0.0, reached, 10, 0.1, 1.0, "")

    (summary,) = summarise_fl([run(0, 0.8, 3), run(1, 0.6, None), run(2, 0.7, 5)])
    assert math.isclose(summary.personalized_acc, 0.7)
    assert math.isclose(summary.personalized_std, 0.1)
    assert summary.rounds_to_target == "4 (2/3)"


def test_fl_end_to_end_then_report(tmp_path, plugin, capsys):
    """One worker process runs both jobs; `flex` on a crashing plugin backend fails (and
    fails the exit status) while `random` completes and is reported."""
    out = tmp_path / "fl"
    status = main(["fl", "--methods", "flex,random", "--partitions", "kclass:2", "--seeds", "0",
                   "--clients", "4", "--experts", "4", "--rounds", "1", "--jobs", "1",
                   "--plugin", plugin, "--backend", "t_crash", "--out", str(out),
                   "--no-progress"])  # fmt: skip
    assert status == 1
    flex, rand = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert (flex["method"], flex["partition"]) == ("flex", "shards:2")
    assert "RuntimeError: deliberate failure" in flex["error"]
    assert (rand["method"], rand["error"]) == ("random", "")
    assert 0 <= rand["personalized_acc"] <= 1 and rand["bytes_moved"] > 0
    for name in ("accuracy_vs_round.png", "load_cv_vs_round.png", "expert_load.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    captured = capsys.readouterr()
    assert "personalised acc" in captured.out
    assert "error: flex / shards:2 / seed 0 failed: RuntimeError: deliberate failure" in (
        captured.err
    )

    report = tmp_path / "doc" / "report.md"
    assert main(["report", str(out), "-o", str(report)]) == 0
    text = report.read_text()
    assert "## Federated policies" in text and "| random | shards:2 | 1 |" in text
    assert "![accuracy vs round](../fl/accuracy_vs_round.png)" in text


def test_report_of_a_solver_folder(tmp_path, plugin, instances):
    out = tmp_path / "solvers"
    assert main(["solvers", "--plugin", plugin, "--instances", str(instances), "--backends",
                 "t_favourite", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert main(["report", str(out), "-o", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "## Assignment backends" in text and "| t_favourite | eye3 |" in text
    assert "![solve time](solvers/solve_time.png)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "flex,best"], "--methods: unknown 'best'; valid: flex, greedy"),
        (["--partitions", "kclass:x"], "--partitions: bad partition 'kclass:x'"),
        (["--clients", "0"], "--clients: must be >= 1; got 0"),
        (["--capacity", "9"], "--capacity: 9 exceeds --experts = 8"),
        (["--target", "2"], "--target: expected an accuracy in (0, 1]; got 2.0"),
    ],
)
def test_fl_bad_input_names_the_flag(args, message, capsys, tmp_path):
    assert main(["fl", *args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"flexmoe-bench fl: error: {message}")


def test_report_of_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a flexmoe-bench result folder (no meta.json)" in capsys.readouterr().err


@pytest.mark.slow
def test_demo(tmp_path: Path):
    assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    for name in ("solvers/solve_time.png", "fl/accuracy_vs_round.png", "report.md"):
        assert (tmp_path / name).is_file()
