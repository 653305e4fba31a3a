"""Plain-text and Markdown tables, and the number formats they share."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["fmt", "markdown_table", "mean_pm", "median", "text_table"]


def median(values: Sequence[float | int | None]) -> float:
    """Median of the finite values; NaN when there are none.

    Examples
    --------
    >>> median([3.0, float("nan"), 1.0, None, 2.0])
    2.0
    """
    finite = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not finite:
        return math.nan
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2


def fmt(value: float | int | str | None, kind: str = "g") -> str:
    """Format a cell: ``g`` (4 significant digits), ``s`` (seconds), ``%`` (percent),
    ``x`` (a ratio: one decimal below 10, then whole numbers with thousands separators).

    Examples
    --------
    >>> fmt(0.000123, "s"), fmt(12.3456), fmt(0.0123, "%"), fmt(float("nan"))
    ('0.000123', '12.35', '1.23%', '-')
    >>> fmt(6.54, "x"), fmt(3940.2, "x")
    ('6.5', '3,940')
    """
    if value is None or isinstance(value, str):
        return "-" if value is None else value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if kind == "%":
        return f"{100 * value:.3g}%"
    if kind == "s":
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if kind == "x":
        return f"{value:.1f}" if abs(value) < 10 else f"{value:,.0f}"
    return f"{value:.4g}"


def mean_pm(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std``; the mean alone when there is no spread (one seed: NaN std).

    Examples
    --------
    >>> mean_pm(0.9123, 0.0214), mean_pm(0.9123, float("nan")), mean_pm(float("nan"), 0.1)
    ('0.912 ± 0.021', '0.912', '-')
    """
    if not math.isfinite(mean):
        return "-"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width table; text columns left-aligned, the others right-aligned.

    Examples
    --------
    >>> print(text_table(["name", "n"], [["flow", "3"], ["greedy", "12"]]))
    name     n
    ------  --
    flow     3
    greedy  12
    """
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    numeric = [all(_numeric(row[i]) for row in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).rjust(w) if num else str(c).ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped).

    Examples
    --------
    >>> print(markdown_table(["a", "b"], [["1", "x|y"]]))
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r) for r in rows)])


def _numeric(cell: str) -> bool:
    text = str(cell).rstrip("%").replace("±", "").replace(" ", "").replace(",", "")
    if text == "-":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True
