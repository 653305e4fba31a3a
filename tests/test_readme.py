"""The README's Python examples run as written (the README stays true)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_library_and_flower_examples() -> None:
    blocks = _python_blocks()
    assert len(blocks) == 2
    assert "from flexmoe.assign import" in blocks[0] and "FlexMoEStrategy" in blocks[1]


def test_library_example_runs_and_prints_what_it_says(capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(_python_blocks()[0], "README.md", "exec"), {})
    first = capsys.readouterr().out.splitlines()[0]
    status, objective, gap = first.split()
    assert status == "optimal" and objective.startswith("7440.165") and float(gap) < 1e-9


def test_flower_example_builds_a_server_and_a_client_app() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        pytest.importorskip("flwr", reason="the `flower` extra is not installed")
        from flwr.clientapp import ClientApp
        from flwr.serverapp import ServerApp

    names: dict[str, object] = {}
    exec(compile(_python_blocks()[1], "README.md", "exec"), names)
    assert isinstance(names["server"], ServerApp) and isinstance(names["client"], ClientApp)
    assert names["strategy"].moe.config.method == "flex"  # type: ignore[attr-defined]
    assert names["strategy"].moe.spec == names["sim"].federation  # type: ignore[attr-defined]
