"""Budget rows (storage, compute and the user's own) as one mechanism, the quantities
derived on the problem, and the memory the validation takes."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexmoe.assign import (
    AssignmentProblem,
    BudgetRow,
    InvalidProblemError,
    Status,
    infeasibility_reason,
    load_problem,
    save_problem,
    solve,
    verify,
)
from flexmoe.assign.backends import flow
from flexmoe.assign.derived import SLACK


def download(cost, limit) -> BudgetRow:
    return BudgetRow("download", np.asarray(cost, float), np.asarray(limit, float))


# -- the value --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ((BudgetRow("download", np.ones((3, 3)), 1.0),),
         "`download.cost` must have shape (n_clients, n_experts) = (3, 4) or (n_experts,) = "
         "(4,); got (3, 3)"),
        ((BudgetRow("download", np.ones(4), [1.0, 2.0]),),
         "`download.limit` must have shape (n_clients,) = (3,); got (2,)"),
        ((BudgetRow("storage", np.ones(4), 1.0),),
         "budget row name 'storage' is reserved: pass `expert_size` and `storage` instead"),
        ((BudgetRow("d", np.ones(4), 1.0), BudgetRow("d", np.ones(4), 2.0)),
         "budget row names must be unique; got 'd' twice"),
        (BudgetRow("d", np.ones(4), 1.0), "`budgets` must be a sequence of BudgetRow; got BudgetRow"),
        (("d",), "`budgets` must hold BudgetRow values; got str"),
    ],
)  # fmt: skip
def test_rows_are_checked_against_the_problem(budgets, message):
    with pytest.raises(InvalidProblemError, match=re.escape(message) + "$"):
        AssignmentProblem(np.zeros((3, 4)), max_experts=1, budgets=budgets)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"cost": [1.0, -2.0], "limit": 1.0}, "`download.cost` must be >= 0; got -2 at index 1"),
        ({"cost": [1.0, np.nan], "limit": 1.0}, "`download.cost` must be finite; got nan at index 1"),
        ({"cost": [1.0, 1.0], "limit": np.inf}, "`download.limit` must be finite; got inf at index ()"),
        ({"cost": np.ones((2, 2, 2)), "limit": 1.0}, "`download.cost` must be 1-D (n_experts,) or 2-D"),
        ({"cost": ["a"], "limit": 1.0}, "`download.cost` must be numeric; got dtype <U1"),
        ({"cost": [1.0], "limit": np.ones((2, 2))}, "`download.limit` must be a number or 1-D"),
    ],
)  # fmt: skip
def test_a_row_validates_its_own_arrays(kw, message):
    with pytest.raises(InvalidProblemError, match=re.escape(message)):
        BudgetRow("download", **kw)
    with pytest.raises(InvalidProblemError, match="a budget row's `name` must be a non-empty"):
        BudgetRow("", [1.0], 1.0)


def test_friendly_arguments_build_the_storage_and_compute_rows():
    p = AssignmentProblem(
        np.zeros((2, 3)),
        max_experts=1,
        expert_size=[1, 2, 3],
        storage=4,
        compute_cost=np.ones((2, 3)),
        compute_budget=[1, 2],
        budgets=[download([1, 1, 1], 5)],
    )
    assert [row.name for row in p.budgets] == ["storage", "compute", "download"]
    assert np.shares_memory(p.budget("storage").cost, p.expert_size)
    assert np.shares_memory(p.budget("compute").limit, p.compute_budget)
    assert p.budget("download").limit.tolist() == [5.0, 5.0]
    assert not p.budget("download").cost.flags.writeable
    with pytest.raises(KeyError, match="no budget row 'energy'; the problem has: 'storage'"):
        p.budget("energy")
    assert "budget download" in repr(p) and "storage" in repr(p)


def test_replace_keeps_the_users_rows_and_rebuilds_the_friendly_ones():
    p = AssignmentProblem(
        np.zeros((2, 3)),
        max_experts=1,
        expert_size=[1, 2, 3],
        storage=4,
        budgets=[download([1, 1, 1], 5)],
    )
    q = p.replace(balance_penalty=1.0)
    assert [row.name for row in q.budgets] == ["storage", "download"]
    assert q.budget("download") is p.budget("download")
    assert [r.name for r in p.replace(expert_size=None, storage=None).budgets] == ["download"]
    assert [r.name for r in p.replace(budgets=()).budgets] == ["storage"]


def test_npz_round_trip_with_user_rows_and_old_files(tmp_path):
    rows = [download([[1, 2, 3], [3, 2, 1]], [4, 5]), BudgetRow("energy", [1.0, 1.0, 2.0], 3.0)]
    p = AssignmentProblem(
        np.eye(2, 3), max_experts=1, expert_size=[1, 1, 2], storage=3, budgets=rows
    )
    q = load_problem(save_problem(tmp_path / "p.npz", p))
    assert [row.name for row in q.budgets] == ["storage", "download", "energy"]
    for name in ("storage", "download", "energy"):
        np.testing.assert_array_equal(q.budget(name).cost, p.budget(name).cost)
        np.testing.assert_array_equal(q.budget(name).limit, p.budget(name).limit)
    old = tmp_path / "old.npz"  # written by the format before budget rows
    np.savez(old, format=np.array("flexmoe.assign.problem/1"), utility=np.eye(2), max_experts=[1, 1],
             expert_size=[1.0, 2.0], storage=[2.0, 2.0])  # fmt: skip
    assert [row.name for row in load_problem(old).budgets] == ["storage"]


# -- every part honours a user row ------------------------------------------------------

#: Client 0 may download 2: its two favourites (3 + 2) cost 3, so it takes 0 and 2.
DOWNLOAD = AssignmentProblem(
    np.array([[5.0, 4.0, 1.0], [5.0, 4.0, 1.0]]),
    max_experts=2,
    min_experts=1,
    budgets=[download([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]], [2.0, 3.0])],
)


def test_verify_checks_a_user_row_by_name():
    x = np.array([[1, 1, 0], [1, 1, 0]], bool)
    assert verify(DOWNLOAD, x).violations == (
        "download: client 0 has 3 > 2 (1 client(s) violate it)",
    )
    assert verify(DOWNLOAD, np.array([[1, 0, 1], [1, 1, 0]], bool)).ok


def test_the_precheck_names_the_row_that_makes_a_problem_infeasible():
    p = DOWNLOAD.replace(budgets=[download([[1.0, 2.0, 1.0], [3.0, 3.0, 2.5]], [2.0, 2.0])])
    reason = "client 1: its 1 cheapest allowed experts need download 2.5 > its budget 2 (1 client(s) like it)"
    assert infeasibility_reason(p) == reason
    for spec in ("flow", "milp", "convex", "greedy"):
        result = solve(p, spec)
        assert result.status is Status.INFEASIBLE and result.message == reason


@pytest.mark.parametrize(
    "spec", ["milp", "milp:pulp", "milp:scipy", "convex", "greedy", "greedy:topk"]
)
def test_every_backend_honours_a_user_row(spec):
    result = solve(DOWNLOAD, spec)
    assert result.has_solution, result
    assert verify(DOWNLOAD, result.x).ok
    assert result.experts_of(0) == [0, 2], "client 0 cannot afford 0 and 1"
    if spec.startswith("milp"):
        assert result.status is Status.OPTIMAL and result.objective == 15.0
    assert result.objective <= 15.0


def test_flow_declines_a_row_that_is_not_count_equivalent_and_auto_takes_milp():
    assert flow.unsupported(DOWNLOAD) == (
        "budget row `download` needs the `milp` backend (its cost differs across a client's "
        "allowed experts)"
    )
    assert solve(DOWNLOAD).backend == "milp"


# -- count-equivalent rows --------------------------------------------------------------


def test_a_uniform_row_only_caps_how_many_experts_a_client_holds():
    row = download([[2.0, 2.0, 9.0], [0.5, 0.5, 0.5], [3.0, 3.0, 3.0]], [4.1, 1.0, 0.3])
    p = AssignmentProblem(np.ones((3, 3)), max_experts=3, min_experts=0,
                          allowed=[[1, 1, 0], [1, 1, 1], [1, 1, 1]], budgets=[row])  # fmt: skip
    assert p.count_equivalent and p.count_equivalent_rows == (True,)
    assert p.count_caps[0].tolist() == [2, 2, 0]  # 9 on a forbidden pair does not count
    assert p.most_experts.tolist() == [2, 2, 0]
    assert flow.unsupported(p) is None
    assert solve(p, "flow").objective == solve(p, "milp").objective == 4.0


def test_the_one_slack_counts_near_whole_numbers_as_whole():
    p = AssignmentProblem(np.ones((1, 4)), max_experts=4, min_experts=0,
                          budgets=[download([0.1] * 4, 0.3)], load_min=1 + SLACK / 2, load_max=2.9999999999)  # fmt: skip
    assert 0.3 / 0.1 < 3 and p.most_experts.tolist() == [3]
    assert [b.tolist() for b in p.holder_band] == [[1, 1, 1, 1], [1, 1, 1, 1]]


def test_derived_quantities_are_computed_once():
    p = AssignmentProblem(
        np.ones((3, 2)), max_experts=2, min_experts=0, load_min=1, allowed=[[1, 0], [1, 1], [1, 1]]
    )
    assert p.most_experts is p.most_experts and p.holder_band is p.holder_band
    assert p.reach.tolist() == [3.0, 2.0] and p.allowed_count.tolist() == [1, 2, 2]
    assert [b.tolist() for b in p.holder_band] == [[1, 1], [3, 2]]
    assert p.fixed_total is None and p.total_range == (2.0, 5.0)
    assert np.isneginf(p.masked_utility[0, 1]) and not p.masked_utility.flags.writeable
    assert p.replace(min_experts=[1, 2, 2]).fixed_total == 5


@st.composite
def uniform_row_problems(draw) -> AssignmentProblem:
    """Medium problems whose only budget row is count-equivalent (any allowed mask)."""
    n, e = draw(st.integers(2, 30)), draw(st.integers(2, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    allowed = rng.random((n, e)) < 0.8
    price = rng.choice([0.5, 1.0, 3.0], n)
    cost = np.where(allowed, price[:, None], rng.random((n, e)) * 5)
    limit = price * rng.integers(1, e + 1, n) + rng.random(n) * price * 0.5
    hi = rng.integers(1, e + 1, n)
    kw = {"min_experts": rng.integers(0, hi + 1)} if draw(st.booleans()) else {}
    if draw(st.booleans()):
        kw["load_max"] = rng.integers(1, n + 1, e)
    if "min_experts" not in kw and draw(st.booleans()):  # a fixed total: the flow takes λ
        kw["balance_penalty"] = 0.1
    return AssignmentProblem(rng.normal(size=(n, e)), max_experts=hi, allowed=allowed,
                             budgets=[download(cost, limit)], **kw)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(uniform_row_problems())
def test_flow_on_count_equivalent_rows_equals_milp(problem):
    assert flow.unsupported(problem) is None
    by_flow, by_milp = solve(problem, "flow"), solve(problem, "milp")
    assert by_flow.status == by_milp.status, (by_flow, by_milp)
    if by_flow.status is Status.OPTIMAL:
        assert verify(problem, by_flow.x).ok
        scale = max(1.0, abs(by_milp.objective))
        assert abs(by_flow.objective - by_milp.objective) <= 1e-6 * scale, (by_flow, by_milp)


# -- memory -----------------------------------------------------------------------------


def test_validation_copies_the_utility_at_most_once():
    utility = np.random.default_rng(0).random((400, 500))  # 1.6 MB
    tracemalloc.start()
    p = AssignmentProblem(utility, max_experts=8)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1.5 * utility.nbytes, "one copy (it was two: astype, then a read-only copy)"
    assert not np.shares_memory(p.utility, utility) and not p.utility.flags.writeable
    weighted = AssignmentProblem(utility, max_experts=8, load_weight=utility)
    assert not np.shares_memory(weighted.utility, weighted.load_weight)
    q = weighted.replace(balance_penalty=1.0)
    assert np.shares_memory(q.utility, weighted.utility), "replace() shares read-only arrays"
    assert np.shares_memory(q.load_weight, weighted.load_weight)
    fresh = AssignmentProblem(utility.tolist(), max_experts=8)  # converting is the one copy
    assert fresh.utility.base is None and not fresh.utility.flags.writeable
    utility[0, 0] = -1.0
    assert p.utility[0, 0] != -1.0


def test_a_mask_is_copied_once_and_kept_read_only():
    allowed = np.ones((3, 4), bool)
    p = AssignmentProblem(np.zeros((3, 4)), max_experts=1, allowed=allowed)
    assert not np.shares_memory(p.allowed, allowed) and not p.allowed.flags.writeable
    assert np.shares_memory(p.replace(switch_cost=0.0).allowed, p.allowed)
