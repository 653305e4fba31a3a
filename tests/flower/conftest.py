"""Fixtures of the Flower tests (the helpers are in :mod:`flower_support`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread() -> Iterator[None]:
    """One torch thread, as each simulated client (one CPU): bit-identical training."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[object]:
    """A HOME, a short temporary folder and a process mark for one test's Flower runs."""
    from flower_support import Sandbox

    box = Sandbox(tmp_path)
    yield box
    shutil.rmtree(box.tmp, ignore_errors=True)
