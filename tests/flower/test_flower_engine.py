"""The Flower engine end to end: 4 clients × 2 rounds on Ray equal the in-process run.

Skipped without the ``flower`` extra. Ray and Flower must write nothing under ``$HOME``
(a fake one here) and leave no process running.
"""

from __future__ import annotations

import os
import subprocess
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

from flexmoe.fedloop import FedConfig, History, RoundRecord, run
from flexmoe.flower import RayOptions, run_flower

pytestmark = [
    # Flower deprecates its own Python entry point in favour of the `flwr run` CLI.
    pytest.mark.filterwarnings("ignore:.*run_simulation.*:DeprecationWarning"),
    # Ray opens /dev/null for its daemons and lets the handles be finalised.
    pytest.mark.filterwarnings("ignore:unclosed file.*:ResourceWarning"),
    # Ray's daemons outlive the Popen objects that started them (they are stopped by
    # `ray.shutdown()`; the test checks that none is left).
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    # Ray announces a future change of how it sets CUDA_VISIBLE_DEVICES for CPU actors.
    pytest.mark.filterwarnings("ignore:Tip. In future versions of Ray:FutureWarning"),
]

CONFIG = FedConfig(
    clients=4, experts=4, rounds=2, capacity="2", partition="dirichlet:0.3", width=16,
    expert_hidden=8, min_size=10, seed=3, participation=0.75, dropout=0.2,
)  # fmt: skip


def _ray_processes() -> set[tuple[int, str]]:
    """Live (non-zombie) processes that belong to Ray."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True)
    found = set()
    for line in out.stdout.splitlines():
        pid, stat, args = line.split(None, 2) if len(line.split(None, 2)) == 3 else (0, "", "")
        if "Z" not in stat and ("ray::" in args or "/ray/" in args or "raylet" in args):
            found.add((int(pid), args[:120]))
    return found


def _flexmoe_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("flexmoe-*")}


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FLWR_HOME", raising=False)
    return home


def _local_run(threads: int) -> History:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run(CONFIG)
    finally:
        torch.set_num_threads(saved)


def _numbers(history: History) -> list[float]:
    keys = [k for k in history.rounds[0].to_dict() if k.endswith("_acc") or k == "train_loss"]
    values = [history.series(key) for key in sorted(keys)]
    return list(np.hstack([np.ravel(np.asarray(v, dtype=float)) for v in values]))


def test_flower_matches_local_engine(fake_home: Path, tmp_path: Path) -> None:
    before, temp_before = _ray_processes(), _flexmoe_temp_dirs()
    local = _local_run(threads=1)  # as each Ray client (one CPU each)
    flower = run_flower(CONFIG, out=tmp_path / "run", ray=RayOptions(num_cpus=2))

    assert flower.series("assignment.experts") == local.series("assignment.experts")
    assert flower.series("participants") == local.series("participants")
    assert flower.series("dropped") == local.series("dropped") != [[], []]
    assert _numbers(flower) == pytest.approx(_numbers(local), rel=1e-6, nan_ok=True)
    assert flower.series("load_routed") == local.series("load_routed")
    assert flower.setup == local.setup
    assert all(isinstance(r, RoundRecord) for r in flower.rounds + local.rounds)
    assert flower.without_timings() == local.without_timings()
    assert (tmp_path / "run" / "history.json").is_file()

    assert list(fake_home.iterdir()) == []
    assert _flexmoe_temp_dirs() <= temp_before
    deadline = time.monotonic() + 15
    while (left := _ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left running: {left}"
    assert os.environ.get("FLWR_HOME") is None


def test_ray_options_reject_bad_resources() -> None:
    with pytest.raises(ValueError, match="`client_cpus` must be > 0"):
        RayOptions(client_cpus=0)


def test_ray_options_cluster_address_skips_local_settings() -> None:
    config = RayOptions(address="auto", num_cpus=4, client_gpus=0.5).backend_config("/tmp/x")
    assert config == {
        "client_resources": {"num_cpus": 1.0, "num_gpus": 0.5},
        "init_args": {"address": "auto", "log_to_driver": False},
    }


@pytest.mark.slow
def test_cli_engine_flower_gives_the_local_engines_assignments(
    fake_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flexmoe.cli import main

    flags = ["train", "--clients", "4", "--experts", "4", "--capacity", "2", "--rounds", "2",
             "--min-size", "10", "--local-epochs", "1", "--seed", "1", "--quiet"]  # fmt: skip
    saved = torch.get_num_threads()
    try:
        assert main([*flags, "--out", str(tmp_path / "local"), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(saved)
    assert main([*flags, "--out", str(tmp_path / "flower"), "--engine", "flower",
                 "--ray-cpus", "2"]) == 0  # fmt: skip
    assert "final: personalised" in capsys.readouterr().out
    local = History.load(tmp_path / "local" / "history.json")
    flower = History.load(tmp_path / "flower" / "history.json")
    assert flower.series("assignment.experts") == local.series("assignment.experts")
    assert _numbers(flower) == pytest.approx(_numbers(local), rel=1e-6, nan_ok=True)
    assert list(fake_home.iterdir()) == []


def test_ray_options_refuse_what_a_local_instance_cannot_give(monkeypatch) -> None:
    from flexmoe.flower import engine

    monkeypatch.setattr(engine, "_local_gpus", lambda: 0.0)
    with pytest.raises(ValueError, match="`client_cpus` = 4 exceeds the 2 CPUs"):
        RayOptions(client_cpus=4, num_cpus=2).check_local()
    with pytest.raises(ValueError, match="`client_gpus` = 1, but the local Ray instance has 0"):
        RayOptions(client_gpus=1).check_local()
    RayOptions(client_gpus=1, address="auto").check_local()  # a cluster: Ray decides
    RayOptions(client_cpus=2, num_cpus=2).check_local()


def test_cli_names_the_flag_of_resources_the_machine_lacks(tmp_path: Path, capsys) -> None:
    from flexmoe.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--clients", "2", "--rounds", "1", "--out", str(tmp_path / "x"),
              "--engine", "flower", "--client-cpus", "3", "--ray-cpus", "2"])  # fmt: skip
    assert exit_info.value.code == 2
    assert (
        "--client-cpus = 3 exceeds the 2 CPUs of the local Ray instance" in capsys.readouterr().err
    )
