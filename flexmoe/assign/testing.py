"""Conformance kit for assignment backends, built-in or your own.

Small named reference instances whose optima are proven by hand (each says how), and
contract checks that run on any registered backend spec:

* ``reference:<instance>``: exact backends are ``OPTIMAL`` at the proven optimum and
  ``INFEASIBLE`` (with a reason) where none exists; every backend's objective is at most
  the optimum and its bound at least it; heuristics never claim ``OPTIMAL``, nor
  ``INFEASIBLE`` without a proof;
* ``determinism``: the same seed gives the same answer (on problems full of ties);
* ``unknown-option``: an option the backend does not take raises :class:`TypeError`
  naming the backend and the option;
* ``result-contract``: the canonical spec in ``result.backend``, times, ``x`` (bool,
  shape, read-only), loads and objective recomputed, a strict-JSON round trip;
* ``time-limit``: under a tiny limit a claimed ``OPTIMAL`` is the optimum (computed
  independently, by SciPy's Hungarian method) and nothing breaks: only a backend that
  lies can fail it, however fast or slow the machine;
* ``session``: a :class:`~flexmoe.assign.Solver` session answers several problems in a
  row (a re-solve with new data, another shape) as well as one-shot solves do.

:func:`check_backend` runs them all and collects every failure in a
:class:`ConformanceReport`; per-backend expected failures come in one dict keyed by
``(spec, check)`` with the reason. :func:`conformance_tests` makes the same checks a
parametrized pytest test, two lines in a third party's suite::

    from flexmoe.assign.testing import conformance_tests
    test_my_backend = conformance_tests("my_backend")

>>> from flexmoe.assign.testing import check_backend
>>> report = check_backend("greedy")
>>> report.ok, len(report.passed) > 10, report.outcome("reference:contested")
(True, True, 'passed')
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexmoe.assign.errors import UnsupportedProblemError
from flexmoe.assign.problem import AssignmentProblem, BudgetRow
from flexmoe.assign.registry import Solver, canonical_spec, get_backend, solve
from flexmoe.assign.result import Assignment, Status
from flexmoe.assign.verify import expert_loads, objective_value

__all__ = [
    "CHECKS",
    "REFERENCE",
    "CheckResult",
    "ConformanceReport",
    "ReferenceInstance",
    "check_backend",
    "check_instance",
    "conformance_tests",
    "overrunning_instance",
    "run_check",
]

RTOL = 1e-9


@dataclass(frozen=True)
class ReferenceInstance:
    """A problem with a proven optimum (None: proven infeasible)."""

    name: str
    problem: AssignmentProblem
    optimum: float | None
    proof: str


def _ref(
    name: str, optimum: float | None, proof: str, utility: list[list[float]], **kw: Any
) -> ReferenceInstance:
    problem = AssignmentProblem(np.array(utility, float), name=name, **kw)
    return ReferenceInstance(name, problem, optimum, proof)


REFERENCE: tuple[ReferenceInstance, ...] = (
    _ref(
        "identity",
        3.0,
        "each client takes its own unit-utility expert",
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        max_experts=1,
        load_min=1,
    ),
    _ref(
        "contested",
        5.0,
        "load_min=1 with one each is a permutation; best of 3! is (0, 2, 1)",
        [[3, 1, 0], [2, 0, 1], [2.5, 1, 0]],
        max_experts=1,
        load_min=1,
    ),
    _ref(
        "capped-favourite",
        9.0,
        "load_max[0]=2: the two largest gains u0−u1 (3, 2) go to expert 0; 4 + 3 + 1 + 1",
        [[4, 1], [3, 1], [2, 1], [1, 1]],
        max_experts=1,
        load_max=[2, 4],
    ),
    _ref(
        "two-each",
        19.0,
        "loads must all be 2, so each expert is dropped by exactly one client: the cheapest "
        "drop permutation costs 9 of the total 28",
        [[5, 4, 0], [5, 4, 0], [5, 4, 1]],
        max_experts=2,
        load_max=2,
    ),
    _ref(
        "stay-put",
        2.0,
        "switching one client nets 1.2 − 0.5 < 1; staying gives 1 + 1",
        [[1.0, 1.2], [1.2, 1.0]],
        max_experts=1,
        previous=np.eye(2, dtype=bool),
        switch_cost=0.5,
    ),
    _ref(
        "variance-split",
        1.8,
        "both on expert 0: 2 − 0.2·Σ(L−L̄)² = 2 − 0.2·2 = 1.6 < 1.8 split",
        [[1.0, 0.8], [1.0, 0.8]],
        max_experts=1,
        balance_penalty=0.2,
    ),
    _ref(
        "variance-tolerated",
        1.9,
        "both on expert 0: 2 − 0.05·2 = 1.9 > 1.8 split",
        [[1.0, 0.8], [1.0, 0.8]],
        max_experts=1,
        balance_penalty=0.05,
    ),
    _ref(
        "forbidden-pair",
        10.0,
        "client 0 may only host expert 1 (1); client 1 takes 9",
        [[9, 1], [9, 1]],
        max_experts=1,
        allowed=[[0, 1], [1, 1]],
    ),
    _ref(
        "optional-experts",
        4.0,
        "min 0, max 2: take exactly the positive utilities 1 + 3",
        [[1, -1], [-2, 3]],
        max_experts=2,
        min_experts=0,
    ),
    _ref(
        "linear-assignment",
        -13.0,
        "classic 4×4 assignment (costs as negative utilities); Hungarian optimum 2+6+1+4",
        [[-9, -2, -7, -8], [-6, -4, -3, -7], [-5, -8, -1, -8], [-7, -6, -9, -4]],
        max_experts=1,
        load_min=1,
        load_max=1,
    ),
    _ref(
        "infeasible-counting",
        None,
        "3 experts need a holder each; 2 clients hold 1 each",
        [[1, 1, 1], [1, 1, 1]],
        max_experts=1,
        load_min=1,
    ),
    _ref(
        "infeasible-hidden",
        None,
        "both clients may only host expert 0, whose load_max is 1 (passes the precheck)",
        [[1, 1], [1, 1]],
        max_experts=1,
        allowed=[[1, 0], [1, 0]],
        load_max=[1, 2],
    ),
    _ref(
        "storage",
        6.0,
        "sizes 3, 2, 2 in storage 4: {0} gives 5, {1, 2} gives 6",
        [[5, 3, 3]],
        max_experts=2,
        min_experts=1,
        expert_size=[3, 2, 2],
        storage=[4],
    ),
    _ref(
        "compute-budget",
        2.0,
        "each client can afford only its cost-1 expert (utility 1)",
        [[10, 1], [1, 10]],
        max_experts=1,
        compute_cost=[[2, 1], [1, 2]],
        compute_budget=[1, 1],
    ),
    _ref(
        "generalized-assignment",
        7.0,
        "GAP, one expert each, weighted capacity 4: of the 8 maps only {c1, c2}→0, c0→1 (7) "
        "and c2→0, {c0, c1}→1 (6) fit",
        [[6, 1], [5, 4], [1, 6]],
        max_experts=1,
        load_weight=[[3, 2], [2, 2], [2, 3]],
        load_max=4,
    ),
    _ref(
        "range-balance",
        4.4,
        "λ=0.6·(max−min): 3/0 gives 6 − 1.8, 2/1 gives 5 − 0.6, 1/2 gives 4 − 0.6",
        [[2, 1], [2, 1], [2, 1]],
        max_experts=1,
        balance_penalty=0.6,
        balance_metric="range",
    ),
    _ref(
        "download-budget",
        9.0,
        "download costs 2, 1, 1 in budgets 2 and 3: client 0 can afford {0} (3) or {1, 2} "
        "(4), client 1 expert 0 and one more (5): 4 + 5",
        [[3, 2, 2], [3, 2, 2]],
        max_experts=2,
        min_experts=1,
        budgets=(BudgetRow("download", np.array([2.0, 1.0, 1.0]), np.array([2.0, 3.0])),),
    ),
    _ref(
        "count-budget",
        5.0,
        "a download cost of 2 per expert in budgets 2 and 5 lets the clients hold 1 and 2 "
        "experts (count-equivalent): 3 + 1 + 1",
        [[3, 3, 0], [1, 1, 1]],
        max_experts=3,
        min_experts=1,
        budgets=(BudgetRow("download", np.full(3, 2.0), np.array([2.0, 5.0])),),
    ),
    _ref(
        "small-scale",
        2.9e-7 + 2.95e-7,
        "one expert each with load_max=1 is a permutation: 2.9e-7 + 2.95e-7 beats 3e-7 + 1e-7 "
        "(a certificate on a solver's absolute gap returned the latter as optimal)",
        [[3e-7, 2.9e-7], [2.95e-7, 1e-7]],
        max_experts=1,
        load_max=1,
    ),
    _ref(
        "large-scale",
        5e15,
        "load_max=1, one expert each: the swap 2e15 + 3e15 beats 1e15 + 1e15 (utilities of "
        "1e15 made a linear relaxation's solver fail)",
        [[1e15, 2e15], [3e15, 1e15]],
        max_experts=1,
        load_max=1,
    ),
    _ref(
        "large-scale-balance",
        4.2e15,
        "λ = 4e14: both on expert 1 give 2e15 + 3e15 − λ·2 = 4.2e15, the split 1e15 + 3e15, "
        "the rest less",
        [[1e15, 2e15], [1e15, 3e15]],
        max_experts=1,
        balance_penalty=4e14,
    ),
    _ref(
        "zero-weight",
        1.0,
        "the only pair loads nothing (weight 0): no penalty, utility 1",
        [[1.0]],
        max_experts=1,
        load_weight=[[0.0]],
        balance_penalty=0.1,
    ),
)


def _close(a: float, b: float, scale: float = 0.0) -> bool:
    """`a` and `b` equal up to :data:`RTOL` relative to the larger and to `scale` (no
    absolute floor: references at 1e-7 and at 1e15 are checked alike)."""
    return abs(a - b) <= RTOL * max(abs(a), abs(b), scale)


def _scale(ref: ReferenceInstance) -> float:
    """What the reference comparisons are relative to: the optimum and the largest
    utility."""
    return max(abs(ref.optimum or 0.0), float(np.abs(ref.problem.utility).max()))


# -- the report ------------------------------------------------------------------------

PASSED, FAILED, SKIPPED, XFAILED, XPASSED = (
    "passed",
    "failed",
    "skipped",
    "expected failure",
    "unexpected pass",
)


@dataclass(frozen=True)
class CheckResult:
    """One check of one backend spec: its outcome and why."""

    check: str
    outcome: str
    """``passed``, ``failed``, ``skipped`` (does not apply), ``expected failure`` or
    ``unexpected pass`` (listed as expected to fail, but passed: a failure too)."""
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in (FAILED, XPASSED)


class ContractError(AssertionError):
    """What :meth:`ConformanceReport.raise_if_failed` raises: every failed check."""


@dataclass(frozen=True)
class ConformanceReport:
    """Every check of one backend spec, failures collected rather than stopping at the
    first. ``bool(report)`` is ``report.ok``."""

    spec: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.failed)

    @property
    def passed(self) -> tuple[str, ...]:
        return tuple(r.check for r in self.results if r.outcome == PASSED)

    def outcome(self, check: str) -> str:
        """The outcome of the check called `check`."""
        return next(r.outcome for r in self.results if r.check == check)

    def raise_if_failed(self) -> None:
        """Raise :class:`ContractError` listing every failed check, if any."""
        if not self.ok:
            raise ContractError(str(self))

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        counts = {o: sum(r.outcome == o for r in self.results) for o in dict.fromkeys(
            r.outcome for r in self.results)}  # fmt: skip
        lines = [f"{self.spec}: " + ", ".join(f"{n} {o}" for o, n in counts.items())]
        lines += [f"  {r.outcome}: {r.check}: {r.message}" for r in self.results if r.failed]
        return "\n".join(lines)


# -- the checks ------------------------------------------------------------------------


class _Skip(Exception):
    """The check does not apply: the backend declares the problem outside its structure."""


@dataclass
class _Context:
    """What a check knows: the spec, whether the backend is exact, the seed; it lists
    what it finds wrong in `problems`."""

    spec: str
    seed: int
    exact: bool = field(init=False)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.exact = get_backend(self.spec.partition(":")[0]).exact

    def expect(self, condition: bool, message: str) -> bool:
        if not condition:
            self.problems.append(message)
        return bool(condition)

    def solve(self, problem: AssignmentProblem, **kwargs: Any) -> Assignment:
        try:
            return solve(problem, backend=self.spec, **kwargs)
        except UnsupportedProblemError as err:
            raise _Skip(str(err)) from None


def _check_answer(ctx: _Context, ref: ReferenceInstance, r: Assignment, where: str) -> None:
    """The reference contract of one answer (see the module docstring)."""
    if not ctx.expect(r.status is not Status.ERROR, f"{where}: ERROR: {r.message}"):
        return
    scale = RTOL * _scale(ref)
    if ref.optimum is None:
        ctx.expect(not r.has_solution, f"{where}: claims a solution of an infeasible problem")
        if ctx.exact:
            ctx.expect(
                r.status is Status.INFEASIBLE and bool(r.message),
                f"{where}: {r.status} {r.message!r} on an infeasible problem",
            )
    elif ctx.exact:
        ctx.expect(r.status is Status.OPTIMAL, f"{where}: {r.status} ({r.message})")
        ctx.expect(
            not r.has_solution or _close(r.objective, ref.optimum, _scale(ref)),
            f"{where}: objective {r.objective} ≠ the proven optimum {ref.optimum}",
        )
        ctx.expect(not r.has_solution or r.gap <= 1e-6, f"{where}: gap {r.gap} at OPTIMAL")
    if not ctx.exact:
        ctx.expect(r.status is not Status.OPTIMAL, f"{where}: a heuristic claims OPTIMAL")
        proof = r.info.get("precheck") or r.info.get("proof")
        ctx.expect(
            r.status is not Status.INFEASIBLE or bool(proof),
            f"{where}: a heuristic claims INFEASIBLE without a proof",
        )
    if ref.optimum is not None and r.has_solution:
        ctx.expect(
            r.objective <= ref.optimum + scale,
            f"{where}: objective {r.objective} beats the proven optimum {ref.optimum}",
        )
        ctx.expect(
            math.isnan(r.bound) or r.bound >= ref.optimum - scale,
            f"{where}: bound {r.bound} below the proven optimum {ref.optimum}",
        )


def _reference(ref: ReferenceInstance) -> Callable[[_Context], None]:
    def check(ctx: _Context) -> None:
        result = ctx.solve(ref.problem, seed=ctx.seed)
        _check_answer(ctx, ref, result, f"{ctx.spec} on {ref.name!r}")

    check.__doc__ = f"{ref.name}: {ref.proof}"
    return check


#: Problems full of ties (every permutation-like answer is optimal): where an unseeded
#: random choice shows.
_TIES = AssignmentProblem(
    np.ones((6, 4)),
    max_experts=np.ones(6, np.int64),
    load_min=np.ones(4),
    load_max=np.full(4, 2.0),
    name="ties",
)


def _same_x(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


def _determinism(ctx: _Context) -> None:
    """The same seed gives the same answer, twice in a row."""
    for problem in (REFERENCE[1].problem, _TIES):
        first, again = (ctx.solve(problem, seed=3) for _ in range(2))
        where = f"{ctx.spec} on {problem.name!r} with seed=3"
        if ctx.expect(
            first.status == again.status, f"{where}: {first.status}, then {again.status}"
        ):
            ctx.expect(_same_x(first.x, again.x), f"{where}: two different assignments")


def _unknown_option(ctx: _Context) -> None:
    """An option the backend does not take raises TypeError naming backend and option."""
    name = ctx.spec.partition(":")[0]
    try:
        ctx.solve(REFERENCE[0].problem, no_such_option=1)
    except TypeError as err:
        ctx.expect(
            name in str(err) and "no_such_option" in str(err),
            f"the TypeError does not name the backend {name!r} and `no_such_option`: {err}",
        )
    else:
        ctx.problems.append("an unknown option `no_such_option` was accepted silently")


def _result_contract(ctx: _Context) -> None:
    """Canonical spec, times, x, loads, objective and a strict-JSON round trip."""
    problem = REFERENCE[1].problem
    r = ctx.solve(problem, time_limit=30, seed=ctx.seed)
    canonical = canonical_spec(ctx.spec)
    ctx.expect(r.backend == canonical, f"result.backend {r.backend!r} ≠ the spec {canonical!r}")
    ctx.expect(
        r.wall_time >= r.solve_time >= 0 and r.build_time >= 0,
        f"times: wall {r.wall_time}, solve {r.solve_time}, build {r.build_time}",
    )
    ctx.expect(isinstance(r.status, Status), f"status {r.status!r} is not a Status")
    if r.x is not None:
        ctx.expect(r.x.dtype == np.bool_, f"x has dtype {r.x.dtype}, not bool")
        ctx.expect(r.x.shape == problem.shape, f"x has shape {r.x.shape}, not {problem.shape}")
        ctx.expect(not r.x.flags.writeable, "x is writeable (results never change)")
        loads = expert_loads(problem, r.x)
        ctx.expect(
            r.loads is not None and np.allclose(r.loads, loads),
            f"loads {r.loads} ≠ the loads of x {loads}",
        )
        value = objective_value(problem, r.x)
        ctx.expect(_close(r.objective, value), f"objective {r.objective} ≠ that of x {value}")
    try:
        back = Assignment.from_dict(json.loads(json.dumps(r.to_dict(), allow_nan=False)))
    except (TypeError, ValueError) as err:
        ctx.problems.append(f"the result is not strict JSON: {err}")
        return
    ctx.expect(
        back.status == r.status and back.backend == r.backend and _same_x(back.x, r.x),
        "the JSON round trip changes the status, backend or x",
    )


#: The limit of the time-limit check: far below what any solver needs to prove the
#: optimum of :func:`_timed_instance` (nothing measures how fast the backend is).
TINY_LIMIT = 1e-3


def _timed_instance() -> tuple[AssignmentProblem, float]:
    """240 clients, 24 experts, one expert each, exactly 10 holders each: a transportation
    problem whose optimum SciPy's Hungarian method computes independently (the experts'
    columns repeated 10 times)."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(7)
    utility = rng.random((240, 24))
    repeated = np.repeat(utility, 10, axis=1)
    rows, cols = linear_sum_assignment(repeated, maximize=True)
    optimum = float(repeated[rows, cols].sum())
    band = np.full(24, 10.0)
    problem = AssignmentProblem(
        utility, max_experts=np.ones(240, np.int64), load_min=band, load_max=band, name="timed"
    )
    return problem, optimum


def overrunning_instance() -> AssignmentProblem:
    """170 clients × 14 experts, 4 each, compute rows, a variance term, utilities of 3e7
    (issue 13, item 4): HiGHS 1.16 spends 10-12 s in one root-node separation round of
    a 1 s solve, checking neither its time limit nor its interrupt callback. Where to
    check that a backend's time limit is a promise (``benchmarks/time_limits.py``).
    """
    rng = np.random.default_rng(0)
    n, e, k = 170, 14, 4
    utility = rng.random((n, e)) * 3e7
    cost = np.round(rng.uniform(0, 2, (n, e)), 2)
    x0 = np.zeros((n, e), bool)
    for i in range(n):
        x0[i, rng.choice(e, k, replace=False)] = True
    return AssignmentProblem(
        utility,
        max_experts=np.full(n, k),
        load_max=np.ceil(x0.sum(0) + 1),
        compute_cost=cost,
        compute_budget=(x0 * cost).sum(1) + rng.random(n),
        balance_penalty=0.06,
        name="overrunning-170x14x4",
    )


def _time_limit(ctx: _Context) -> None:
    """Under a tiny limit, OPTIMAL is the true optimum, and the answer is not broken."""
    problem, optimum = _timed_instance()
    r = ctx.solve(problem, time_limit=TINY_LIMIT, seed=ctx.seed)
    where = f"{ctx.spec} with time_limit={TINY_LIMIT}"
    ctx.expect(r.status is not Status.ERROR, f"{where}: ERROR: {r.message}")
    if r.status is Status.OPTIMAL:
        ctx.expect(
            _close(r.objective, optimum),
            f"{where}: claims OPTIMAL at {r.objective!r}; the optimum is {optimum!r}",
        )
    if r.has_solution and not math.isnan(r.bound):
        ctx.expect(r.bound >= optimum - RTOL * optimum, f"{where}: bound {r.bound} below {optimum}")


def _session(ctx: _Context) -> None:
    """A session solves problems in a row: new data, another shape, the first again."""
    contested, identity = REFERENCE[1], REFERENCE[0]
    doubled = ReferenceInstance(
        "contested×2", contested.problem.replace(utility=2 * contested.problem.utility), 10.0, ""
    )
    try:
        session = Solver(ctx.spec)
    except Exception as err:  # any failure to open is the finding
        ctx.problems.append(f"Solver({ctx.spec!r}) fails: {type(err).__name__}: {err}")
        return
    for i, ref in enumerate((contested, doubled, identity, contested)):
        try:
            result = session.solve(ref.problem, seed=ctx.seed)
        except UnsupportedProblemError as err:
            raise _Skip(str(err)) from None
        _check_answer(ctx, ref, result, f"session solve {i + 1} ({ref.name!r})")


#: Every check by name, in the order they run: one per reference instance, then the rest.
CHECKS: dict[str, Callable[[_Context], None]] = {
    **{f"reference:{ref.name}": _reference(ref) for ref in REFERENCE},
    "determinism": _determinism,
    "unknown-option": _unknown_option,
    "result-contract": _result_contract,
    "time-limit": _time_limit,
    "session": _session,
}


def run_check(
    spec: str, check: str, *, seed: int = 0, expected_failure: str | None = None
) -> CheckResult:
    """Run one check of :data:`CHECKS` on backend `spec`.

    Any exception the backend raises is a failure of the check (reported with its type);
    `expected_failure` (a reason) turns a failure into ``expected failure`` and a pass
    into ``unexpected pass``.
    """
    ctx = _Context(spec, seed)
    try:
        CHECKS[check](ctx)
    except _Skip as skip:
        return CheckResult(check, SKIPPED, str(skip))
    except Exception as err:  # a backend crashing is a finding, not a stop
        ctx.problems.append(f"raised {type(err).__name__}: {err}")
    message = "; ".join(ctx.problems)
    if expected_failure is None:
        return CheckResult(check, FAILED if ctx.problems else PASSED, message)
    if ctx.problems:
        return CheckResult(check, XFAILED, f"{message} (expected: {expected_failure})")
    return CheckResult(
        check, XPASSED, f"passed, but listed as expected to fail: {expected_failure}"
    )


def check_backend(
    spec: str, *, seed: int = 0, expected_failures: Mapping[tuple[str, str], str] | None = None
) -> ConformanceReport:
    """Run every check of :data:`CHECKS` on backend `spec` and report them all.

    Parameters
    ----------
    spec : str
        A registered backend spec (``"mine"``, ``"milp:pulp"``).
    seed : int
    expected_failures : mapping, optional
        ``{(spec, check): reason}``: checks known to fail, with why (one dict for every
        backend; entries of other specs are ignored).

    Returns
    -------
    ConformanceReport
        ``report.ok``, ``report.failures``; ``report.raise_if_failed()`` raises listing
        every failed check.
    """
    expected = dict(expected_failures or {})
    unknown = [check for s, check in expected if s == spec and check not in CHECKS]
    if unknown:
        raise KeyError(f"no check {unknown[0]!r}; the checks are: {', '.join(CHECKS)}")
    return ConformanceReport(
        spec,
        tuple(
            run_check(spec, check, seed=seed, expected_failure=expected.get((spec, check)))
            for check in CHECKS
        ),
    )


def check_instance(spec: str, instance: ReferenceInstance, *, seed: int = 0) -> Assignment | None:
    """Run backend `spec` on one reference instance and assert the contract.

    Returns the result, or None when the backend declares the instance unsupported;
    raises :class:`AssertionError` listing everything it breaks.
    """
    ctx = _Context(spec, seed)
    try:
        result = ctx.solve(instance.problem, seed=seed)
    except _Skip:
        return None
    _check_answer(ctx, instance, result, f"{spec} on {instance.name!r}")
    if ctx.problems:
        raise ContractError("; ".join(ctx.problems))
    return result


def _cases(
    specs: tuple[str, ...], expected: Mapping[tuple[str, str], str]
) -> Iterator[tuple[str, str, str | None]]:
    for spec in specs:
        for check in CHECKS:
            yield spec, check, expected.get((spec, check))


def conformance_tests(
    *specs: str, expected_failures: Mapping[tuple[str, str], str] | None = None, seed: int = 0
) -> Callable[..., None]:
    """A pytest test parametrized over every check of every spec in `specs`.

    Assign it to a module-level name that starts with ``test``; expected failures
    become strict ``xfail`` marks with their reasons, checks that do not apply skip.

    Examples
    --------
    In a test module::

        from flexmoe.assign.testing import conformance_tests
        test_mine = conformance_tests("mine", expected_failures={("mine", "session"): "why"})
    """
    import pytest

    expected = dict(expected_failures or {})
    params = [
        pytest.param(
            spec,
            check,
            reason,
            id=f"{spec}-{check}",
            marks=[pytest.mark.xfail(reason=reason, strict=True, raises=ContractError)]
            if reason
            else [],
        )
        for spec, check, reason in _cases(specs, expected)
    ]

    @pytest.mark.parametrize(("spec", "check", "reason"), params)
    def test_conformance(spec: str, check: str, reason: str | None) -> None:
        result = run_check(spec, check, seed=seed)
        if result.outcome == SKIPPED:
            pytest.skip(result.message)
        if result.failed:
            raise ContractError(f"{spec} {check}: {result.message}")

    return test_conformance
