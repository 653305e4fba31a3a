"""Problems as ``.npz`` (no pickle); results are JSON (:meth:`Assignment.save`)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from flexmoe.assign.errors import InvalidProblemError
from flexmoe.assign.problem import FRIENDLY_ROWS, AssignmentProblem, BudgetRow

__all__ = ["load_problem", "save_problem"]

#: Written by :func:`save_problem`; version 2 adds the user's budget rows.
_FORMAT = "flexmoe.assign.problem/2"
#: Every version :func:`load_problem` reads.
_READABLE = ("flexmoe.assign.problem/1", _FORMAT)
#: Keys of the user's budget rows: their names, then the cost and limit of row ``i``.
_ROW_NAMES, _ROW_COST, _ROW_LIMIT = "budget_names", "budget_cost_{}", "budget_limit_{}"


def save_problem(path: str | Path, problem: AssignmentProblem) -> Path:
    """Write `problem` to an ``.npz`` file (absent optional fields are left out).

    The ``storage`` and ``compute`` rows are stored as their fields, other budget rows
    by name, cost and limit.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from flexmoe.assign import AssignmentProblem, BudgetRow, load_problem, save_problem
    >>> p = AssignmentProblem(np.eye(2), max_experts=1, name="tiny",
    ...                       budgets=[BudgetRow("download", [2.0, 1.0], 2.0)])
    >>> path = save_problem(pathlib.Path(tempfile.mkdtemp()) / "tiny.npz", p)
    >>> q = load_problem(path)
    >>> q.name, [row.name for row in q.budgets], q.budget("download").cost.tolist()
    ('tiny', ['download'], [2.0, 1.0])
    """
    arrays: dict[str, Any] = {"format": np.array(_FORMAT)}
    for f in fields(problem):
        value = getattr(problem, f.name)
        if f.name == "budgets":
            arrays |= _row_arrays(value)
        elif value is not None:
            arrays[f.name] = np.asarray(str(value) if f.name == "balance_metric" else value)
    path = Path(path)
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def _row_arrays(rows: tuple[BudgetRow, ...]) -> dict[str, np.ndarray]:
    extra = [row for row in rows if row.name not in FRIENDLY_ROWS]
    if not extra:
        return {}
    arrays = {_ROW_NAMES: np.array([row.name for row in extra])}
    for i, row in enumerate(extra):
        arrays[_ROW_COST.format(i)], arrays[_ROW_LIMIT.format(i)] = row.cost, row.limit
    return arrays


def load_problem(path: str | Path) -> AssignmentProblem:
    """Read a problem written by :func:`save_problem` (validated again on load)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InvalidProblemError(f"{path}: not a flexmoe problem file ({err})") from None
    with data:
        if "format" not in data or str(data["format"]) not in _READABLE:
            raise InvalidProblemError(f"{path}: not a flexmoe problem file (no `{_FORMAT}` tag)")
        arrays = {key: data[key] for key in data.files if key != "format"}
    values: dict[str, Any] = {"budgets": _read_rows(path, arrays)}
    known = {f.name for f in fields(AssignmentProblem)} - {"budgets"}
    for key, value in arrays.items():
        if key not in known:
            raise InvalidProblemError(f"{path}: unknown field `{key}`")
        values[key] = value.item() if value.ndim == 0 else value
    return AssignmentProblem(**values)


def _read_rows(path: Path, arrays: dict[str, np.ndarray]) -> tuple[BudgetRow, ...]:
    """Take the budget rows' keys out of `arrays` and build the rows."""
    if _ROW_NAMES not in arrays:
        return ()
    names = arrays.pop(_ROW_NAMES)
    rows = []
    for i, name in enumerate(np.atleast_1d(names).tolist()):
        keys = _ROW_COST.format(i), _ROW_LIMIT.format(i)
        if any(key not in arrays for key in keys):
            raise InvalidProblemError(f"{path}: budget row {name!r} has no `{'` or `'.join(keys)}`")
        rows.append(BudgetRow(str(name), arrays.pop(keys[0]), arrays.pop(keys[1])))
    return tuple(rows)
