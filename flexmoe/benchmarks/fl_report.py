"""The Markdown a researcher pastes: per partition of a federated sweep, validation,
the choice made on it, test (once), paired differences, cost and balance.

Built from the saved histories by :mod:`flexmoe.benchmarks.fl_stats`; ``summary.md`` of
an ``fl`` result folder ends with it (and ``flexmoe-bench report`` includes it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flexmoe.benchmarks.fl_stats import (
    COST,
    METRICS,
    SELECT,
    ArmSummary,
    Choice,
    choose,
    paired,
    per_seed,
    summarise_arms,
)
from flexmoe.benchmarks.tables import markdown_table, mean_pm

__all__ = ["Runs", "fl_markdown", "withheld"]

#: ``{arm: {seed: History.to_dict()}}`` of one partition.
Runs = Mapping[str, Mapping[int, Mapping[str, Any]]]

VALIDATION = ("pv", "pv5", "gv", "gv5")
TEST = ("pt", "pt5", "gt", "gt5")
PAIRED_ON = ("pt", "pt5", "gt5")
COSTS = ("holders_cv", "routed_cv", "switches", "kb_down", "kb_up", "assign_share", "round_s")
INTERVALS = (
    "95 % intervals: BCa bootstrap (10,000 resamples) / paired t; **bold** = both exclude 0; "
    "then the seeds won. With {n} seeds the bootstrap cannot be wider than the spread of {n} "
    "numbers (too narrow): trust the t interval."
)


def withheld(runs: Runs, options: Sequence[str]) -> set[str]:
    """The options not chosen on validation: their test figures are not reported."""
    present = [o for o in options if o in runs]
    if len(present) < 2:
        return set()
    return set(present) - {choose(runs, present).chosen}


def fl_markdown(
    by_partition: Mapping[str, Runs], *, options: Sequence[str] = (), reference: str = ""
) -> str:
    """Every section for every partition (a ``###`` heading each)."""
    parts = []
    for partition, runs in by_partition.items():
        if runs:
            parts += [f"### Partition `{partition}`", _partition(runs, options, reference)]
    return "\n\n".join(parts)


def _partition(runs: Runs, options: Sequence[str], reference: str) -> str:
    summaries = summarise_arms(runs)
    arms = list(summaries)
    present = [o for o in options if o in runs]
    choice = choose(runs, present) if len(present) > 1 else None
    hidden = set(present) - {choice.chosen} if choice else set()
    ref = choice.chosen if choice and reference in present else reference
    ref = ref if ref in runs else arms[0]
    seeds = sorted({s for a in summaries.values() for s in a.seeds})
    blocks = [f"Seeds {_seed_list(seeds)} (paired: the same data, partition and initial "
              "model for every arm); mean ± std over seeds.",
              "#### Validation (every choice is made here)",
              _table(summaries, arms, VALIDATION)]  # fmt: skip
    if choice:
        blocks += ["#### The fitness option chosen on validation", _choice(choice, runs)]
    shown = [a for a in arms if a not in hidden]
    blocks += ["#### Test (reported once" + (", for the chosen option" if choice else "") + ")",
               _table(summaries, shown, TEST)]  # fmt: skip
    if len(seeds) > 1:
        blocks += [f"#### Paired differences, `{ref}` − each other arm",
                   INTERVALS.format(n=len(seeds)),
                   _paired(runs, ref, shown, PAIRED_ON, "test"),
                   _paired(runs, ref, arms, ("pv", "pv5", "gv5"), "validation")]  # fmt: skip
    blocks += ["#### Balance and cost", _table(summaries, arms, COSTS, backends=True)]
    return "\n\n".join(blocks)


def _seed_list(seeds: list[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _table(
    summaries: Mapping[str, ArmSummary], arms: Sequence[str], keys: Sequence[str],
    *, backends: bool = False,
) -> str:  # fmt: skip
    headers = ["arm", "seeds", *(METRICS[k].label for k in keys)]
    if backends:
        headers.append("assigned by")
    rows = []
    for arm in arms:
        s = summaries[arm]
        cells = [arm, str(len(s.seeds))]
        for key in keys:
            scale = 100.0 if key == "assign_share" else 1.0
            cells.append(mean_pm(scale * s.mean[key], scale * s.std[key], _digits(key)))
        rows.append(cells + ([", ".join(s.backends)] if backends else []))
    return markdown_table(headers, rows)


def _digits(key: str) -> int:
    return {"kb_down": 1, "kb_up": 1, "assign_share": 2, "round_s": 2, "switches": 2}.get(key, 3)


def _choice(choice: Choice, runs: Runs) -> str:
    rule = (
        f"Rule (fixed before the runs): the one-standard-error rule on `{METRICS[SELECT].label}`"
        f" — among the options within one standard error (of the paired difference) of the "
        f"best mean, the one that downloads the fewest bytes. Best mean: `{choice.best}`; "
        f"**chosen: `{choice.chosen}`**."
    )
    rows = []
    for option, gap in choice.gaps.items():
        cost = per_seed(runs[option], COST)
        kb = sum(cost.values()) / len(cost)
        rows.append([option, gap.cell() if option != choice.best else "(best)", f"{kb:.1f}",
                     "yes" if choice.within[option] else "no"])  # fmt: skip
    table = markdown_table(
        ["option", f"{METRICS[SELECT].label} − best", METRICS[COST].label, "within 1 SE"], rows
    )
    return f"{rule}\n\n{table}"


def _paired(runs: Runs, ref: str, arms: Sequence[str], keys: Sequence[str], split: str) -> str:
    headers = [f"{ref} − arm ({split})", *(METRICS[k].label for k in keys)]
    rows = []
    for arm in arms:
        if arm == ref:
            continue
        cells = [paired(per_seed(runs[ref], k), per_seed(runs[arm], k)).cell() for k in keys]
        rows.append([arm, *cells])
    return markdown_table(headers, rows)
