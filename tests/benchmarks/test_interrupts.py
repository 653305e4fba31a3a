"""Ctrl-C / SIGTERM in the sweeps, --resume / --overwrite, and the processes a run leaves.

The interrupt tests run ``flexmoe-bench`` as a process of their own and signal it the
way a terminal or a job scheduler would; each checks only the processes it started (the
benchmark, and those its plugin backends report in ``pids/``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_support import (  # fixtures
    instances_fixture,  # noqa: F401
    isolated_registry_fixture,  # noqa: F401
    plugin_fixture,  # noqa: F401
    recorded_pids,
)

from flexmoe.benchmarks.cli import main
from flexmoe.benchmarks.processes import alive
from flexmoe.benchmarks.records import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
#: How long a sweep may take to stop; the contract is 2 s on an idle machine, the
#: margin is for a loaded 2-core CI box (the report measures the real figure).
STOP_WITHIN = 5.0


@pytest.fixture(name="no_leftovers", autouse=True)
def no_leftovers_fixture(tmp_path: Path):
    """Whatever a test's plugin backends started is gone after the test, pass or fail."""
    yield
    for pid_file in tmp_path.glob("pids/*.pid"):
        for pid in (int(p) for p in pid_file.read_text().split()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _as_foreground() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it (a test run
    itself started in the background, e.g. ``nohup ... &``, would hand down SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _bench(*args: str) -> subprocess.Popen[str]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen(
        [sys.executable, "-m", "flexmoe.benchmarks.cli", *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_as_foreground,
    )


def _wait_for(
    plugin: str, name: str, proc: subprocess.Popen[str], timeout: float = 60
) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = recorded_pids(plugin, name)
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {name} ran: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{name} did not start within {timeout} s")


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _all_gone(pids: list[int], *, within: float) -> bool:
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _interrupt(proc: subprocess.Popen[str], signum: int) -> tuple[float, str, str]:
    start = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running 30 s after {signal.Signals(signum).name}: {err[-2000:]}")
    return time.monotonic() - start, out, err


def _solvers_args(plugin: str, instances: Path, out: Path, backends: str) -> list[str]:
    return ["solvers", "--plugin", plugin, "--instances", str(instances), "--backends",
            backends, "--time-limit", "60", "--out", str(out)]  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_solvers_interrupt_stops_kills_the_child_and_keeps_finished_rows(
    tmp_path, plugin, instances, signum
):
    """eye3: t_favourite finishes, then t_gate holds; the signal ends the sweep at once,
    the solver child is gone, the finished row and its summary files are kept, and
    --resume runs only what is left."""
    (tmp_path / "gate").touch()
    out = tmp_path / "out"
    args = _solvers_args(plugin, instances, out, "t_favourite,t_gate")
    proc = _bench(*args)
    (child,) = _wait_for(plugin, "gate", proc)
    took, _, err = _interrupt(proc, signum)

    assert proc.returncode == 128 + signum
    assert took < STOP_WITHIN
    assert not alive(child)
    lines = err.strip().splitlines()
    name = signal.Signals(signum).name
    assert lines[-1].startswith(f"flexmoe-bench solvers: interrupted by {name}; 1 of 4 runs "
                                f"finished, kept in {out}; continue with: flexmoe-bench solvers")  # fmt: skip
    assert lines[-1].endswith(" --resume") and len(lines) == 1, err
    (row,) = read_jsonl(out / "runs.jsonl")
    assert (row.backend, row.instance, row.status) == ("t_favourite", "eye3", "feasible")
    assert "| t_favourite | eye3 |" in (out / "summary.md").read_text()
    assert (out / "summary.csv").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["state"] == "interrupted" and meta["counts"]["runs"] == 1

    (tmp_path / "gate").unlink()
    log = out / row.log
    before = log.stat().st_mtime_ns
    assert main([*args, "--resume", "--quiet"]) == 0
    rows = read_jsonl(out / "runs.jsonl")
    assert [(r.backend, r.instance) for r in rows] == [
        ("t_favourite", "eye3"), ("t_gate", "eye3"), ("t_favourite", "eye4"), ("t_gate", "eye4")
    ]  # fmt: skip
    assert log.stat().st_mtime_ns == before  # the finished run was not run again
    assert json.loads((out / "meta.json").read_text())["state"] == "finished"
    assert (out / "solve_time.png").is_file() and (out / "solve_time.pdf").is_file()


def test_fl_sigint_stops_the_workers_and_keeps_finished_runs(tmp_path, plugin):
    """`random` finishes, then `flex` holds in its first assignment (t_gate); SIGINT ends
    the sweep at once, no worker is left, and the finished run is kept."""
    (tmp_path / "gate").touch()
    out = tmp_path / "fl"
    proc = _bench("fl", "--methods", "random,flex", "--partitions", "iid", "--seeds", "0",
                  "--clients", "4", "--experts", "4", "--rounds", "2", "--jobs", "1",
                  "--plugin", plugin, "--backend", "t_gate", "--out", str(out))  # fmt: skip
    (worker,) = _wait_for(plugin, "gate", proc, timeout=120)
    children = _children(proc.pid)
    assert worker in children
    took, _, err = _interrupt(proc, signal.SIGINT)

    assert proc.returncode == 130
    assert took < STOP_WITHIN
    # multiprocessing's resource tracker (a child that serves the whole process) ends by
    # itself once its parent is gone: give it a moment on a loaded machine
    assert _all_gone(children, within=STOP_WITHIN), [p for p in children if alive(p)]
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"flexmoe-bench fl: interrupted by SIGINT; 1 of 2 runs finished, kept in {out}")
    )
    (row,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert (row["method"], row["error"]) == ("random", "")
    assert (out / row["history"]).is_file()
    assert "| random | iid | 1 |" in (out / "summary.md").read_text()
    assert json.loads((out / "meta.json").read_text())["state"] == "interrupted"


def test_a_non_empty_out_needs_resume_or_overwrite(tmp_path, plugin, instances, capsys):
    out = tmp_path / "out"
    args = _solvers_args(plugin, instances, out, "t_favourite")
    assert main([*args, "--quiet"]) == 0
    capsys.readouterr()
    assert main([*args, "--quiet"]) == 2
    assert capsys.readouterr().err.startswith(
        f"flexmoe-bench solvers: error: --out: '{out}' is not empty (an earlier sweep?); "
        "pass --resume to continue it or --overwrite to start again"
    )
    assert main([*_solvers_args(plugin, instances, out, "t_crash"), "--resume", "--quiet"]) == 2
    assert "--resume: " in (err := capsys.readouterr().err) and "other settings (backends: " in err

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main([*_solvers_args(plugin, instances, tmp_path / "mine", "t_favourite"),
                 "--overwrite", "--quiet"]) == 2  # fmt: skip
    assert "is not a `solvers` result folder (no meta.json)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_overwrite_leaves_no_stale_answer(tmp_path, plugin, instances):
    out = tmp_path / "out"
    assert main([*_solvers_args(plugin, instances, out, "t_favourite"), "--quiet"]) == 0
    assert main([*_solvers_args(plugin, instances, out, "t_crash"), "--overwrite",
                 "--quiet"]) == 0  # fmt: skip
    answers = sorted(p.name for p in (out / "answers").glob("*.json"))
    assert answers and all("t_crash" in name for name in answers)
    assert {r.backend for r in read_jsonl(out / "runs.jsonl")} == {"t_crash"}


def test_resume_and_overwrite_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["solvers", "--resume", "--overwrite", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# -- issue 13, item 9: plugins ---------------------------------------------------------


def test_a_plugin_that_hangs_at_import_cannot_hang_the_benchmark(tmp_path):
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(600)\n")
    proc = _bench("solvers", "--plugin", str(hang), "--sizes", "10x4x2", "--startup-limit", "3",
                  "--out", str(tmp_path / "out"))  # fmt: skip
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("flexmoe-bench hangs with a plugin that hangs at import")
    assert proc.returncode == 2
    assert err.startswith(f"flexmoe-bench solvers: error: --plugin: importing '{hang}' did not "
                          "finish within 3 s; nothing ran")  # fmt: skip
    assert not (tmp_path / "out").exists()


# t_daemon_hang sleeps (releasing the GIL): solve()'s time-limit guard answers for it at
# its limit (limit_no_solution), the child writes that and ends; what it started dies too
@pytest.mark.parametrize(("backend", "status"), [("t_daemon", "feasible"),
                                                 ("t_daemon_hang", "limit_no_solution")])  # fmt: skip
def test_what_a_backend_starts_in_a_new_session_does_not_outlive_its_run(
    tmp_path, plugin, instances, backend, status
):
    out = tmp_path / "out"
    assert main(["solvers", "--plugin", plugin, "--instances", str(instances), "--backends",
                 backend, "--time-limit", "0.5", "--grace", "0.5", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    assert {r.status for r in read_jsonl(out / "runs.jsonl")} == {status}
    runs = recorded_pids(plugin, backend.removeprefix("t_"))
    assert len(runs) == 2
    for child, daemon in runs:
        assert not alive(child)
        assert not alive(daemon), f"{backend}'s daemon {daemon} survived the sweep"


def test_an_ignored_sigint_stays_ignored():
    """A shell's background job ignores SIGINT; the sweep keeps doing so."""
    from flexmoe.benchmarks.processes import Interrupted, interruptible

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interruptible():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            with pytest.raises(Interrupted, match="SIGTERM"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_prepare_writes_into_the_claimed_folder_before_the_runs(tmp_path, plugin, instances):
    """`prepare` is where a command writes its resolved settings: after the folder is
    claimed (so the file does not make it "non-empty"), before any run."""
    from flexmoe.benchmarks.environment import load_plugin
    from flexmoe.benchmarks.solvers import SolverGrid
    from flexmoe.benchmarks.sweeps import solver_sweep

    load_plugin(plugin)
    grid = SolverGrid(backends=("t_favourite",), instances_dir=instances, plugins=(plugin,))
    out = tmp_path / "out"
    seen: list[list[str]] = []

    def prepare(folder: Path) -> None:
        seen.append(sorted(p.name for p in folder.iterdir()))
        (folder / "config.toml").write_text("backends = 't_favourite'\n")

    results = solver_sweep(grid, out, "test", "now", progress=False, prepare=prepare)
    assert seen == [["meta.json"]] and len(results.rows) == 2
    assert (out / "config.toml").is_file()
    resumed = solver_sweep(grid, out, "test", "now", progress=False, resume=True, prepare=prepare)
    assert len(resumed.rows) == 2


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="Linux: prctl")
def test_the_host_process_is_not_made_a_subreaper(tmp_path, plugin, instances):
    """A subreaper adopts every orphan of the process it runs in (Ray's daemons in a
    test session, which then never see their parent end): only the solver child is one."""
    import ctypes
    import ctypes.util

    assert main([*_solvers_args(plugin, instances, tmp_path / "out", "t_daemon"), "--quiet"]) == 0
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    flag = ctypes.c_int(-1)
    assert libc.prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    assert flag.value == 0
