"""Problem files: every fault of a file is an `InvalidProblemError` naming the file and
the fault (issue 13, item 7), never a raw ``ValueError``, ``TypeError``, ``EOFError`` or
``BadZipFile``."""

from __future__ import annotations

import re
import zipfile

import numpy as np
import pytest

from flexmoe.assign import AssignmentProblem, InvalidProblemError, load_problem, save_problem


@pytest.fixture
def saved(tmp_path):
    p = AssignmentProblem(np.eye(3), max_experts=1, load_min=1, name="tiny")
    return save_problem(tmp_path / "tiny.npz", p)


def _rewrite(path, **changes):
    """`path` written again with some arrays replaced (None: removed)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)
    return path


def _fails(path, fault):
    with pytest.raises(InvalidProblemError, match=f"^{re.escape(str(path))}: {fault}"):
        load_problem(path)


def test_a_saved_problem_loads(saved):
    assert load_problem(saved).name == "tiny"


def test_an_object_array_is_named(saved):
    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1.0, 2.0], [3.0]]
    _fails(_rewrite(saved, utility=ragged), "`utility` is an object array")


def test_a_missing_utility_is_named(saved):
    _fails(_rewrite(saved, utility=None), re.escape("the required field `utility` is missing"))


def test_a_missing_max_experts_is_named(saved):
    _fails(_rewrite(saved, max_experts=None), "the required field `max_experts` is missing")


def test_a_truncated_file_is_named(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    _fails(saved, "not a flexmoe problem file")


def test_a_corrupted_member_is_named(saved):
    """A zip whose directory is intact but whose data is not (a CRC or inflate error)."""
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("utility.npy")
    data = bytearray(saved.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start, start + info.compress_size):
        data[i] ^= 0x5A
    saved.write_bytes(bytes(data))
    _fails(saved, "`utility` cannot be read")


def test_an_empty_file_is_named(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _fails(empty, "empty file")


def test_a_plain_npy_is_named(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.eye(2))
    _fails(path, re.escape("a plain .npy array, not a problem file (.npz)"))


def test_a_missing_file_is_named(tmp_path):
    _fails(tmp_path / "nowhere.npz", "not a flexmoe problem file")


def test_a_bad_field_names_the_file_and_the_field(saved):
    _fails(
        _rewrite(saved, max_experts=np.array([1, 1])),
        re.escape("`max_experts` must have shape (n_clients,) = (3,); got (2,)"),
    )


def test_a_bad_balance_metric_names_the_file(saved):
    _fails(_rewrite(saved, balance_metric=np.array("gini")), "`balance_metric` must be one of")


def test_a_two_dimensional_name_is_named(saved):
    _fails(_rewrite(saved, name=np.array([["a"]])), "`name` must be a single value")
