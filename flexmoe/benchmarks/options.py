"""Parsers for the grid flags of ``flexmoe-bench``; each error names its flag.

Every parser raises :class:`UsageError`, which the CLI turns into a message on stderr
and exit status 2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Size",
    "UsageError",
    "parse_int_list",
    "parse_names",
    "parse_positive",
    "parse_sizes",
]


class UsageError(ValueError):
    """Bad command-line input; the message starts with the offending flag."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag


@dataclass(frozen=True, order=True)
class Size:
    """One instance size of the solver grid: clients × experts × experts per client."""

    n_clients: int
    n_experts: int
    k: int

    def __str__(self) -> str:
        return f"{self.n_clients}x{self.n_experts}x{self.k}"

    @property
    def pairs(self) -> int:
        """Client–expert pairs: the number of decision variables."""
        return self.n_clients * self.n_experts


_SIZE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


def parse_sizes(text: str, flag: str = "--sizes") -> list[Size]:
    """Comma-separated ``NxExK`` sizes.

    Examples
    --------
    >>> parse_sizes("100x16x4,1000x64x8")
    [Size(n_clients=100, n_experts=16, k=4), Size(n_clients=1000, n_experts=64, k=8)]
    >>> parse_sizes("100x16")
    Traceback (most recent call last):
    ...
    flexmoe.benchmarks.options.UsageError: --sizes: expected NxExK like 1000x64x8; got '100x16'
    """
    sizes = []
    for item in _items(text, flag):
        match = _SIZE.match(item.lower())
        if match is None:
            raise UsageError(flag, f"expected NxExK like 1000x64x8; got {item!r}")
        n, e, k = (int(g) for g in match.groups())
        if min(n, e, k) < 1 or k > e:
            raise UsageError(flag, f"need N, E, K >= 1 and K <= E; got {item!r}")
        sizes.append(Size(n, e, k))
    return sizes


def parse_int_list(text: str, flag: str = "--seeds") -> list[int]:
    """Integers and inclusive ranges: ``0-4``, ``0,3,7``, ``0-2,10``.

    Examples
    --------
    >>> parse_int_list("0-2,7")
    [0, 1, 2, 7]
    >>> parse_int_list("3-1")
    Traceback (most recent call last):
    ...
    flexmoe.benchmarks.options.UsageError: --seeds: a range must go up, like 0-4; got '3-1'
    """
    values: list[int] = []
    for item in _items(text, flag):
        match = re.match(r"^(\d+)(?:-(\d+))?$", item)
        if match is None:
            raise UsageError(flag, f"expected integers or ranges like 0-4 or 0,3,7; got {item!r}")
        lo, hi = int(match[1]), int(match[2] or match[1])
        if hi < lo:
            raise UsageError(flag, f"a range must go up, like 0-4; got {item!r}")
        values.extend(v for v in range(lo, hi + 1) if v not in values)
    return values


def parse_names(text: str, flag: str, valid: list[str] | tuple[str, ...]) -> list[str]:
    """Comma-separated names, each one of `valid` (the message lists them).

    Examples
    --------
    >>> parse_names("flex,full", "--methods", ["flex", "greedy", "full"])
    ['flex', 'full']
    >>> parse_names("flex,best", "--methods", ["flex", "full"])
    Traceback (most recent call last):
    ...
    flexmoe.benchmarks.options.UsageError: --methods: unknown 'best'; valid: flex, full
    """
    names = _items(text, flag)
    for name in names:
        if name not in valid:
            raise UsageError(flag, f"unknown {name!r}; valid: {', '.join(valid)}")
    return list(dict.fromkeys(names))


def parse_positive(value: float | None, flag: str, *, integer: bool = False) -> None:
    """Raise :class:`UsageError` unless `value` is None or a positive number."""
    if value is None:
        return
    if not value > 0 or (integer and value != int(value)):
        kind = "a positive integer" if integer else "a positive number"
        raise UsageError(flag, f"expected {kind}; got {value!r}")


def _items(text: str, flag: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise UsageError(flag, f"expected a comma-separated list; got {text!r}")
    return items
