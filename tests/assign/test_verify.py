"""The independent checker, the aggregate precheck, results and the npz/JSON formats."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from flexmoe.assign import (
    Assignment,
    AssignmentProblem,
    InvalidProblemError,
    Status,
    infeasibility_reason,
    load_problem,
    load_stats,
    objective_value,
    relative_gap,
    save_problem,
    verify,
)
from flexmoe.assign.verify import largest_magnitude, objective_and_scale, objective_scale


def test_objective_terms():
    utility = np.array([[3.0, 1.0], [2.0, 5.0], [1.0, 1.0]])
    prev = np.array([[1, 0], [0, 0], [0, 1]], dtype=bool)
    x = np.array([[1, 0], [1, 0], [1, 0]], dtype=bool)
    p = AssignmentProblem(
        utility, max_experts=1, previous=prev, switch_cost=0.5, balance_penalty=2.0
    )
    # utility 6; loads (3, 0), mean 1.5, Σ(L−L̄)² = 4.5; two new holdings cost 1.0
    assert objective_value(p, x) == pytest.approx(6 - 2 * 4.5 - 1.0)
    q = p.replace(balance_metric="range")
    assert objective_value(q, x) == pytest.approx(6 - 2 * 3 - 1.0)


def test_objective_and_scale_match_the_dense_formulas():
    """The held-pair computation gives what the (N, E) formulas give, bit for bit."""
    rng = np.random.default_rng(3)
    utility = rng.normal(size=(40, 6)) * 10.0 ** rng.integers(-3, 3, size=(40, 1))
    previous = rng.random((40, 6)) < 0.3
    allowed = rng.random((40, 6)) < 0.8
    x = (rng.random((40, 6)) < 0.4) & allowed
    p = AssignmentProblem(
        utility, max_experts=6, previous=previous, switch_cost=0.7, balance_penalty=0.01,
        allowed=allowed,
    )  # fmt: skip
    effective = utility - 0.7 * ~previous
    loads = x.sum(axis=0).astype(np.float64)
    imbalance = float(((loads - loads.mean()) ** 2).sum())
    value = float(utility[x].sum()) - 0.01 * imbalance - 0.7 * float((x & ~previous).sum())
    largest = float(np.abs(effective)[allowed].max())
    scale = max(float(np.abs(effective)[x].sum()) + 0.01 * imbalance, largest)
    assert objective_value(p, x) == value
    assert largest_magnitude(p) == largest
    assert objective_scale(p, x) == scale
    assert objective_and_scale(p, x) == (value, scale)
    # a caller's own largest |ū| (flow has it from its scaling pass) replaces the pass
    assert objective_scale(p, x, largest=1e9) == 1e9
    result = Assignment.from_x(p, x, status=Status.FEASIBLE, bound=math.inf, backend="t")
    assert (result.objective, result.scale) == (value, scale)
    with pytest.raises(ValueError, match=r"`x` must have shape \(40, 6\); got \(6, 40\)"):
        objective_value(p, x.T)


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("seed", range(6))
def test_largest_magnitude_reads_the_matrix_without_copying_it(seed, chunk, monkeypatch):
    # From the largest and least utility of each kind of pair (held before or not), in
    # chunks of rows with a switch cost: the same float as |ū| of a copy, bit for bit.
    if chunk is not None:
        monkeypatch.setattr(sys.modules["flexmoe.assign.verify"], "_CHUNK", chunk)
    rng = np.random.default_rng(seed)
    n, e = int(rng.integers(1, 30)), int(rng.integers(1, 7))
    utility = rng.normal(size=(n, e)) * 10.0 ** rng.integers(-300, 300)
    previous = rng.random((n, e)) < 0.5
    allowed = (rng.random((n, e)) < 0.7) if seed % 2 else None
    for switch in (0.0, float(rng.random() * 3), 1e300):
        p = AssignmentProblem(
            utility, max_experts=1, min_experts=0, previous=previous, switch_cost=switch,
            allowed=allowed,
        )  # fmt: skip
        magnitude = np.abs(utility - switch * ~previous)
        expected = float((magnitude if allowed is None else magnitude[allowed]).max(initial=0.0))
        assert largest_magnitude(p) == expected
    if allowed is not None:
        assert largest_magnitude(p.replace(allowed=np.zeros((n, e), bool))) == 0.0


def test_weighted_loads_enter_the_balance_term():
    w = np.array([[2.0, 1.0], [1.0, 1.0]])
    p = AssignmentProblem(
        np.zeros((2, 2)), max_experts=1, load_weight=w, balance_penalty=1.0, balance_metric="range"
    )
    x = np.array([[1, 0], [0, 1]], dtype=bool)
    assert verify(p, x).loads.tolist() == [2.0, 1.0]
    assert objective_value(p, x) == -1.0


def test_verify_lists_every_violated_family():
    p = AssignmentProblem(
        np.zeros((2, 3)),
        max_experts=2,
        min_experts=1,
        load_min=[1, 0, 0],
        load_max=[2, 0, 2],
        expert_size=[1, 1, 5],
        storage=[2, 2],
        compute_cost=np.ones((2, 3)),
        compute_budget=[1, 5],
        allowed=[[1, 1, 1], [1, 0, 1]],
    )
    x = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    v = verify(p, x)
    assert not v.ok and not bool(v)
    families = [line.split(":")[0] for line in v.violations]
    assert families == ["storage", "compute", "load_min", "load_max", "allowed"]
    assert "client 0 has 6 > 2" in v.reason
    assert "expert 1 has 2 > 0" in v.reason


def test_verify_counts_and_shape():
    p = AssignmentProblem(np.zeros((2, 2)), max_experts=1)
    assert verify(p, np.zeros((2, 2), bool)).violations == (
        "min_experts: client 0 has 0 < 1 (2 client(s) violate it)",
    )
    assert (
        verify(p, np.ones((2, 2), bool)).violations[0].startswith("max_experts: client 0 has 2 > 1")
    )
    assert verify(p, np.zeros((3, 2), bool)).violations == (
        "`x` must have shape (2, 2); got (3, 2)",
    )
    assert verify(p, np.full((2, 2), 2)).violations == ("`x` must be 0/1",)


def test_verify_checks_claimed_objective_and_bound():
    p = AssignmentProblem(np.eye(2), max_experts=1)
    x = np.eye(2, dtype=bool)
    assert verify(p, x, objective=2.0, bound=2.0).ok
    assert "objective: reported 1.5" in verify(p, x, objective=1.5).reason
    assert "exceeds the claimed upper bound 1.9" in verify(p, x, bound=1.9).reason


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (
            {"max_experts": 1, "load_min": 2},
            "Σ max_experts = 4 < Σ load_min = 6 (every holder counts 1)",
        ),
        (
            {"max_experts": 2, "load_max": 1},
            "Σ min_experts = 8 > Σ load_max = 3 (every holder counts 1)",
        ),
        (
            {"max_experts": 1, "load_min": [1.2, 0, 0], "load_max": [1.8, 4, 4]},
            "expert 0: no whole number of holders lies in [load_min, load_max] = [1.2, 1.8]",
        ),
        (
            {"max_experts": 2, "allowed": [[1, 0, 0]] + [[1, 1, 1]] * 3},
            "client 0 must hold min_experts = 2 experts but only 1 are allowed (1 client(s) like it)",
        ),
        (
            {"max_experts": 1, "load_min": [0, 0, 2], "allowed": [[1, 1, 0]] * 3 + [[1, 1, 1]]},
            "expert 2 can reach a load of at most 1 (every allowed client holding it) < load_min = 2",
        ),
        (
            {"max_experts": 2, "expert_size": [3, 2, 2], "storage": [4, 4, 3, 4]},
            "client 2: its 2 cheapest allowed experts need storage 4 > its budget 3 (1 client(s) like it)",
        ),
        (
            {
                "max_experts": 1,
                "compute_cost": np.full((4, 3), 2.0),
                "compute_budget": [2, 1, 2, 1],
            },
            "client 1: its 1 cheapest allowed experts need compute 2 > its budget 1 (2 client(s) like it)",
        ),
    ],
)
def test_precheck_reasons(kw, reason):
    assert infeasibility_reason(AssignmentProblem(np.zeros((4, 3)), **kw)) == reason


def test_precheck_passes_feasible():
    assert (
        infeasibility_reason(AssignmentProblem(np.zeros((4, 3)), max_experts=1, load_min=1)) is None
    )


def test_load_stats():
    p = AssignmentProblem(np.zeros((4, 4)), max_experts=1, load_weight=np.full((4, 4), 2.0))
    x = np.zeros((4, 4), bool)
    x[:, 0] = True
    stats = load_stats(x, p)
    holders = stats["holders"]
    assert holders.zero == 3 and holders.max_over_mean == 4.0 and holders.entropy == 0.0
    assert holders.cv == pytest.approx(np.sqrt(3))
    assert stats["weighted"].max == 8.0
    even = load_stats(np.eye(4, dtype=bool), p)["holders"]
    assert even.cv == 0.0 and even.entropy == pytest.approx(1.0) and even.zero == 0


def test_relative_gap():
    assert relative_gap(10.0, 10.0) == 0.0
    assert relative_gap(9.0, 10.0) == pytest.approx(0.1)
    assert math.isnan(relative_gap(math.nan, 1.0))
    assert relative_gap(1.0, math.inf) == math.inf


def test_problem_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    p = AssignmentProblem(
        rng.normal(size=(5, 4)),
        max_experts=3,
        min_experts=1,
        load_min=1,
        load_max=[4, 4, 5, 5],
        expert_size=[1, 2, 1, 2],
        storage=np.full(5, 4.0),
        compute_cost=rng.random((5, 4)),
        compute_budget=np.full(5, 3.0),
        load_weight=rng.random((5, 4)),
        allowed=rng.random((5, 4)) < 0.9,
        balance_penalty=0.5,
        balance_metric="range",
        previous=rng.random((5, 4)) < 0.5,
        switch_cost=0.1,
        name="all-fields",
    )
    q = load_problem(save_problem(tmp_path / "p.npz", p))
    assert q.name == "all-fields" and q.balance_metric == "range" and q.switch_cost == 0.1
    for field in (
        "utility",
        "max_experts",
        "min_experts",
        "load_min",
        "load_max",
        "expert_size",
        "storage",
        "compute_cost",
        "compute_budget",
        "load_weight",
        "allowed",
        "previous",
    ):
        np.testing.assert_array_equal(getattr(q, field), getattr(p, field))
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        assert "format" in data.files


def test_load_problem_rejects_foreign_files(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    with pytest.raises(InvalidProblemError, match="not a flexmoe problem file"):
        load_problem(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(InvalidProblemError, match=r"junk\.npz: not a flexmoe problem file"):
        load_problem(tmp_path / "junk.npz")


def test_assignment_json_round_trip(tmp_path):
    p = AssignmentProblem(np.eye(3), max_experts=1)
    a = Assignment.from_x(
        p,
        np.eye(3, dtype=bool),
        status=Status.OPTIMAL,
        bound=3.0,
        backend="test",
        info={"engine": "x"},
        solve_time=0.5,
    )
    a.save(tmp_path / "a.json")
    b = Assignment.load(tmp_path / "a.json")
    assert b.status is Status.OPTIMAL and b.objective == 3.0 and b.info == {"engine": "x"}
    np.testing.assert_array_equal(b.x, a.x)
    none = Assignment.no_solution(Status.INFEASIBLE, "test", "because")
    c = Assignment.from_dict(none.to_dict())
    assert c.x is None and math.isnan(c.objective) and c.message == "because"
