"""The package installs light and says which extra a part needs (issue 16).

The fast tests check the import graph and the extras table in this environment; the
slow one builds a fresh virtual environment, installs the package as a user would —
``pip install .`` (no extras), then ``pip install '.[all]'`` — and checks what each
install gives. pip uses the machine's index settings (a local wheel cache here; PyPI on
a CI machine without one).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from flexmoe.extras import EXTRAS, MissingExtraError, require_extra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What must stay out of ``import flexmoe.assign``: every optional library.
HEAVY = ("torch", "matplotlib", "tqdm", "cvxpy", "pulp", "sklearn", "flwr")


def _python(code: str, python: str = sys.executable, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600, **kw)


def _loaded(module: str) -> list[str]:
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    done = _python(code, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    return [m for m in HEAVY if f"'{m}'" in done.stdout]


@pytest.mark.parametrize("module", ["flexmoe", "flexmoe.assign", "flexmoe.benchmarks.cli"])
def test_importing_the_library_imports_no_optional_library(module):
    assert _loaded(module) == []


def test_the_extras_table_matches_pyproject():
    """Every import name of an extra in :data:`EXTRAS` comes from a distribution that
    the extra of the same name lists in ``pyproject.toml``."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    owners = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        listed = {re.split(r"[\[<>=;! ]", r)[0].lower() for r in optional[extra]}
        for module in modules:
            dists = {d.lower() for d in owners.get(module, [])}
            assert dists & listed, f"{module} ({dists}) is not in the `{extra}` extra: {listed}"
    assert set(EXTRAS) | {"all", "dev"} == set(optional)
    assert optional["all"] == ["flexmoe[" + ",".join(EXTRAS) + "]"]


def test_torch_is_a_range_that_the_cpu_wheel_satisfies():
    (torch,) = [r for r in PYPROJECT["project"]["optional-dependencies"]["fl"]
                if r.startswith("torch")]  # fmt: skip
    assert "==" not in torch and ">=" in torch
    from packaging.requirements import Requirement

    assert Requirement(torch).specifier.contains("2.13.0")


def test_a_missing_extra_names_the_pip_command():
    with pytest.raises(MissingExtraError, match=r"install the extra: pip install 'flexmoe\[fl\]'"):
        require_extra("fl", modules=("no_such_module_xyz",))


@pytest.mark.parametrize(
    ("code", "hidden", "extra"),
    [("from flexmoe.fedloop import run", "torch", "fl"), ("import flexmoe.models", "torch", "fl"),
     ("from flexmoe.fedloop import run", "sklearn", "fl"), ("import flexmoe.flower", "torch", "fl")],
)  # fmt: skip
def test_using_a_part_without_its_extra_says_which_to_install(code, hidden, extra):
    """The guard at each part's boundary; `hidden` looks uninstalled in the child."""
    preamble = (
        "import importlib.util as u\n"
        "real = u.find_spec\n"
        f"u.find_spec = lambda name, *a: None if name.split('.')[0] == {hidden!r} "
        "else real(name, *a)\n"
    )
    done = _python(preamble + code, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("flexmoe.extras.MissingExtraError: `flexmoe.") and f"needs {hidden}" in last
    )
    assert last.endswith(f"not installed; install the extra: pip install 'flexmoe[{extra}]'")


# -- a fresh virtual environment -------------------------------------------------------


def _source_copy(tmp: Path) -> Path:
    """The files a source distribution holds, copied: pip builds there, not in the repo."""
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "flexmoe", source / "flexmoe",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return source


def _pip(python: Path, *args: str) -> None:
    """``pip install``; without byte-compiling (a third of the time: torch alone has
    thousands of files), Python compiles what it imports."""
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-compile", *args],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def _readme_example() -> str:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]


def _check_base(python: Path, bin_dir: Path, work: Path) -> None:
    """`pip install .`: the README's example runs, nothing optional is imported, each
    missing part names its extra, and the wheel's types are found by mypy."""
    code = _readme_example() + (
        "\nimport sys\nfrom flexmoe.assign import available_backends\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules], available_backends())\n"
    )
    done = _python(code, str(python), cwd=work)
    assert done.returncode == 0, done.stderr
    status, objective, _ = done.stdout.splitlines()[0].split()
    assert status == "optimal" and objective.startswith("7440.165")
    assert done.stdout.splitlines()[-1] == "[] ['flow', 'milp', 'greedy']"
    for code, extra in (("from flexmoe.fedloop import run", "fl"), ("import flexmoe.models", "fl"),
                        ("from flexmoe.assign import *; import flexmoe.flower", "fl")):  # fmt: skip
        done = _python(code, str(python), cwd=work)
        assert f"install the extra: pip install 'flexmoe[{extra}]'" in done.stderr, done.stderr
    bench = subprocess.run([str(bin_dir / "flexmoe-bench"), "solvers", "--sizes", "10x4x2"],
                           capture_output=True, text=True, cwd=work, timeout=120)  # fmt: skip
    assert bench.returncode == 2
    assert bench.stderr == (
        "flexmoe-bench solvers: error: this command needs matplotlib, tqdm, which are not "
        "installed; install the extra: pip install 'flexmoe[bench]'\n"
    )
    help_ = subprocess.run([str(bin_dir / "flexmoe"), "--help"], capture_output=True,
                           text=True, cwd=work, timeout=120)  # fmt: skip
    assert help_.returncode == 0 and "train" in help_.stdout, help_.stderr
    train = subprocess.run([str(bin_dir / "flexmoe"), "train", "--rounds", "1", "--out",
                            str(work / "run")], capture_output=True, text=True, cwd=work,
                           timeout=120)  # fmt: skip
    assert train.returncode == 2 and "Traceback" not in train.stderr, train.stderr
    assert train.stderr.strip().endswith("install the extra: pip install 'flexmoe[fl]'")
    user = work / "user.py"
    user.write_text("from flexmoe.assign import AssignmentProblem, solve\n"
                    "reveal_type(solve)\n")  # fmt: skip
    typed = subprocess.run([sys.executable, "-m", "mypy", "--python-executable", str(python),
                            "--no-incremental", str(user)], capture_output=True, text=True,
                           cwd=work, timeout=300)  # fmt: skip
    assert "Cannot find implementation or library stub" not in typed.stdout, typed.stdout
    assert "def (problem: flexmoe.assign.problem.AssignmentProblem" in typed.stdout, typed.stdout


def _check_wheel(python: Path, source: Path, work: Path) -> None:
    done = subprocess.run([str(python), "-m", "pip", "wheel", "--quiet", "--no-deps",
                           "--wheel-dir", str(work / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (work / "dist").glob("flexmoe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "flexmoe/py.typed" in names
    assert any(re.fullmatch(r"flexmoe-[^/]+\.dist-info/licenses/LICENSE", n) for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    assert b"License-Expression: MIT" in metadata and b"Project-URL: " in metadata


def _check_all(python: Path, bin_dir: Path, work: Path) -> None:
    """`pip install '.[all]'`: every backend available, every part imports, every
    command runs, and a tiny sweep runs every backend."""
    code = (
        "from flexmoe.assign import available_backends, registered_backends\n"
        "import flexmoe.fedloop, flexmoe.models, flexmoe.flower, flexmoe.benchmarks.plots\n"
        "print(available_backends() == list(registered_backends()), available_backends())\n"
    )
    done = _python(code, str(python), cwd=work)
    assert done.returncode == 0 and done.stdout.startswith("True"), done.stdout + done.stderr
    for command in (["flexmoe", "--help"], ["flexmoe", "train", "--help"],
                    ["flexmoe-bench", "--help"], ["flexmoe-bench", "fl", "--help"]):  # fmt: skip
        done = subprocess.run([str(bin_dir / command[0]), *command[1:]], capture_output=True,
                              text=True, cwd=work, timeout=300)  # fmt: skip
        assert done.returncode == 0, f"{command}: {done.stderr}"
    out = work / "sweep"
    done = subprocess.run([str(bin_dir / "flexmoe-bench"), "solvers", "--sizes", "20x4x2",
                           "--seeds", "0", "--time-limit", "20", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=work, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    statuses = {row["backend"]: row["status"] for row in rows}
    assert {"flow", "milp", "milp:pulp", "convex", "greedy"} <= set(statuses)
    assert set(statuses.values()) <= {"optimal", "feasible", "relaxed"}, statuses


@pytest.mark.slow
def test_a_fresh_install_then_all_extras(tmp_path):
    """`pip install .` then `pip install '.[all]'` into one fresh venv (about 3 minutes;
    CPU torch first, as `make` does, so that pip pulls no CUDA wheels)."""
    source = _source_copy(tmp_path)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    python = bin_dir / "python"
    work = tmp_path / "work"
    work.mkdir()
    _pip(python, str(source))
    _check_base(python, bin_dir, work)
    _check_wheel(python, source, work)
    _pip(python, "torch==2.13.0")
    _pip(python, f"{source}[all]")
    _check_all(python, bin_dir, work)
