"""`flexmoe train`: a run, its outputs, resume, and errors that name the flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flexmoe.cli import main

SMALL = ["--clients", "4", "--experts", "4", "--capacity", "2", "--partition", "iid",
         "--min-size", "5", "--local-epochs", "1", "--quiet"]  # fmt: skip


def test_train_writes_history_and_prints_a_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--rounds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pers acc" in printed and "final: personalised" in printed
    history = json.loads((out / "history.json").read_text())
    assert len(history["rounds"]) == 2 and history["config"]["method"] == "flex"
    assert (out / "checkpoint" / "latest.json").exists()


def test_resume_continues_and_a_second_fresh_run_is_refused(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "run")
    main(["train", *SMALL, "--rounds", "1", "--out", out])
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *SMALL, "--rounds", "2", "--out", out])
    assert exit_info.value.code == 2
    assert "pass --resume" in capsys.readouterr().err
    main(["train", *SMALL, "--rounds", "2", "--out", out, "--resume"])
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())["rounds"]) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--partition", "dirichlet:-1"], "argument --partition: bad partition"),
        (["--capacity", "tiers:2/x"], "argument --capacity: bad capacity"),
        (["--capacity", "9"], "--capacity 9 exceeds --experts = 4"),
        (["--clients", "0"], "argument --clients: must be >= 1; got 0"),
        (["--participation", "0"], "argument --participation: must be > 0"),
        (["--method", "best"], "argument --method: invalid choice"),
        (["--backend", "nope"], "argument --backend: unknown backend 'nope'"),
        (["--lr", "abc"], "argument --lr: expected float"),
        (["--dataset", "mnist"], "pass the directory as --data-dir"),
        (["--dataset", "cifar10", "--data-dir", "."], "CIFAR-10: no data_batch_1.bin"),
        (["--engine", "ray"], "argument --engine: invalid choice"),
        (["--client-cpus", "2"], "argument --client-cpus: only for --engine flower"),
        (["--ray-address", "auto"], "argument --ray-address: only for --engine flower"),
        (["--engine", "flower", "--resume"], "the flower engine does not checkpoint"),
        (["--engine", "flower", "--client-cpus", "0"], "argument --client-cpus: must be > 0"),
        (["--engine", "flower", "--threads", "2"], "each client trains with --client-cpus"),
    ],
)
def test_bad_input_names_the_flag(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *SMALL, "--rounds", "1", "--out", str(tmp_path / "x"), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
