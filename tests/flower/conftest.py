"""Fixtures of the Flower tests (the helpers are in :mod:`flower_support`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

#: A Flower App the tests run (its modules import Flower; not test modules).
collect_ignore = ["tutorial_app"]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[object]:
    """A HOME, a short temporary folder and a process mark for one test's Flower runs."""
    from flower_support import Sandbox

    box = Sandbox(tmp_path)
    yield box
    box.end()  # what a failed test left running: only the processes with its mark
    shutil.rmtree(box.tmp, ignore_errors=True)
