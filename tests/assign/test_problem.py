"""AssignmentProblem: conversion, read-only arrays and the validation messages (they are API)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flexmoe.assign import AssignmentProblem, BalanceMetric, InvalidProblemError


def make(**kw):
    kw.setdefault("utility", np.arange(12.0).reshape(3, 4))
    kw.setdefault("max_experts", 2)
    return AssignmentProblem(**kw)


def test_scalars_broadcast_and_defaults():
    p = make()
    assert p.shape == (3, 4)
    assert p.max_experts.tolist() == [2, 2, 2]
    assert p.min_experts.tolist() == [2, 2, 2], "min_experts defaults to max_experts"
    assert p.load_min.tolist() == [0.0] * 4
    assert np.isinf(p.load_max).all()
    assert p.balance_metric is BalanceMetric.VARIANCE
    assert p.max_experts.dtype == np.int64 and p.utility.dtype == np.float64


def test_arrays_are_read_only_copies():
    utility = np.ones((2, 2))
    p = AssignmentProblem(utility, max_experts=1)
    utility[0, 0] = 99.0
    assert p.utility[0, 0] == 1.0, "the problem keeps its own copy"
    with pytest.raises(ValueError, match="read-only"):
        p.utility[0, 0] = 5.0


def test_frozen():
    p = make()
    with pytest.raises(AttributeError):
        p.balance_penalty = 1.0  # type: ignore[misc]


def test_replace_validates_again():
    p = make()
    assert p.replace(balance_penalty=2.0).balance_penalty == 2.0
    with pytest.raises(InvalidProblemError, match="`balance_penalty` must be finite and >= 0"):
        p.replace(balance_penalty=-1)


def test_effective_utility_folds_switch_cost():
    prev = np.array([[1, 0], [0, 1]], dtype=bool)
    p = AssignmentProblem(np.ones((2, 2)), max_experts=1, previous=prev, switch_cost=0.25)
    assert p.effective_utility().tolist() == [[1.0, 0.75], [0.75, 1.0]]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"utility": np.ones(3)},
            "`utility` must be 2-D (n_clients, n_experts); got 1-D with shape (3,)",
        ),
        (
            {"utility": np.ones((0, 3))},
            "`utility` must have at least one client and one expert; got shape (0, 3)",
        ),
        (
            {"utility": np.array([[1.0, np.nan]])},
            "`utility` must be finite; got nan at index (0, 1)",
        ),
        (
            {"utility": np.array([[1.0, np.inf]])},
            "`utility` must be finite; got inf at index (0, 1)",
        ),
        ({"utility": np.array([["a", "b"]])}, "`utility` must be numeric; got dtype <U1"),
        ({"utility": np.ones((2, 2)) * 1j}, "`utility` must be real; got dtype complex128"),
        ({"max_experts": [1, 2]}, "`max_experts` must have shape (n_clients,) = (3,); got (2,)"),
        ({"max_experts": [1, 2, 1.5]}, "`max_experts` must be whole numbers; got 1.5 at index 2"),
        ({"max_experts": [1, -2, 1]}, "`max_experts` must be >= 0; got -2 at index 1"),
        (
            {"min_experts": 3},
            "`min_experts` must be <= `max_experts` for every client; got 3 > 2 at client 0",
        ),
        ({"load_min": [0, 0, 0]}, "`load_min` must have shape (n_experts,) = (4,); got (3,)"),
        (
            {"load_min": [0, 0, 5, 0], "load_max": 4},
            "`load_min` must be <= `load_max` for every expert; got 5 > 4 at expert 2",
        ),
        ({"load_max": [1, np.nan, 1, 1]}, "`load_max` must not contain NaN; got nan at index 1"),
        ({"load_min": np.inf}, "`load_min` must be finite; got inf at index 0"),
        (
            {"storage": [4, 4, -1], "expert_size": np.ones(4)},
            "`storage` must be >= 0; got -1 at index 2",
        ),
        ({"expert_size": np.ones(4)}, "`expert_size` requires `storage`; got only `expert_size`"),
        (
            {"compute_budget": np.ones(3)},
            "`compute_budget` requires `compute_cost`; got only `compute_budget`",
        ),
        (
            {"compute_cost": np.ones((3, 3)), "compute_budget": np.ones(3)},
            "`compute_cost` must have shape (n_clients, n_experts) = (3, 4); got (3, 3)",
        ),
        ({"load_weight": -np.ones((3, 4))}, "`load_weight` must be >= 0; got -1 at index (0, 0)"),
        ({"allowed": np.full((3, 4), 2)}, "`allowed` must be boolean (0/1); got 2 at index (0, 0)"),
        (
            {"previous": np.ones((4, 3), bool)},
            "`previous` must have shape (n_clients, n_experts) = (3, 4); got (4, 3)",
        ),
        ({"balance_penalty": float("nan")}, "`balance_penalty` must be finite and >= 0; got nan"),
        ({"balance_penalty": "lots"}, "`balance_penalty` must be a real number; got 'lots'"),
        (
            {"balance_metric": "gini"},
            "`balance_metric` must be one of 'variance', 'range'; got 'gini'",
        ),
        (
            {"switch_cost": 1.0},
            "`switch_cost` requires `previous`; got switch_cost=1 and previous=None",
        ),
    ],
)
def test_invalid_input_names_field_rule_and_value(changes, message):
    with pytest.raises(InvalidProblemError, match=re.escape(message) + "$"):
        make(**changes)


def test_invalid_problem_error_is_a_value_error():
    with pytest.raises(ValueError):
        make(max_experts=-1)


def test_bool_masks_accept_zero_one_ints():
    p = make(allowed=np.ones((3, 4), dtype=int))
    assert p.allowed is not None and p.allowed.dtype == np.bool_


def test_repr_mentions_size_and_optional_parts():
    p = make(expert_size=np.ones(4), storage=np.full(3, 2.0), name="demo")
    text = repr(p)
    assert "'demo'" in text and "3 clients × 4 experts" in text and "storage" in text


# -- issue 13: counts at the int64 limit, ragged and foreign inputs ---------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"min_experts": 1e300},
            "`min_experts` must be at most 2**63 - 1 (int64); got 1e+300 at index 0",
        ),
        (
            {"max_experts": 2**63},
            "`max_experts` must be at most 2**63 - 1 (int64); got 9223372036854775808 at index 0",
        ),
        (
            {"max_experts": [2**70, 1, 1]},
            "`max_experts` must be at most 2**63 - 1 (int64); got 1180591620717411303424 at index 0",
        ),
        (
            {"max_experts": [1, 2**63, 1]},
            "`max_experts` must be at most 2**63 - 1 (int64); got 9.22337e+18 at index 1",
        ),
        (
            {"max_experts": np.float64(2.0**63)},
            "`max_experts` must be at most 2**63 - 1 (int64); got 9.22337e+18 at index 0",
        ),
        ({"max_experts": [None, 1, 1]}, "`max_experts` must be numeric; got dtype object"),
        (
            {"utility": [[1, 2], [3]]},
            "`utility` must be a rectangular array of numbers; got a ragged nested sequence "
            "(rows of lengths 2, 1)",
        ),
        (
            {"utility": [[1, [2, 3]], [3, 4]]},
            "`utility` must be a rectangular array of numbers; got a ragged nested sequence",
        ),
        (
            {"max_experts": [[1], [1, 1], [1]]},
            "`max_experts` must be a rectangular array of numbers; got a ragged nested sequence "
            "(rows of lengths 1, 2, 1)",
        ),
        (
            {"load_min": ([0, 0], [0], 0, 0)},
            "`load_min` must be a rectangular array of numbers; got a ragged nested sequence",
        ),
    ],
)
def test_counts_beyond_int64_and_ragged_input_are_named(changes, message):
    """Issue 13, items 6 and 7: validated before any cast, named, never wrapped."""
    with pytest.raises(InvalidProblemError, match=re.escape(message) + "$"):
        make(**changes)


def test_counts_at_the_int64_limit_are_kept():
    top = np.iinfo(np.int64).max
    p = make(max_experts=top, min_experts=0)
    assert p.max_experts.tolist() == [top] * 3 and p.min_experts.tolist() == [0] * 3
    assert p.most_experts.tolist() == [4, 4, 4]
    q = make(max_experts=np.array([top, 1, 2], dtype=np.uint64), min_experts=1)
    assert q.max_experts.dtype == np.int64 and q.max_experts[0] == top
    assert make(max_experts=2.0**62, min_experts=0).max_experts[0] == 2**62


@pytest.mark.parametrize(
    "utility",
    [
        ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)),  # tuples
        np.arange(12, dtype=np.int8).reshape(3, 4),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(12, dtype=np.uint16).reshape(3, 4),
        np.eye(3, 4, dtype=bool),
        [[np.float32(1), np.int64(2), 3, 4.0]] * 3,  # mixed numpy and Python scalars
    ],
)
def test_foreign_inputs_convert_to_float64(utility):
    p = make(utility=utility, max_experts=np.int8(2), load_max=(3, 3, 3, 3))
    assert p.utility.dtype == np.float64 and p.utility.shape == (3, 4)
    assert p.max_experts.dtype == np.int64 and p.load_max.tolist() == [3.0] * 4
    np.testing.assert_array_equal(p.utility, np.asarray(utility, dtype=np.float64))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"utility": np.full((3, 4), 1e308)},
            "`utility` is too large: objective values must be finite in float64, and "
            "max |utility| · 12 pairs overflows; got |utility| up to 1e+308",
        ),
        (
            {"utility": np.ones((3, 4)), "balance_penalty": 1e308},
            "`balance_penalty` is too large: objective values must be finite in float64, and "
            "λ·imbalance can reach inf (λ = 1e+308, largest load 3) beside max |utility| · "
            "pairs = 12",
        ),
    ],
)
def test_objectives_that_overflow_float64_are_refused(changes, message):
    with pytest.raises(InvalidProblemError, match=re.escape(message) + "$"):
        make(**changes)


def test_the_extremes_of_the_supported_range_are_accepted():
    assert make(utility=np.full((3, 4), 1e300), balance_penalty=1e290).n_clients == 3
    assert make(utility=np.full((3, 4), 5e-324)).utility[0, 0] == 5e-324
