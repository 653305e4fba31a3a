"""Problems as ``.npz`` (no pickle); results are JSON (:meth:`Assignment.save`)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from flexmoe.assign.errors import InvalidProblemError
from flexmoe.assign.problem import AssignmentProblem

__all__ = ["load_problem", "save_problem"]

_FORMAT = "flexmoe.assign.problem/1"


def save_problem(path: str | Path, problem: AssignmentProblem) -> Path:
    """Write `problem` to an ``.npz`` file (absent optional fields are left out).

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from flexmoe.assign import AssignmentProblem, load_problem, save_problem
    >>> p = AssignmentProblem(np.eye(2), max_experts=1, name="tiny")
    >>> path = save_problem(pathlib.Path(tempfile.mkdtemp()) / "tiny.npz", p)
    >>> load_problem(path).name
    'tiny'
    """
    arrays: dict[str, Any] = {"format": np.array(_FORMAT)}
    for f in fields(problem):
        value = getattr(problem, f.name)
        if value is not None:
            arrays[f.name] = np.asarray(str(value) if f.name == "balance_metric" else value)
    path = Path(path)
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_problem(path: str | Path) -> AssignmentProblem:
    """Read a problem written by :func:`save_problem` (validated again on load)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InvalidProblemError(f"{path}: not a flexmoe problem file ({err})") from None
    with data:
        if "format" not in data or str(data["format"]) != _FORMAT:
            raise InvalidProblemError(f"{path}: not a flexmoe problem file (no `{_FORMAT}` tag)")
        known = {f.name for f in fields(AssignmentProblem)}
        values: dict[str, Any] = {}
        for key in data.files:
            if key == "format":
                continue
            if key not in known:
                raise InvalidProblemError(f"{path}: unknown field `{key}`")
            value = data[key]
            values[key] = value.item() if value.ndim == 0 else value
    return AssignmentProblem(**values)
