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
