"""``flexmoe-bench report``: one Markdown file from result folders (tables + PNG links)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flexmoe.benchmarks.results import now, read_meta

__all__ = ["render_report", "write_report"]

_TITLES = {"solvers": "Assignment backends", "fl": "Federated policies"}

#: What the columns of each kind of table mean; the report ends with those it uses.
GLOSSARY: dict[str, list[tuple[str, str]]] = {
    "solvers": [
        (
            "wall s",
            "seconds inside `solve()`: build + solve + the independent verification; "
            "medians over the seeds of the finished runs (a time-out has no time)",
        ),
        (
            "× floor",
            "`wall s` over the physical floor of the instance: one top-k pass "
            "`np.argpartition(U, E − k, axis=1)` (best of 5), measured in the same sweep by the "
            "parent process just before the instance's runs, while no solver runs",
        ),
        (
            "certified gap",
            "the backend's own proof: (bound − objective) / |objective| from the "
            "bound it certifies; 0 % is proved optimal, a time-limited exact solver shows what it "
            "had proved when it stopped; `none`: a heuristic, no bound",
        ),
        (
            "gap to best",
            "(best known − objective) / |best known|, where the best known is the "
            "largest verified objective any backend found on the instance in this sweep; it says "
            "how far an answer is from the others, not from the optimum (see certified gap)",
        ),
        (
            "relaxed",
            "an answer that breaks constraints by design (`greedy:topk`: each client "
            "its top-k, load ignored): its objective is checked, its violations are listed, and "
            "its gap to best is negative and not comparable",
        ),
        (
            "< load_min",
            "experts whose load stays below their `load_min` (experts left "
            "under-trained); 0 for every answer that satisfies the constraints",
        ),
        ("load CV, max/mean", "coefficient of variation and max over mean of the expert loads"),
        (
            "timeout",
            "killed at the time limit plus grace; drawn as a cross on the time-limit "
            "line of `solve_time`",
        ),
        (
            "verified",
            "`yes`: every answer passed the independent checker; `NO (n)`: n answers "
            "were rejected (exit status 1)",
        ),
    ],
    "fl": [
        (
            "personalised acc",
            "each client's own gate and its assigned experts on its own test "
            "split, after the last round; mean ± std over seeds (no ± with one seed)",
        ),
        ("global acc", "the same model on the pooled test set"),
        (
            "load CV",
            "coefficient of variation of the number of clients holding each expert, "
            "mean over rounds (0: every expert held equally often)",
        ),
        ("routed CV", "the same over the samples each expert was routed"),
        (
            "rounds to target",
            "the first round whose personalised accuracy reaches the target "
            "({target}); the median over the seeds that reached it, `(2/3)`: how many did; "
            "`never`: none did",
        ),
        ("MB moved", "megabytes sent to and received from the clients, all rounds"),
    ],
}
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
    parts += ["", *_glossary(metas)]
    return "\n".join(parts) + "\n"


def _glossary(metas: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """The terms of the kinds of tables in the report, once each."""
    lines = ["## Glossary", ""]
    targets = sorted({str(m.get("settings", {}).get("target", "?")) for _, m in metas
                      if m.get("kind") == "fl"})  # fmt: skip
    for kind in dict.fromkeys(meta.get("kind", "") for _, meta in metas):
        for term, text in GLOSSARY.get(kind, []):
            lines.append(f"- **{term}**: {text.replace('{target}', ', '.join(targets))}")
    return lines


def _section(folder: Path, meta: dict[str, Any], base: Path) -> list[str]:
    title = _TITLES.get(meta.get("kind", ""), "Results")
    lines = [f"## {title} — `{folder}`", "", f"```\n{meta.get('command', '')}\n```", ""]
    lines.append(_machine(meta))
    state = meta.get("state", "finished")
    if state != "finished":
        lines += ["", f"**This sweep is {state}**: the tables hold the runs that finished; "
                  "`--resume` with the same command runs the rest."]  # fmt: skip
    counts = meta.get("counts", {})
    if counts:
        lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "."]
    summary = folder / meta.get("summary", "summary.md")
    if summary.is_file():
        lines += ["", summary.read_text().rstrip()]
    skipped = meta.get("skipped", [])
    if skipped:
        lines += ["", "Skipped input files (not run):", ""]
        lines += [f"- `{s['file']}`: {s['error']}" for s in skipped]
    for figure in meta.get("figures", []):
        path = Path(os.path.relpath(folder / figure, base))
        pdf = path.with_suffix(".pdf")
        lines += ["", f"![{Path(figure).stem.replace('_', ' ')}]({path.as_posix()})"]
        if (folder / figure).with_suffix(".pdf").is_file():
            lines += ["", f"([PDF]({pdf.as_posix()}))"]
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
