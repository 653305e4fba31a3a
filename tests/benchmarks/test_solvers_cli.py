"""`flexmoe-bench solvers` end to end on tiny grids: files, plots, limits, verification."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import matplotlib.image
import pytest
from bench_support import (  # fixtures
    instances_fixture,  # noqa: F401
    isolated_registry_fixture,  # noqa: F401
    plugin_fixture,  # noqa: F401
)

from flexmoe.assign import available_backends
from flexmoe.benchmarks.cli import main
from flexmoe.benchmarks.plots import PNG_SIGNATURE
from flexmoe.benchmarks.records import read_jsonl


def _rows(out: Path) -> dict[tuple[str, str], dict[str, object]]:
    return {(r.backend, r.instance): r.to_dict() for r in read_jsonl(out / "runs.jsonl")}


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_files_tables_and_plots(tmp_path, plugin, instances, capsys):
    out = tmp_path / "out"
    status = main(["solvers", "--plugin", plugin, "--instances", str(instances),
                   "--backends", "t_favourite,t_picky,t_crash", "--time-limit", "5",
                   "--out", str(out), "--no-progress"])  # fmt: skip
    assert status == 0
    rows = _rows(out)
    assert len(rows) == 6
    good = rows[("t_favourite", "eye3")]
    assert good["status"] == "feasible" and good["verified"] is True
    assert good["gap_to_best"] == 0.0 and good["under_load_min"] == 0
    assert good["peak_mib"] > 1 and good["versions"]["numpy"]
    assert rows[("t_picky", "eye4")]["status"] == "unsupported"
    crashed = rows[("t_crash", "eye4")]
    assert crashed["status"] == "crash" and "deliberate failure" in crashed["message"]
    with (out / "runs.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
    for name in ("solve_time.png", "objective_gap.png", "load_cv.png"):
        _assert_png(out / name)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "solvers" and meta["counts"] == {"runs": 6, "rejected": 0}
    printed = capsys.readouterr().out
    assert "t_favourite" in printed and "feasible 1" in printed
    assert "| t_picky | eye3 |" in (out / "summary.md").read_text()


def test_hung_backend_is_killed_and_the_sweep_goes_on(tmp_path, plugin, instances):
    out = tmp_path / "out"
    start = time.monotonic()
    status = main(["solvers", "--plugin", plugin, "--instances", str(instances),
                   "--backends", "t_sleepy,t_favourite", "--time-limit", "0.5", "--grace", "0.5",
                   "--out", str(out), "--no-progress"])  # fmt: skip
    assert status == 0
    assert time.monotonic() - start < 30
    rows = _rows(out)
    for name in ("eye3", "eye4"):
        assert rows[("t_sleepy", name)]["status"] == "timeout"
        assert "killed after 1 s" in rows[("t_sleepy", name)]["message"]
        assert rows[("t_favourite", name)]["status"] == "feasible"


def test_verifier_rejection_fails_the_run(tmp_path, plugin, instances, capsys):
    out = tmp_path / "out"
    status = main(["solvers", "--plugin", plugin, "--instances", str(instances),
                   "--backends", "t_liar", "--out", str(out), "--no-progress"])  # fmt: skip
    assert status == 1
    row = _rows(out)[("t_liar", "eye3")]
    assert row["status"] == "error" and row["verified"] is False
    assert "load_min" in row["violations"]
    assert "VERIFIER REJECTED t_liar on eye3" in capsys.readouterr().err
    assert json.loads((out / "meta.json").read_text())["counts"]["rejected"] == 2


def test_memory_limit(tmp_path, plugin, instances):
    out = tmp_path / "out"
    status = main(["solvers", "--plugin", plugin, "--instances", str(instances),
                   "--backends", "t_hog", "--memory-limit", "1", "--out", str(out),
                   "--no-progress"])  # fmt: skip
    assert status == 0
    row = _rows(out)[("t_hog", "eye3")]
    assert row["status"] == "memory"
    assert row["peak_mib"] < 1024


@pytest.mark.skipif("flow" not in available_backends(), reason="needs the flow backend")
def test_generated_instances(tmp_path):
    out = tmp_path / "out"
    status = main(["solvers", "--backends", "flow", "--sizes", "20x4x2", "--seeds", "0-1",
                   "--generator", "uniform", "--out", str(out), "--no-progress"])  # fmt: skip
    assert status == 0
    rows = _rows(out)
    assert set(rows) == {("flow", "uniform-20x4x2-s0"), ("flow", "uniform-20x4x2-s1")}
    assert all(r["status"] == "optimal" and r["gap_to_best"] == 0.0 for r in rows.values())
    assert sorted(p.name for p in (out / "instances").iterdir()) == [
        "uniform-20x4x2-s0.npz",
        "uniform-20x4x2-s1.npz",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "100x16"], "--sizes: expected NxExK like 1000x64x8; got '100x16'"),
        (["--sizes", "10x4x8"], "--sizes: need N, E, K >= 1 and K <= E; got '10x4x8'"),
        (["--seeds", "a-b"], "--seeds: expected integers or ranges like 0-4 or 0,3,7; got 'a-b'"),
        (["--backends", "nope"], "--backends: unknown 'nope'; valid: "),
        (["--generator", "odd"], "--generator: unknown 'odd'; valid: "),
        (["--time-limit", "0"], "--time-limit: expected a positive number; got 0.0"),
        (["--plugin", "no_such_module_xyz"], "--plugin: cannot import 'no_such_module_xyz'"),
        (["--instances", "."], "--instances: no .npz problem files in '.'"),
    ],
)
def test_bad_input_names_the_flag(args, message, capsys, tmp_path):
    status = main(["solvers", *args, "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(f"flexmoe-bench solvers: error: {message}")
    assert not (tmp_path / "out").exists()


def test_unknown_flag_is_argparse_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["solvers", "--size", "1x1x1"])
    assert exc.value.code == 2


def test_a_bad_instance_file_is_listed_and_the_sweep_goes_on(tmp_path, plugin, instances, capsys):
    """Issue 13, item 7: one unreadable file does not abort the sweep; it is listed with
    its fault (stderr, meta.json, the report) and the exit status says bad input."""
    (instances / "garbage.npz").write_bytes(b"not a zip file at all")
    (instances / "empty.npz").write_bytes(b"")
    out = tmp_path / "out"
    status = main(["solvers", "--plugin", plugin, "--instances", str(instances),
                   "--backends", "t_favourite", "--out", str(out), "--quiet"])  # fmt: skip
    assert status == 2
    assert {r.instance for r in read_jsonl(out / "runs.jsonl")} == {"eye3", "eye4"}
    err = capsys.readouterr().err
    for name in ("empty.npz", "garbage.npz"):
        assert f"error: skipped {instances / name}: " in err
    meta = json.loads((out / "meta.json").read_text())
    assert [Path(s["file"]).name for s in meta["skipped"]] == ["empty.npz", "garbage.npz"]
    assert all(s["error"] for s in meta["skipped"]) and meta["counts"]["skipped"] == 2
    assert main(["report", str(out), "-o", str(tmp_path / "r.md")]) == 0
    assert f"- `{instances / 'garbage.npz'}`: " in (tmp_path / "r.md").read_text()


def test_every_backend_as_a_multiple_of_the_floor(tmp_path, plugin, instances):
    """Issue 14: each row has its instance's top-k floor and its time over it."""
    out = tmp_path / "out"
    assert main(["solvers", "--plugin", plugin, "--instances", str(instances),
                 "--backends", "t_favourite,t_sleepy", "--time-limit", "0.2", "--grace", "0.2",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    rows = _rows(out)
    for name in ("eye3", "eye4"):
        good, slow = rows[("t_favourite", name)], rows[("t_sleepy", name)]
        assert 0 < good["floor_time"] < 0.1 and good["floor_time"] == slow["floor_time"]
        assert good["x_floor"] == pytest.approx(good["wall_time"] / good["floor_time"])
        assert slow["x_floor"] == "nan"  # a time-out has no time
    header = (out / "summary.md").read_text().splitlines()[0]
    assert "| wall s | × floor |" in header and "| certified gap | gap to best |" in header


def test_pdf_next_to_every_png(tmp_path, plugin, instances):
    out = tmp_path / "out"
    assert main(["solvers", "--plugin", plugin, "--instances", str(instances),
                 "--backends", "t_favourite", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
