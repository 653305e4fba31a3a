"""Problems as ``.npz`` (no pickle); results are JSON (:meth:`Assignment.save`)."""

from __future__ import annotations

import zipfile
import zlib
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
    """Read a problem written by :func:`save_problem` (validated again on load).

    Every fault of the file — unreadable, empty, truncated or corrupted, a plain ``.npy``,
    an object (pickled) array, a missing required field, a field that breaks a rule —
    raises :class:`~flexmoe.assign.InvalidProblemError` naming the file and the fault.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from flexmoe.assign import InvalidProblemError, load_problem
    >>> empty = pathlib.Path(tempfile.mkdtemp()) / "empty.npz"
    >>> _ = empty.write_bytes(b"")
    >>> try:
    ...     load_problem(empty)
    ... except InvalidProblemError as err:
    ...     print(str(err).partition(": ")[2])
    empty file, not a flexmoe problem file
    """
    path = Path(path)
    arrays = _read_arrays(path)
    values: dict[str, Any] = {"budgets": _read_rows(path, arrays)}
    known = {f.name for f in fields(AssignmentProblem)} - {"budgets"}
    for key, value in arrays.items():
        if key not in known:
            raise InvalidProblemError(f"{path}: unknown field `{key}`")
        if value.ndim > 0 and key in _SCALARS:
            raise InvalidProblemError(
                f"{path}: `{key}` must be a single value; got an array of shape {value.shape}"
            )
        values[key] = value.item() if value.ndim == 0 else value
    for key in _REQUIRED:
        if key not in values:
            raise InvalidProblemError(f"{path}: the required field `{key}` is missing")
    try:
        return AssignmentProblem(**values)
    except InvalidProblemError as err:
        raise InvalidProblemError(f"{path}: {err}") from None


#: Fields every problem file holds, and those stored as one value.
_REQUIRED = ("utility", "max_experts")
_SCALARS = ("balance_penalty", "balance_metric", "switch_cost", "name")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at `path` but the format tag, each read in full while
    the file is open (a corrupted member fails here, not later)."""
    try:
        with path.open("rb") as fh:
            if not fh.read(1):
                raise InvalidProblemError(f"{path}: empty file, not a flexmoe problem file")
            fh.seek(0)
            data = np.load(fh, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InvalidProblemError(
                    f"{path}: a plain .npy array, not a problem file (.npz); "
                    "write problems with `save_problem`"
                )
            with data:
                if "format" not in data.files or str(data["format"]) not in _READABLE:
                    raise InvalidProblemError(
                        f"{path}: not a flexmoe problem file (no `{_FORMAT}` tag)"
                    )
                return {key: _member(path, data, key) for key in data.files if key != "format"}
    except InvalidProblemError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = f"{type(err).__name__}: {err}"
        raise InvalidProblemError(f"{path}: not a flexmoe problem file ({reason})") from None


def _member(path: Path, data: Any, key: str) -> np.ndarray:
    """One array of an open ``.npz``; an object array or unreadable data names `key`."""
    try:
        return np.asarray(data[key])
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise InvalidProblemError(
                f"{path}: `{key}` is an object array (stored with pickle), which is never "
                "loaded; fields are numeric or string arrays"
            ) from None
        raise InvalidProblemError(f"{path}: `{key}` cannot be read ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = f"{type(err).__name__}: {err}"
        raise InvalidProblemError(f"{path}: `{key}` cannot be read ({reason})") from None


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
