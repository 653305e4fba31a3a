"""The Flower App end to end, by the README's command, on Flower's simulation runtime.

``python -m flexmoe.flower run examples/flower-app`` (``flwr run`` on a private local
federation) gives the same history as ``flexmoe train --engine local`` on the same seed,
and leaves nothing behind: each test gives the command a temporary folder and a HOME of
its own and a mark in its environment, and checks that no process with its mark is left
and that its folders are empty — never the rest of the machine.
"""

from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # click/typer deprecations raised while Flower imports
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("flwr", reason="the `flower` extra (flwr[simulation]) is not installed")
    pytest.importorskip("ray", reason="the `flower` extra (flwr[simulation]) is not installed")

from flower_support import EXAMPLE, REPO, Sandbox, one_torch_thread

from flexmoe.fedloop import FedConfig, History, run

CONFIG = FedConfig(
    clients=4, experts=4, rounds=2, capacity="2", partition="dirichlet:0.3", width=16,
    expert_hidden=8, min_size=10, seed=3, participation=0.75, dropout=0.2,
)  # fmt: skip
SHAPE = "clients=4 experts=4 num-server-rounds=2 capacity='2' width=16 expert-hidden=8 min-size=10"
RUN_CONFIG = f"{SHAPE} seed=3 participation=0.75 dropout=0.2"


def _local(config: FedConfig) -> History:
    with one_torch_thread():  # as each Ray client (one CPU each)
        return run(config)


def test_flwr_run_of_the_app_gives_the_local_engines_history(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    out = tmp_path / "app"
    done = sandbox.run("run", str(EXAMPLE), "--ray-cpus", "2",
                       "--run-config", f"{RUN_CONFIG} out-dir='{out}'")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the run ended finished:completed; nothing is left running" in done.stdout
    flower, local = History.load(out / "history.json"), _local(CONFIG)
    assert flower.series("assignment.experts") == local.series("assignment.experts")
    assert flower.series("dropped") == local.series("dropped") != [[], []]
    assert flower.without_timings() == local.without_timings()
    assert (out / "config.toml").is_file()
    sandbox.assert_clean()


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "rows"), [(5, [0, 1, 2, 3, 4]), (3, [0, 1, 2])])
def test_the_app_runs_on_more_or_fewer_nodes_than_clients(
    sandbox: Sandbox, tmp_path: Path, nodes: int, rows: list[int]
) -> None:
    out = tmp_path / "app"
    done = sandbox.run("run", str(EXAMPLE), "--ray-cpus", "2", "--num-supernodes", str(nodes),
                       "--run-config", f"{SHAPE} out-dir='{out}'")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    history = History.load(out / "history.json")
    assert history.series("participants") == [rows, rows]
    assert len(history.setup["capacity"]) == max(4, nodes)
    sandbox.assert_clean()


@pytest.mark.slow
def test_sigterm_stops_the_run_and_leaves_nothing_running(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "app"
    shape = SHAPE.replace("num-server-rounds=2", "num-server-rounds=1000")
    run = sandbox.start("run", str(EXAMPLE), "--ray-cpus", "2",
                        "--run-config", f"{shape} out-dir='{out}'")  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / "history.json").is_file() and run.poll() is None:
        assert time.monotonic() < deadline, "no round finished within 300 s"
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-3000:]
    assert "interrupted; the federation is stopped" in err
    sandbox.assert_clean()


def test_bad_run_config_is_refused_before_anything_starts(sandbox: Sandbox) -> None:
    began = time.monotonic()
    done = sandbox.run("run", str(EXAMPLE), "--run-config", "train.lr=-1", timeout=60)
    assert done.returncode == 2
    assert "error: run config `train.lr` must be > 0; got -1.0" in done.stderr
    malformed = sandbox.run("run", str(EXAMPLE), "--run-config", "seed=1 seed=2", timeout=60)
    assert malformed.returncode == 2
    assert "error: --run-config 'seed=1 seed=2': The provided configuration string" in (
        malformed.stderr
    )
    assert time.monotonic() - began < 60
    sandbox.assert_clean()


def test_an_unreachable_ray_cluster_fails_at_once_naming_the_flag(sandbox: Sandbox) -> None:
    from flexmoe.flower.launch import _free_port

    port = _free_port()
    began = time.monotonic()
    done = sandbox.run("run", str(EXAMPLE), "--ray-address", f"127.0.0.1:{port}", timeout=60)
    assert done.returncode == 2
    assert f"--ray-address 127.0.0.1:{port}: no Ray cluster answers" in done.stderr
    assert time.monotonic() - began < 30
    sandbox.assert_clean()


def test_the_readme_gives_this_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    app_readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    for text in (readme, app_readme):
        assert "python -m flexmoe.flower run examples/flower-app" in text
