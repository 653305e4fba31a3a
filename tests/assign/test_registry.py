"""The registry and `solve()`: names, options, availability, and the verifier on every result."""

from __future__ import annotations

import numpy as np
import pytest

from flexmoe.assign import (
    Assignment,
    AssignmentProblem,
    BackendUnavailableError,
    Solver,
    SolverError,
    Status,
    UnknownBackendError,
    Variant,
    available_backends,
    canonical_spec,
    exact_backends,
    get_backend,
    register,
    registered_backends,
    solve,
)
from flexmoe.assign import registry as registry_module


@pytest.fixture
def problem():
    return AssignmentProblem(
        np.array([[3.0, 1.0], [2.0, 0.5], [1.0, 2.0]]), max_experts=1, load_min=1
    )


def constant(x_rows, *, status=Status.FEASIBLE, objective=None, bound=np.inf):
    """A backend that always answers `x_rows` (optionally lying about the objective)."""

    def solve_(problem, *, time_limit=None, seed=None):
        x = np.zeros(problem.shape, bool)
        for n, row in enumerate(x_rows):
            x[n, row] = True
        result = Assignment.from_x(problem, x, status=status, bound=bound, backend="fake")
        return result if objective is None else result.replace(objective=objective)

    return solve_


def test_builtin_order_and_derived_lists():
    names = list(registered_backends())
    assert names == [n for n in registry_module.BUILTIN], "registry order is BUILTIN order"
    assert exact_backends() == [n for n, b in registered_backends().items() if b.exact]
    assert set(available_backends()) <= set(names)


def test_unknown_backend_lists_valid_ones(problem):
    with pytest.raises(
        UnknownBackendError, match=r"unknown backend 'simplex'; valid backends: auto"
    ):
        solve(problem, backend="simplex")
    with pytest.raises(UnknownBackendError):
        get_backend("simplex")


def test_option_a_backend_does_not_take(problem, scratch_registry):
    register("fake", constant([[0], [1], [0]]), exact=False)
    with pytest.raises(
        TypeError,
        match=r"backend 'fake' does not take option `gap`; it takes: "
        r"time_limit, seed",
    ):
        solve(problem, backend="fake", gap=0.1)
    with pytest.raises(UnknownBackendError, match="backend 'fake' has no variants; got 'fake:x'"):
        solve(problem, backend="fake:x")


def test_register_refuses_duplicates_and_bad_names(scratch_registry):
    register("fake", constant([]), exact=False)
    with pytest.raises(ValueError, match="already registered"):
        register("fake", constant([]), exact=False)
    for bad in ("", "auto", "a:b"):
        with pytest.raises(ValueError, match="backend name"):
            register(bad, constant([]), exact=False)


def test_missing_vendor_module(problem, scratch_registry):
    register("vendor", constant([]), exact=True, required_modules=("no_such_module_xyz",))
    assert "vendor" not in available_backends()
    with pytest.raises(BackendUnavailableError, match="needs no_such_module_xyz"):
        solve(problem, backend="vendor")


def test_verifier_turns_a_false_claim_into_error(problem, scratch_registry):
    register("liar", constant([[0], [0], [0]], status=Status.OPTIMAL, bound=6.0), exact=True)
    result = solve(problem, backend="liar")
    assert result.status is Status.ERROR
    assert "verifier rejected the fake answer: load_min: expert 1 has 0 < 1" in result.message
    register("wrong-objective", constant([[0], [1], [0]], objective=99.0), exact=False)
    assert "objective: reported 99.0" in solve(problem, backend="wrong-objective").message
    register("bad-bound", constant([[0], [1], [0]], status=Status.OPTIMAL, bound=1.0), exact=True)
    assert "exceeds the claimed upper bound" in solve(problem, backend="bad-bound").message
    unchecked = solve(problem, backend="liar", check=False)
    assert unchecked.status is Status.OPTIMAL


def test_relaxed_answers_keep_their_violations(problem, scratch_registry):
    register("relaxed", constant([[0], [0], [0]], status=Status.RELAXED), exact=False)
    result = solve(problem, backend="relaxed")
    assert result.status is Status.RELAXED and not result.has_solution
    assert result.message.startswith("violates load_min: expert 1 has 0 < 1")
    register("lucky", constant([[0], [1], [0]], status=Status.RELAXED), exact=False)
    assert solve(problem, backend="lucky").status is Status.FEASIBLE


def test_infeasible_is_a_status_with_reason(problem):
    p = problem.replace(load_min=2)
    result = solve(p, backend=available_backends()[0])
    assert result.status is Status.INFEASIBLE and result.x is None
    assert result.message == "Σ max_experts = 3 < Σ load_min = 4 (every holder counts 1)"


def test_bad_arguments(problem):
    with pytest.raises(TypeError, match="`problem` must be an AssignmentProblem; got ndarray"):
        solve(np.eye(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`time_limit` must be a positive number of seconds"):
        solve(problem, time_limit=0)


# -- specs and variants -------------------------------------------------------------------

EVERY_SPEC = "auto, flow, flow:networkx, milp, milp:pulp, milp:scipy, convex, greedy, greedy:topk"


@pytest.mark.parametrize(
    ("spec", "options", "what"),
    [
        ("simplex", {}, "unknown backend 'simplex'"),
        ("flow:bogus", {}, "backend 'flow' has no variant 'bogus'; got 'flow:bogus'"),
        ("milp:cbc", {}, "backend 'milp' has no variant 'cbc'; got 'milp:cbc'"),
        ("greedy", {"method": "best"}, "backend 'greedy' has no variant 'best'; got method='best'"),
        ("convex:cvxpy2", {}, "backend 'convex' has no variants; got 'convex:cvxpy2'"),
        ("flow:", {}, "unknown backend 'flow:'"),
    ],
)
def test_one_unknown_backend_error_lists_every_spec(problem, spec, options, what):
    with pytest.raises(UnknownBackendError) as err:
        solve(problem, backend=spec, **options)
    assert str(err.value) == f"{what}; valid backends: {EVERY_SPEC}"


def test_the_spec_is_checked_before_the_precheck():
    infeasible = AssignmentProblem(np.ones((2, 3)), max_experts=1, load_min=1)
    assert solve(infeasible, "flow").status is Status.INFEASIBLE
    with pytest.raises(UnknownBackendError, match="backend 'flow' has no variant 'bogus'"):
        solve(infeasible, "flow:bogus")


@pytest.mark.parametrize("spec", [None, 3, ("flow",)])
def test_a_spec_that_is_not_a_string_is_a_type_error(problem, spec):
    with pytest.raises(TypeError, match="`backend` must be a string such as 'auto', 'flow'"):
        solve(problem, backend=spec)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`backend` must be a string"):
        Solver(spec)  # type: ignore[arg-type]


def test_canonical_specs():
    for spec, canonical in {
        "milp:highs": "milp",
        "milp:pulp": "milp:pulp",
        "flow:ortools": "flow",
        "greedy:balanced": "greedy",
        "greedy:topk": "greedy:topk",
        "convex:cvxpy": "convex",
        "auto": "auto",
    }.items():
        assert canonical_spec(spec) == canonical
    specs = {name: b.specs() for name, b in registered_backends().items()}
    assert specs == {
        "flow": ["flow", "flow:networkx"],
        "milp": ["milp", "milp:pulp", "milp:scipy"],
        "convex": ["convex"],
        "greedy": ["greedy", "greedy:topk"],
    }


def test_variants_declare_modules_and_extras():
    milp, convex = get_backend("milp"), get_backend("convex")
    assert [(v.name, v.modules, v.extra) for v in milp.all_variants] == [
        ("highs", ("highspy",), ""),
        ("pulp", ("pulp",), "pulp"),
        ("scipy", ("scipy",), ""),
    ]
    assert convex.variant().modules == ("cvxpy",) and convex.variant().extra == "convex"
    assert get_backend("flow").variant("networkx").modules == ("networkx",)
    assert get_backend("greedy").variants == ("balanced", "topk")


@pytest.mark.parametrize(
    ("spec", "variant_option", "variant"),
    [
        ("flow", "engine", "ortools"),
        ("flow:networkx", "engine", "networkx"),
        ("milp", "engine", "highs"),
        ("milp:pulp", "engine", "pulp"),
        ("milp:scipy", "engine", "scipy"),
        ("convex", None, None),
        ("greedy", "method", "balanced"),
        ("greedy:topk", "method", "topk"),
    ],
)
def test_builtins_name_their_results_by_the_canonical_spec(spec, variant_option, variant):
    """Through the registry (which writes it) and called directly (each follows the rule)."""
    p = AssignmentProblem(np.array([[3.0, 1.0], [2.0, 0.5]]), max_experts=1, load_max=1)
    assert solve(p, spec).backend == spec
    backend = get_backend(spec.partition(":")[0])
    options = {} if variant_option is None else {variant_option: variant}
    assert backend.solve(p, **options).backend == spec


def test_per_variant_availability(problem, scratch_registry):
    seen = []

    def toy(problem, *, time_limit=None, seed=None, flavour="plain"):
        seen.append(flavour)
        return constant([[0], [1], [0]])(problem)

    register(
        "toy",
        toy,
        exact=False,
        variant_option="flavour",
        variants=("plain", Variant("fancy", ("no_such_module_xyz",), extra="fancy")),
    )
    toy_backend = get_backend("toy")
    assert "toy" in available_backends(), "the default variant needs nothing"
    assert toy_backend.specs() == ["toy", "toy:fancy"]
    assert toy_backend.specs(available_only=True) == ["toy"]
    assert solve(problem, "toy").backend == "toy" and seen == ["plain"]
    with pytest.raises(
        BackendUnavailableError,
        match=r"backend 'toy:fancy' needs no_such_module_xyz, which is not installed; "
        r"`pip install 'flexmoe\[fancy\]'` installs it",
    ):
        solve(problem, "toy:fancy")
    with pytest.raises(BackendUnavailableError, match="toy:fancy"):
        solve(problem, "toy", flavour="fancy")
    assert seen == ["plain"], "an unavailable variant never runs"


def test_the_variant_reaches_the_backend_and_the_option_alias_is_checked(problem, scratch_registry):
    seen = []

    def toy(problem, *, time_limit=None, seed=None, flavour="plain", level=1):
        seen.append((flavour, level))
        return constant([[0], [1], [0]])(problem)

    register(
        "toy",
        toy,
        exact=False,
        variant_option="flavour",
        variants=("plain", Variant("fancy", options=("level",))),
    )
    solve(problem, "toy:fancy")
    solve(problem, "toy", flavour="fancy")
    solve(problem, "toy", level=3)  # an option only `fancy` takes picks it
    assert seen == [("fancy", 1), ("fancy", 1), ("fancy", 3)]
    assert solve(problem, "toy", level=3).backend == "toy:fancy"
    with pytest.raises(TypeError, match="backend 'toy:fancy' sets `flavour`; do not pass it again"):
        solve(problem, "toy:fancy", flavour="plain")
    with pytest.raises(
        TypeError, match="backend 'toy' does not take option `level`; only 'toy:fancy'"
    ):
        solve(problem, "toy:plain", level=3)
    assert get_backend("toy").options() == ("time_limit", "seed", "level")


def test_register_keeps_its_old_form_and_checks_variants(scratch_registry):
    old = register("old", constant([]), exact=False, required_modules=("numpy",))
    assert old.variants == ("default",) and old.required_modules == ("numpy",)
    assert old.specs() == ["old"] and old.variant_option is None
    with pytest.raises(ValueError, match="several variants and needs a `variant_option`"):
        register("many", constant([]), exact=False, variants=("a", "b"))
    with pytest.raises(ValueError, match="variant names must be unique"):
        register("twice", constant([]), exact=False, variant_option="v", variants=("a", "a"))


def test_a_backend_that_returns_no_assignment_is_a_solver_error(problem, scratch_registry):
    register("nothing", lambda problem, *, time_limit=None, seed=None: None, exact=False)
    with pytest.raises(SolverError, match="backend 'nothing' returned NoneType, not an Assignment"):
        solve(problem, "nothing")
    with pytest.raises(SolverError, match="backend 'nothing' returned NoneType"):
        Solver("nothing").solve(problem)


def test_the_registry_writes_the_canonical_spec(problem, scratch_registry):
    register("misnamed", constant([[0], [1], [0]]), exact=False)  # its answers say "fake"
    assert solve(problem, "misnamed").backend == "misnamed"


# -- sessions -----------------------------------------------------------------------------


class Counting:
    """A session class: counts its solves and hands the count to the answer's info."""

    opened = 0

    def __init__(self, *, flavour="plain"):
        type(self).opened += 1
        self.flavour, self.solves = flavour, 0

    def solve(self, problem, *, time_limit=None, seed=None):
        self.solves += 1
        result = constant([[0], [1], [0]])(problem)
        return result.replace(info={"solves": self.solves, "flavour": self.flavour})


def test_a_session_keeps_its_state_and_is_checked_like_solve(problem, scratch_registry):
    def one_shot(problem, *, time_limit=None, seed=None, flavour="plain"):
        return constant([[0], [1], [0]])(problem)

    register(
        "counting",
        one_shot,
        exact=False,
        variant_option="flavour",
        variants=("plain", "fancy"),
        session=Counting,
    )
    Counting.opened = 0
    session = Solver("counting:fancy")
    infos = [session.solve(problem).info for _ in range(3)]
    assert [i["solves"] for i in infos] == [1, 2, 3] and infos[0]["flavour"] == "fancy"
    assert Counting.opened == 1
    assert solve(problem, "counting").info == {}, "solve() is a one-shot, stateless run"
    bad = problem.replace(load_min=[1, 2])
    assert session.solve(bad).status is Status.ERROR, "the verifier checks session answers"
    assert "precheck" in session.solve(problem.replace(load_min=2)).info


def test_a_backend_without_a_session_class_gets_a_stateless_one(problem):
    session = Solver("greedy:topk")
    first, again = session.solve(problem), session.solve(problem)
    assert first.backend == again.backend == "greedy:topk"
    np.testing.assert_array_equal(first.x, again.x)
    with pytest.raises(TypeError, match="backend 'greedy' does not take option `gap`"):
        Solver("greedy", gap=1)
    with pytest.raises(UnknownBackendError, match="valid backends"):
        Solver("greedy:bogus")


def test_an_auto_session_keeps_one_session_per_chosen_backend(problem):
    session = Solver()
    assert session.solve(problem).backend == "flow"
    weighted = problem.replace(load_weight=np.ones(problem.shape))
    assert session.solve(weighted).backend == "milp"
    assert "flow" in repr(session) and "milp" in repr(session)


def test_the_convex_session_re_solves_warm():
    from flexmoe.assign.instances import generate

    p = generate("clustered", 60, 8, 2, seed=0, balance_penalty=0.01)
    session = Solver("convex")
    first = session.solve(p)
    rng = np.random.default_rng(0)
    again = session.solve(p.replace(utility=p.utility + 0.01 * rng.random(p.shape)))
    assert first.info["compiled"] and not again.info["compiled"]
    assert again.status is Status.FEASIBLE and again.bound >= again.objective
    other = session.solve(generate("uniform", 20, 4, 1, seed=1))
    assert other.info["compiled"] and other.status is Status.FEASIBLE, "another shape recompiles"
