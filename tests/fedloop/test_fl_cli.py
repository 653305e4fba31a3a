"""`flexmoe train`: a run, its outputs, resume, config files, and errors that name the flag."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from flexmoe import params
from flexmoe.cli import main
from flexmoe.fedloop import FedConfig, History

SMALL = ["--clients", "4", "--experts", "4", "--capacity", "2", "--partition", "iid",
         "--min-size", "5", "--local-epochs", "1", "--quiet"]  # fmt: skip


def test_train_writes_history_and_prints_a_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--rounds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pers acc" in printed and "final: personalised" in printed
    history = json.loads((out / "history.json").read_text())
    assert len(history["rounds"]) == 2 and history["config"]["method"] == "flex"
    assert (out / "checkpoint" / "manifest-1.json").exists()


def test_resume_continues_and_a_second_fresh_run_is_refused(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "run")
    main(["train", *SMALL, "--rounds", "1", "--out", out])
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *SMALL, "--rounds", "2", "--out", out])
    assert exit_info.value.code == 2
    assert "pass --resume" in capsys.readouterr().err
    main(["train", *SMALL, "--rounds", "2", "--out", out, "--resume"])
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())["rounds"]) == 2


def test_a_refused_resume_leaves_the_run_configuration_alone(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    main(["train", *SMALL, "--rounds", "1", "--out", str(out)])
    before = (out / "config.toml").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *SMALL, "--rounds", "2", "--seed", "3", "--out", str(out), "--resume"])
    assert exit_info.value.code == 2 and "seed" in capsys.readouterr().err
    assert (out / "config.toml").read_text() == before


def test_overwrite_starts_over_in_a_used_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["train", *SMALL, "--rounds", "2", "--out", str(out)])
    (out / "notes.txt").write_text("mine")
    assert main(["train", *SMALL, "--rounds", "1", "--out", str(out), "--overwrite"]) == 0
    assert len(History.load(out / "history.json").rounds) == 1
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "manifest-0.json", "state-0.json", "tensors-0.pt",
    ]  # fmt: skip
    assert (out / "notes.txt").read_text() == "mine"  # not ours: left alone


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--partition", "dirichlet:-1"], "--partition: bad partition 'dirichlet:-1'"),
        (["--capacity", "tiers:2/x"], "--capacity: bad capacity"),
        (["--capacity", "9"], "--capacity: 9 exceeds --experts = 4"),
        (["--top-k", "3"], "--top-k: 3 exceeds the smallest --capacity 2"),
        (["--clients", "0"], "--clients: must be >= 1; got 0"),
        (["--participation", "0"], "--participation: must be > 0"),
        (["--method", "best"], "--method: must be one of flex, greedy"),
        (["--backend", "nope"], "--backend: must be one of auto, flow"),
        (["--backend", "milp:cbc"], "--backend: must be one of auto, flow"),
        (["--lr", "abc"], "--lr: expected float; got 'abc'"),
        (["--lr", "0"], "--lr: must be > 0; got 0.0"),
        (["--signal", "f1"], "--signal: must be one of accuracy, loss; got 'f1'"),
        (["--dataset", "mnist"], "pass the directory as --data-dir"),
        (["--dataset", "cifar10", "--data-dir", "."], "CIFAR-10: no data_batch_1.bin"),
        (["--engine", "ray"], "--engine: invalid choice"),
        (["--client-cpus", "2"], "--client-cpus: only for --engine flower"),
        (["--ray-address", "auto"], "--ray-address: only for --engine flower"),
        (["--engine", "flower", "--resume"], "the flower engine does not checkpoint"),
        (["--engine", "flower", "--client-cpus", "0"], "--client-cpus: must be > 0"),
        (["--engine", "flower", "--threads", "2"], "each client trains with --client-cpus"),
    ],
)
def test_bad_input_names_the_flag(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *SMALL, "--rounds", "1", "--out", str(tmp_path / "x"), *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    lines = err.splitlines()  # one line, then the pointer to --help; no usage block
    assert len(lines) == 2 and lines[0].startswith("flexmoe train: error: ")
    assert lines[1] == "(see: flexmoe train --help)"
    assert "`engine`" not in err  # a backend variant never reads like the --engine flag


def test_help_lists_every_configuration_field_with_its_default(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    known = params.options(FedConfig)
    leaves = {f.name for cls in (FedConfig, type(FedConfig().train), type(FedConfig().fitness))
              for f in dataclasses.fields(cls)} - {"train", "fitness"}  # fmt: skip
    assert {o.name for o in known} == leaves  # every field is reachable, width too
    for option in known:
        assert option.flag in text
    assert "--width W feature width of the shared extractor (default: 64)" in text
    assert "--carry-deficit, --no-carry-deficit" in text and "(default: off)" in text
    assert "--quiet" in text and "--no-progress" not in text  # a hidden alias


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TOML = """
dataset = "clustered"
n_samples = 240
clients = 4
experts = 4
capacity = "2"
partition = "iid"
min_size = 5
rounds = 5

[train]
epochs = 1
"""


def test_config_file_with_a_flag_overriding_it(tmp_path: Path) -> None:
    file = write(tmp_path / "run.toml", TOML)
    out = tmp_path / "a"
    assert main(["train", "--config", str(file), "--rounds", "3", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    history = History.load(out / "history.json")
    assert len(history.rounds) == 3
    assert history.config["clients"] == 4 and history.config["train"]["epochs"] == 1
    written = tomllib.loads((out / "config.toml").read_text())
    assert written["rounds"] == 3 and written["train"]["epochs"] == 1
    again = tmp_path / "b"  # the resolved file loads back and reproduces the run
    assert main(["train", "--config", str(out / "config.toml"), "--out", str(again),
                 "--quiet"]) == 0  # fmt: skip
    assert History.load(again / "history.json").without_timings() == history.without_timings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "run.toml: unknown key `colour`; valid keys at the top level: dataset,"),
        ("[train]\nlearning_rate = 1\n", "unknown key `train.learning_rate`; valid keys at "
         "table [train]: epochs, batch_size, lr"),
        ("clients = 0\n", "run.toml: `clients`: must be >= 1; got 0"),
        ("rounds = '5'\n", "run.toml: `rounds`: must be an integer; got '5'"),
        ("rounds = \n", "cannot read configuration file"),
    ],
)  # fmt: skip
def test_config_file_errors_name_the_file_and_key(tmp_path: Path, capsys, text, message) -> None:
    file = write(tmp_path / "run.toml", text)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(file), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_and_version_are_the_same_program(tmp_path: Path, capsys) -> None:
    assert main(["bench", "report", str(tmp_path)]) == 2  # flexmoe-bench report
    assert "is not a flexmoe-bench result folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("flexmoe ")


def test_bench_fl_reads_the_same_fields_and_its_settings_load_back(tmp_path: Path) -> None:
    from flexmoe.benchmarks import cli as bench_cli
    from flexmoe.benchmarks import cli_fl

    file = write(tmp_path / "sweep.toml", 'methods = "flex,random"\nclients = 4\nexperts = 4\n'
                 "rounds = 9\n\n[train]\nlr = 0.05\n")  # fmt: skip
    parser = bench_cli.build_parser()
    args = parser.parse_args(["fl", "--config", str(file), "--rounds", "2", "--partitions",
                              "kclass:2,iid", "--seeds", "3", "--width", "16"])  # fmt: skip
    grid = cli_fl.fl_grid(args)
    assert (grid.methods, grid.partitions, grid.seeds) == (
        ("flex", "random"),
        ("shards:2", "iid"),
        (3,),
    )
    assert grid.base["clients"] == 4 and grid.base["rounds"] == 2 and grid.base["width"] == 16
    assert grid.base["train"]["lr"] == 0.05 and not set(cli_fl.AXES) & set(grid.base)
    params.write_toml(tmp_path / "back.toml", cli_fl.resolved_settings(grid))
    assert (
        cli_fl.fl_grid(parser.parse_args(["fl", "--config", str(tmp_path / "back.toml")])) == grid
    )
    with pytest.raises(SystemExit):  # the sweep sets the method: no --method flag
        parser.parse_args(["fl", "--method", "flex"])


def test_without_the_federated_loop_the_commands_say_what_to_install(monkeypatch, capsys) -> None:
    import sys

    from flexmoe.benchmarks.cli import main as bench

    monkeypatch.setitem(sys.modules, "flexmoe.fedloop", None)  # as if its extra were missing
    assert main(["train", "--rounds", "3", "--out", "x"]) == 2
    assert bench(["fl", "--rounds", "3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("flexmoe train: error: ") and len(err) == 2
    assert err[1].startswith("flexmoe-bench fl: error: ")
