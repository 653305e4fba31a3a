"""``flexmoe-bench report``: one Markdown file from result folders (tables + PNG links)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flexmoe.benchmarks.results import now, read_meta

__all__ = ["render_report", "write_report"]

_TITLES = {"solvers": "Assignment backends", "fl": "Federated policies"}
_LIBRARIES = ("flexmoe", "numpy", "ortools", "highspy", "PuLP", "cvxpy", "networkx", "torch")


def write_report(folders: list[Path], output: Path) -> Path:
    """Render `folders` into `output`; image links are relative to `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_report(folders, output.parent))
    return output


def render_report(folders: list[Path], base: Path) -> str:
    """The Markdown text; each folder becomes a section (raises on a non-result folder)."""
    metas = [(folder, read_meta(folder)) for folder in folders]
    parts = [
        "# flexmoe-bench report",
        "",
        f"Generated {now()} from {', '.join(f'`{f}`' for f, _ in metas)}.",
    ]
    for folder, meta in metas:
        parts += ["", *_section(folder, meta, base)]
    return "\n".join(parts) + "\n"


def _section(folder: Path, meta: dict[str, Any], base: Path) -> list[str]:
    title = _TITLES.get(meta.get("kind", ""), "Results")
    lines = [f"## {title} — `{folder}`", "", f"```\n{meta.get('command', '')}\n```", ""]
    lines.append(_machine(meta))
    counts = meta.get("counts", {})
    if counts:
        lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "."]
    summary = folder / meta.get("summary", "summary.md")
    if summary.is_file():
        lines += ["", summary.read_text().rstrip()]
    for figure in meta.get("figures", []):
        path = Path(os.path.relpath(folder / figure, base))
        lines += ["", f"![{Path(figure).stem.replace('_', ' ')}]({path.as_posix()})"]
    return lines


def _machine(meta: dict[str, Any]) -> str:
    env = meta.get("environment", {})
    found = meta.get("versions", {})
    libs = ", ".join(f"{name} {found[name]}" for name in _LIBRARIES if name in found)
    return (
        f"Ran {meta.get('started', '?')} → {meta.get('finished', '?')} on "
        f"{env.get('platform', '?')}, {env.get('cpu_count', '?')} CPUs, "
        f"{env.get('memory_gib', '?')} GiB; Python {found.get('python', '?')}"
        + (f"; {libs}" if libs else "")
        + "."
    )
