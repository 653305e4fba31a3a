"""`flexmoe-bench fl --preset`, variants as arms, the paired statistics and the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from flexmoe import params
from flexmoe.benchmarks import cli as bench_cli
from flexmoe.benchmarks import cli_fl
from flexmoe.benchmarks.cli import main
from flexmoe.benchmarks.fl import FlRun, fl_jobs, fl_table, summarise_fl
from flexmoe.benchmarks.fl_stats import choose, paired, run_metrics
from flexmoe.benchmarks.plots import PNG_SIGNATURE
from flexmoe.benchmarks.presets import PRESETS, Preset, register_preset
from flexmoe.fedloop import FedConfig

SMALL = ["--clients", "4", "--experts", "4", "--rounds", "2", "--min-size", "10"]


def grid_of(*flags: str):
    return cli_fl.fl_grid(bench_cli.build_parser().parse_args(["fl", *flags]))


def test_a_preset_sets_the_task_arms_and_seeds_and_flags_win(tmp_path: Path) -> None:
    grid = grid_of("--preset", "experts-matter")
    preset = PRESETS["experts-matter"]
    assert grid.methods == preset.methods and grid.seeds == (0, 1, 2, 3, 4)
    assert grid.partitions == ("shards:2",) and grid.preset == "experts-matter"
    assert (grid.base["experts"], grid.base["expert_hidden"], grid.base["rounds"]) == (16, 4, 30)
    mine = grid_of("--preset", "experts-matter", "--seeds", "0", "--rounds", "3",
                   "--methods", "flex,fixed")  # fmt: skip
    assert (mine.seeds, mine.base["rounds"], mine.methods) == ((0,), 3, ("flex", "fixed"))
    assert grid_of("--preset", "tiers").base["capacity"] == "tiers:2/4/8"
    assert grid_of("--preset", "mnist1d").base["dataset"] == "mnist1d"
    params.write_toml(tmp_path / "back.toml", cli_fl.resolved_settings(mine))
    assert grid_of("--config", str(tmp_path / "back.toml")) == mine


def test_variants_pin_their_settings_over_the_sweeps() -> None:
    grid = grid_of("--preset", "experts-matter", "--methods", "flex,flex-paper,flex-probe",
                   "--switch-cost", "0.5", "--seeds", "0")  # fmt: skip
    jobs = {job.arm: job for job in fl_jobs(grid, Path("out"))}
    assert jobs["flex"].config["switch_cost"] == 0.5  # the sweep's
    assert jobs["flex-paper"].config["switch_cost"] == 0.0  # pinned
    probe = FedConfig.from_dict(jobs["flex-probe"].config)
    assert (probe.method, probe.fitness.signal, probe.fitness.probe) == ("flex", "alone", 2)
    assert probe.fitness.initial is None and probe.switch_cost == 0.05
    assert jobs["flex-probe"].key == ("flex-probe", "shards:2", 0)
    assert jobs["flex-probe"].history.endswith("runs/flex-probe-shards2-s0.json")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "--preset: must be one of experts-matter, default"),
        (["--methods", "flex,flex-best"], "--methods: unknown 'flex-best'; valid: flex,"),
    ],
)
def test_bad_preset_or_arm_names_the_flag(args, message, capsys, tmp_path) -> None:
    assert main(["fl", *args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(f"flexmoe-bench fl: error: {message}")


# -- statistics ------------------------------------------------------------------------


def test_paired_intervals_and_seeds_won() -> None:
    a = {0: 0.90, 1: 0.85, 2: 0.88, 3: 0.91, 4: 0.86}
    b = {0: 0.80, 1: 0.86, 2: 0.80, 3: 0.85, 4: 0.84, 7: 0.1}  # seed 7: unpaired, ignored
    p = paired(a, b)
    d = np.array([0.10, -0.01, 0.08, 0.06, 0.02])
    assert p.n == 5 and p.won == 4 and p.mean == pytest.approx(d.mean())
    expected = stats.t.interval(0.95, 4, loc=d.mean(), scale=stats.sem(d))
    assert p.t == pytest.approx(expected)
    assert d.min() <= p.bootstrap[0] < p.mean < p.bootstrap[1] <= d.max()
    assert p.bootstrap == paired(a, b).bootstrap  # seeded
    assert paired({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}).bootstrap == pytest.approx((0.1, 0.1))
    assert "**" not in p.cell() or p.significant
    assert paired({0: 1.0}, {}).cell() == "-"


def _history(val: list[float], kb: float, test: float = 0.5) -> dict:
    rounds = [{"personalized_val_acc": v, "personalized_acc": test, "bytes_down": [kb * 1e3],
               "participants": [0], "assignment": {"experts": [[0]], "backend": "flow"},
               "time": {"round": 1.0, "assign": 0.01}} for v in val]  # fmt: skip
    return {"rounds": rounds}


def test_the_one_standard_error_rule_prefers_the_cheaper_option_within_noise() -> None:
    noisy = {"best": [0.90, 0.80, 0.95], "cheap": [0.89, 0.81, 0.93], "bad": [0.70, 0.6, 0.75]}
    runs = {arm: {s: _history([v], kb) for s, v in enumerate(vals)}
            for (arm, vals), kb in zip(noisy.items(), (50.0, 36.0, 30.0), strict=True)}  # fmt: skip
    choice = choose(runs, ["best", "cheap", "bad"])
    assert (choice.best, choice.chosen) == ("best", "cheap")
    assert choice.within == {"best": True, "cheap": True, "bad": False}
    assert run_metrics(runs["cheap"][0])["kb_down"] == 36.0


def test_fl_table_withholds_test_of_options_not_chosen() -> None:
    row = FlRun("flex-a", "iid", 0, 3, 0.9, 0.8, 0.0, 0.0, 2, 10, 0.01, 1.0, "x",
                personalized_val_acc=0.7)  # fmt: skip
    table = fl_table(summarise_fl([row]), withheld={"flex-a"})
    assert "withheld" in table and "0.900" not in table and "0.700" in table


# -- end to end ------------------------------------------------------------------------


@pytest.fixture
def options_preset():
    register_preset("t-options", Preset(
        "test", {"dataset": "digits", "partition": "iid", "capacity": "2"},
        ("flex-paper", "flex-neutral", "fixed"), seeds="0-1",
        options=("flex-paper", "flex-neutral"), reference="fixed"))  # fmt: skip
    yield "t-options"
    PRESETS.unregister("t-options")


def test_a_preset_sweep_writes_the_report_and_its_figures(tmp_path, options_preset, capsys) -> None:
    out = tmp_path / "fl"
    assert main(["fl", "--preset", options_preset, *SMALL, "--jobs", "1", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    assert "withheld" in capsys.readouterr().out  # the console withholds as summary.md does
    text = (out / "summary.md").read_text()
    for part in ("#### Validation", "#### The fitness option chosen on validation",
                 "one-standard-error rule", "#### Test (reported once, for the chosen option)",
                 "#### Paired differences", "BCa bootstrap", "#### Balance and cost",
                 "| fixed | 2 |"):  # fmt: skip
        assert part in text, part
    chosen = text.split("**chosen: `")[1].split("`")[0]
    other = ({"flex-paper", "flex-neutral"} - {chosen}).pop()
    test_part = text.split("#### Test")[1].split("####")[0]
    assert f"| {chosen} |" in test_part and f"| {other} |" not in test_part
    assert "withheld" in text.split("### Partition")[0]
    for name in ("accuracy_rounds", "cv_rounds", "holdings"):
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE
        assert (out / f"{name}.pdf").is_file()
    assert main(["report", str(out), "-o", str(tmp_path / "r.md")]) == 0
    assert "#### Paired differences" in (tmp_path / "r.md").read_text()


def test_metrics_of_a_run_are_finite_where_they_should_be() -> None:
    from flexmoe.fedloop import run

    config = FedConfig(clients=4, experts=4, rounds=6, min_size=10, method="flex", n_samples=300,
                       fitness={"signal": "alone", "probe": 1, "initial": None})  # fmt: skip
    m = run_metrics(run(config, threads=1).to_dict())
    for key in ("pv", "pv5", "gv5", "pt", "pt5", "gt5", "holders_cv", "routed_cv", "kb_down",
                "kb_up", "assign_share", "round_s", "switches"):  # fmt: skip
        assert math.isfinite(m[key]), key
    assert m["kb_down"] > m["kb_up"] and 0 < m["assign_share"] < 1
