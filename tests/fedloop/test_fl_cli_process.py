"""`python -m flexmoe train` as a user runs it: plugins from outside the package, and
Ctrl-C / SIGTERM on a real process (each test checks only the processes it started)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flexmoe.fedloop.checkpoint import completed_rounds

TINY = ["--dataset", "clustered", "--samples", "240", "--clients", "4", "--experts", "4",
        "--capacity", "2", "--partition", "iid", "--min-size", "5", "--local-epochs", "1",
        "--quiet"]  # fmt: skip

PLUGIN = '''
"""A toy method, data set and fitness signal registered from outside flexmoe."""
import os

import numpy as np

from flexmoe.fedloop import Dataset, register_dataset, register_method, register_signal


def note(what):
    with open(os.environ["TOY_LOG"], "a") as log:
        log.write(what + "\\n")


def lowest_experts(round):
    note("method")
    p = round.problem
    return round.assignment(np.arange(p.n_experts) < p.max_experts[:, None], "toy_lowest")


def blobs(request):
    note("dataset")
    rng = np.random.default_rng(request.seed)
    y = rng.integers(0, 3, request.n_samples or 150)
    x = (rng.normal(size=(len(y), 6)) + 2.0 * y[:, None]).astype(np.float32)
    return Dataset("toy_blobs", x, y, 3, "mlp")


def inverse_loss(stats, config):
    note("signal")
    return 1.0 / (1.0 + stats["loss"])


register_method("toy_lowest", lowest_experts)
register_dataset("toy_blobs", blobs)
register_signal("toy_inverse_loss", inverse_loss)
'''


def _as_foreground() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it (a test run
    itself started in the background, e.g. ``nohup ... &``, would hand down SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def flexmoe(*args: str, tag: str = "", **kwargs) -> subprocess.Popen[str]:
    """``python -m flexmoe ...`` in a child process (its environment carries `tag`; SIGINT
    as in a terminal's foreground)."""
    env = {**os.environ, "FLEXMOE_TEST_TAG": tag or uuid.uuid4().hex, **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "flexmoe", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_as_foreground, **kwargs)  # fmt: skip


def tagged(tag: str) -> list[int]:
    """Live processes whose environment carries `tag` (only ours are readable)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"FLEXMOE_TEST_TAG={tag}".encode() in (
                (proc / "environ").read_bytes()
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_plugin_registers_a_method_data_set_and_signal(tmp_path: Path) -> None:
    plugin = tmp_path / "my_module.py"
    plugin.write_text(PLUGIN)
    log = tmp_path / "calls.log"
    out = tmp_path / "run"
    child = flexmoe("train", "--plugin", str(plugin), "--method", "toy_lowest", "--dataset",
                    "toy_blobs", "--signal", "toy_inverse_loss", "--clients", "3", "--experts",
                    "3", "--capacity", "2", "--min-size", "5", "--rounds", "2", "--quiet",
                    "--out", str(out), env={"TOY_LOG": str(log)})  # fmt: skip
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert "final: personalised" in stdout
    history = json.loads((out / "history.json").read_text())
    assert history["config"]["method"] == "toy_lowest"
    assert [r["assignment"]["backend"] for r in history["rounds"]] == ["toy_lowest"] * 2
    assert [r["assignment"]["experts"] for r in history["rounds"]] == [[[0, 1]] * 3] * 2
    calls = log.read_text().split()
    assert calls.count("dataset") == 1 and calls.count("method") == 2
    assert calls.count("signal") == 2 * 3  # every reply of every round


def _wait_for(path: Path, child: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_train_stops_at_once_and_says_how_to_resume(
    tmp_path: Path, signum: int
) -> None:
    out = tmp_path / "run"
    argv = ["train", *TINY, "--rounds", "25", "--out", str(out)]
    tag = uuid.uuid4().hex
    child = flexmoe(*argv, tag=tag)
    _wait_for(out / "checkpoint" / "manifest-0.json", child)
    sent = time.monotonic()
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=10)
    stopped = time.monotonic() - sent
    assert child.returncode == 130 and stopped < 2.0, (child.returncode, stopped, stderr)
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    done = completed_rounds(out / "checkpoint")
    assert 1 <= done < 25 and f"interrupted after {done} of 25 rounds" in stderr
    command = stderr.split("continue with: ", 1)[1].strip()
    assert command == shlex.join(["flexmoe", *argv, "--resume"])
    assert tagged(tag) == []  # no child process left behind
    if signum != signal.SIGINT:
        return
    resumed = flexmoe(*shlex.split(command)[1:])
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    rounds = json.loads((out / "history.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == list(range(25))
