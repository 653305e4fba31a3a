"""``flexmoe train --engine flower``: the options, their errors, and (slow) the run on
Flower's simulation runtime equal to the in-process one."""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")
    pytest.importorskip("ray", reason="the `flower` extra (flwr[simulation]) is not installed")

from flower_support import MARK, Sandbox

from flexmoe.fedloop import FedConfig, History
from flexmoe.flower import RayOptions, run_flower
from flexmoe.flower.launch import _free_port, cluster_address

FLAGS = ["train", "--clients", "4", "--experts", "4", "--capacity", "2", "--rounds", "2",
         "--min-size", "10", "--local-epochs", "1", "--seed", "1", "--quiet"]  # fmt: skip


def _numbers(history: History) -> list[float]:
    keys = [k for k in history.rounds[0].to_dict() if k.endswith("_acc") or k == "train_loss"]
    values = [history.series(key) for key in sorted(keys)]
    return list(np.hstack([np.ravel(np.asarray(v, dtype=float)) for v in values]))


def test_ray_options_take_whole_cpus_and_make_the_federation_config() -> None:
    with pytest.raises(ValueError, match=r"`client_cpus` must be a whole number >= 1 .*; got 0.5"):
        RayOptions(client_cpus=0.5)
    with pytest.raises(ValueError, match=r"`client_gpus` must be >= 0; got -1"):
        RayOptions(client_gpus=-1)
    assert RayOptions(client_cpus=2, num_cpus=4).federation_config(5) == (
        "num-supernodes=5 client-resources-num-cpus=2 client-resources-num-gpus=0.0 "
        "init-args-log-to-driver=false verbose=false init-args-num-cpus=4"
    )
    cluster = RayOptions(address="auto", num_cpus=4, client_gpus=0.5).federation_config(2)
    assert "init-args-num-cpus" not in cluster and "client-resources-num-gpus=0.5" in cluster


def test_ray_options_refuse_what_a_local_instance_cannot_give() -> None:
    with pytest.raises(ValueError, match="`client_cpus` = 4 exceeds the 2 CPUs"):
        RayOptions(client_cpus=4, num_cpus=2).check_local()
    RayOptions(client_cpus=4, num_cpus=2, address="auto").check_local()  # a cluster decides
    RayOptions(client_cpus=2, num_cpus=2).check_local()


def test_cli_names_the_flag_of_resources_the_machine_lacks(tmp_path: Path, capsys) -> None:
    from flexmoe.cli import main

    for flags, message in [
        (["--client-cpus", "3", "--ray-cpus", "2"],
         "--client-cpus = 3 exceeds the 2 CPUs of the local Ray instance"),
        (["--client-cpus", "1.5"], "--client-cpus must be a whole number >= 1"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--clients", "2", "--rounds", "1", "--out", str(tmp_path / "x"),
                  "--engine", "flower", *flags])  # fmt: skip
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_an_unreachable_ray_address_fails_at_once_naming_the_flag(tmp_path: Path, capsys) -> None:
    from flexmoe.cli import main

    port = _free_port()
    began = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--clients", "2", "--rounds", "1", "--out", str(tmp_path / "x"),
              "--engine", "flower", "--ray-address", f"127.0.0.1:{port}"])  # fmt: skip
    assert exit_info.value.code == 2
    assert time.monotonic() - began < 30
    err = capsys.readouterr().err
    assert f"--ray-address 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port}" in err


def test_auto_without_a_cluster_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where `ray start` would record one
    with pytest.raises(ValueError, match=r"`address` auto: no Ray cluster on this machine"):
        cluster_address("auto")
    with pytest.raises(ValueError, match=r"`address` must be auto or <host>:<port>; got 'nohost'"):
        cluster_address("nohost")


@pytest.mark.slow
def test_cli_engine_flower_gives_the_local_engines_history(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flexmoe.cli import main

    saved = torch.get_num_threads()
    try:
        assert main([*FLAGS, "--out", str(tmp_path / "local"), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(saved)
    for key in ("HOME", "TMPDIR", MARK):
        monkeypatch.setenv(key, sandbox.env[key])
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox.tmp))
    assert main([*FLAGS, "--out", str(tmp_path / "flower"), "--engine", "flower",
                 "--ray-cpus", "2"]) == 0  # fmt: skip
    assert "final: personalised" in capsys.readouterr().out
    local = History.load(tmp_path / "local" / "history.json")
    flower = History.load(tmp_path / "flower" / "history.json")
    assert flower.series("assignment.experts") == local.series("assignment.experts")
    assert _numbers(flower) == pytest.approx(_numbers(local), rel=1e-6, nan_ok=True)
    assert flower.without_timings() == local.without_timings()
    sandbox.assert_clean()


@pytest.mark.slow
def test_run_flower_calls_the_hooks_every_round(
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MARK, sandbox.mark)
    config = FedConfig(clients=3, experts=4, rounds=3, width=8, expert_hidden=4, min_size=10)
    seen: list[tuple[int, int]] = []
    history = run_flower(config, ray=RayOptions(num_cpus=2, temp_dir=str(sandbox.tmp)),
                         hooks=[lambda rnd, state, h: seen.append((rnd, len(h.rounds)))])  # fmt: skip
    assert seen == [(0, 1), (1, 2), (2, 3)] and len(history.rounds) == 3
    sandbox.assert_clean()


@pytest.mark.slow
def test_resources_no_node_can_give_end_the_run_with_flowers_reason(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flexmoe.cli import main

    monkeypatch.setenv(MARK, sandbox.mark)
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox.tmp))
    flags = ["train", "--clients", "2", "--rounds", "1", "--min-size", "10", "--quiet"]
    assert main([*flags, "--out", str(tmp_path / "x"), "--engine", "flower",
                 "--client-gpus", "64"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "the Flower run ended (finished:failed) after 0 of 1 rounds" in err
    assert "does not meet the criteria to host at least one client" in err
    sandbox.assert_clean()
