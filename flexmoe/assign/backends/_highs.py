"""HiGHS plumbing shared by the ``milp`` and ``convex`` backends: a silent ``Highs``.

HiGHS prints a banner from C++ when a process makes its first ``Highs`` object, before
any option can be set; these helpers keep stdout clean for every ``Highs`` made here,
by PuLP or by CVXPY.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["new_highs", "quiet_stdout", "silence_highs_banner"]


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send the C-level stdout (file descriptor 1) to the null device for a moment.

    HiGHS prints its banner from C++ when the first ``Highs`` object of a process is
    made, before any option can be set.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


@functools.cache
def silence_highs_banner() -> None:
    """Make (and drop) one ``Highs`` object with stdout closed: HiGHS prints its banner
    once per process, so no later ``Highs`` — ours, PuLP's or CVXPY's — prints it."""
    import highspy

    with quiet_stdout():
        highspy.Highs()


def new_highs() -> Any:
    """A silent ``highspy.Highs``."""
    import highspy

    silence_highs_banner()
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    return highs
