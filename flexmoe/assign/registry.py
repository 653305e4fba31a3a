"""Backend registry, variants, sessions and the :func:`solve` entry point.

A backend is a plain function ``solve(problem, *, time_limit=None, seed=None, **options)
-> Assignment`` registered by name, with one or more **variants**: the engines or
methods it can run (``flow:ortools``, ``flow:networkx``; ``milp:highs``, ``milp:pulp``,
``milp:scipy``; ``greedy:balanced``, ``greedy:topk``). Each :class:`Variant` declares the
modules it imports and the pip extra that installs them. The registry's order is the
preference order; lists such as "exact backends" are derived from the flags. Vendor
libraries are imported inside each backend's ``solve``; availability is checked with
:func:`importlib.util.find_spec`, variant by variant.

A **spec** names a backend and, optionally, a variant: ``"milp"`` or ``"milp:pulp"``.
The registry checks a spec before anything else (one :class:`UnknownBackendError` that
lists every valid spec), checks the variant's modules, passes the variant to the
backend (as the keyword the backend declares, e.g. ``engine="pulp"``) and writes the
canonical spec into ``result.backend``. **Naming rule**: the canonical spec is the bare
name for a backend's default (first) variant and ``name:variant`` for any other:
``"milp:highs"`` → ``"milp"``, ``"greedy:topk"`` stays ``"greedy:topk"``.

A **session** (:class:`Solver`) keeps a backend's state between solves: warm re-solves
across the rounds of a federated run. A backend module may declare a session class as
``SESSION``; the protocol it follows:

* ``SESSION(**options)``: keyword options, the same the backend's ``solve`` takes
  besides the problem, ``time_limit`` and ``seed`` (the variant keyword included);
* ``session.solve(problem, *, time_limit=None, seed=None) -> Assignment``, the same
  contract as the backend's ``solve``, for any problem (a session whose state does not
  fit a problem, e.g. another shape, starts over for it);
* state lives on the instance only; two sessions never share it. A time-limited solve
  runs in a worker thread, and one abandoned at its limit may still run when the next
  solve starts: a session guards its state against that (``convex`` works on a fresh
  relaxation while its own is busy);
* optionally ``session.state_dict() -> dict`` (JSON-serialisable) and
  ``session.load_state_dict(state)``, so that a checkpointed run that resumes its
  sessions gives the same answers as one that never stopped (:meth:`Solver.state_dict`).

A backend without a session class gets a stateless one (each solve calls ``solve``).
:func:`solve` is a one-shot run of the same checked path.

**Statuses are promises**, kept here for every backend: a limited solve answers by the
limit + 1 s (:mod:`flexmoe.assign.deadline`: the backend runs in a worker thread and
is abandoned if it overruns), the independent verifier re-checks every assignment, its
objective and its bound (relative to the objective's scale), and an ``OPTIMAL`` whose
certified gap exceeds its tolerance becomes ``FEASIBLE``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Protocol

from flexmoe.assign.deadline import PROMISE, STOP_WAIT, Found, within
from flexmoe.assign.errors import (
    BackendUnavailableError,
    SolverError,
    UnknownBackendError,
    UnsupportedProblemError,
)
from flexmoe.assign.precheck import infeasibility_reason
from flexmoe.assign.problem import AssignmentProblem
from flexmoe.assign.result import OPTIMAL_RTOL, Assignment, Status
from flexmoe.assign.verify import verify

__all__ = [
    "Backend",
    "Session",
    "Solver",
    "Variant",
    "available_backends",
    "canonical_spec",
    "exact_backends",
    "get_backend",
    "register",
    "registered_backends",
    "solve",
    "spec_name",
]

#: Built-in backend modules under ``flexmoe.assign.backends``, in preference order.
BUILTIN: tuple[str, ...] = ("flow", "milp", "convex", "greedy")
#: The variant of a backend registered without any.
DEFAULT_VARIANT = "default"

SolveFunction = Callable[..., Assignment]
UnsupportedCheck = Callable[[AssignmentProblem], "str | None"]


class Session(Protocol):
    """What :class:`Solver` calls: one solve with the state kept since the last."""

    def solve(
        self,
        problem: AssignmentProblem,
        *,
        time_limit: float | None = None,
        seed: int | None = None,
    ) -> Assignment: ...


@dataclass(frozen=True)
class Variant:
    """One engine or method of a backend, and what it needs.

    Attributes
    ----------
    name : str
        The part after ``:`` in a spec (``"pulp"`` in ``"milp:pulp"``).
    modules : tuple of str
        Import names the variant needs; it is available when all are installed.
    extra : str or None
        The pip extra of flexmoe that installs `modules`: ``""`` for the base install,
        ``"pulp"`` for ``pip install 'flexmoe[pulp]'``, None when flexmoe installs none.
    options : tuple of str
        Options only this variant takes (``solver`` for ``milp:pulp``). Given without a
        variant in the spec, such an option picks its variant.
    description : str
    """

    name: str
    modules: tuple[str, ...] = ()
    extra: str | None = None
    options: tuple[str, ...] = ()
    description: str = ""

    @property
    def missing_modules(self) -> tuple[str, ...]:
        return tuple(m for m in self.modules if importlib.util.find_spec(m) is None)

    @property
    def available(self) -> bool:
        return not self.missing_modules

    def install_hint(self) -> str:
        """How to install what the variant needs (empty when flexmoe installs nothing)."""
        if self.extra is None:
            return ""
        return "pip install flexmoe" if not self.extra else f"pip install 'flexmoe[{self.extra}]'"


@dataclass(frozen=True)
class Backend:
    """A registered backend.

    Attributes
    ----------
    name : str
    solve : callable
        ``solve(problem, *, time_limit=None, seed=None, **options) -> Assignment``.
    exact : bool
        Proves optimality (on the problems it supports).
    all_variants : tuple of Variant
        Its variants, the default first.
    variant_option : str, optional
        The keyword `solve` takes the variant's name as (``"engine"``, ``"method"``);
        None: the variant is not passed (a backend with one variant).
    unsupported : callable, optional
        ``unsupported(problem) -> str | None``: why the backend cannot take `problem`
        (names the field and a backend that can), or None.
    session : type, optional
        Its session class (see the module docstring), or None for a stateless one.
    description : str
    """

    name: str
    solve: SolveFunction
    exact: bool
    all_variants: tuple[Variant, ...]
    variant_option: str | None = None
    unsupported: UnsupportedCheck | None = None
    session: type | None = None
    description: str = ""

    @property
    def variants(self) -> tuple[str, ...]:
        """The variants' names, the default first."""
        return tuple(v.name for v in self.all_variants)

    @property
    def default(self) -> Variant:
        return self.all_variants[0]

    @property
    def required_modules(self) -> tuple[str, ...]:
        """What the default variant needs."""
        return self.default.modules

    @property
    def missing_modules(self) -> tuple[str, ...]:
        return self.default.missing_modules

    @property
    def available(self) -> bool:
        """Whether the default variant's modules are installed."""
        return self.default.available

    def variant(self, name: str | None = None) -> Variant:
        """The variant called `name` (None: the default); an unknown one lists every spec."""
        if name is None:
            return self.default
        for variant in self.all_variants:
            if variant.name == name:
                return variant
        if len(self.all_variants) == 1:
            raise _unknown(f"backend {self.name!r} has no variants; got '{self.name}:{name}'")
        raise _unknown(f"backend {self.name!r} has no variant {name!r}; got '{self.name}:{name}'")

    def spec(self, variant: str | None = None) -> str:
        """The canonical spec of a variant: the name for the default, ``name:variant``
        otherwise."""
        return spec_name(self.name, self.variant(variant).name, self.all_variants)

    def specs(self, *, available_only: bool = False) -> list[str]:
        """Every canonical spec of this backend (the installed variants' only, with
        `available_only`)."""
        return [self.spec(v.name) for v in self.all_variants if v.available or not available_only]

    def options(self) -> tuple[str, ...] | None:
        """Options `solve` takes besides the problem and the variant (None: any)."""
        params = list(inspect.signature(self.solve).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params if p.name != self.variant_option)

    def why_unsupported(self, problem: AssignmentProblem) -> str | None:
        return None if self.unsupported is None else self.unsupported(problem)


def spec_name(name: str, variant: str, variants: Sequence[Variant]) -> str:
    """The naming rule of ``result.backend``: `name` for the default (first) of
    `variants`, ``name:variant`` for any other. Built-in backends called directly name
    their results with it too.

    >>> spec_name("milp", "highs", [Variant("highs"), Variant("pulp")])
    'milp'
    >>> spec_name("milp", "pulp", [Variant("highs"), Variant("pulp")])
    'milp:pulp'
    """
    return name if not variants or variant == variants[0].name else f"{name}:{variant}"


_REGISTRY: dict[str, Backend] = {}


def register(
    name: str,
    solve: SolveFunction,
    *,
    exact: bool,
    required_modules: tuple[str, ...] = (),
    unsupported: UnsupportedCheck | None = None,
    variant_option: str | None = None,
    variants: Iterable[str | Variant] = (),
    session: type | None = None,
    description: str = "",
    replace: bool = False,
) -> Backend:
    """Register a backend under `name` (third parties: your own solver).

    Parameters
    ----------
    name : str
    solve : callable
        ``solve(problem, *, time_limit=None, seed=None, **options) -> Assignment``.
    exact : bool
    required_modules : tuple of str
        Modules every variant needs.
    unsupported : callable, optional
    variant_option : str, optional
        The keyword `solve` receives the variant's name as; needed with several variants.
    variants : iterable of str or Variant
        The variants, the default first (a name alone needs nothing more than
        `required_modules`). None given: one variant, ``"default"``.
    session : type, optional
        A session class (see :mod:`flexmoe.assign.registry`).
    description : str
    replace : bool
        Replace a backend registered under `name`.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import Assignment, AssignmentProblem, Status, register, solve
    >>> def everyone_first(problem, *, time_limit=None, seed=None):
    ...     x = np.zeros(problem.shape, bool); x[:, 0] = True
    ...     return Assignment.from_x(problem, x, status=Status.FEASIBLE, bound=np.inf,
    ...                              backend="first")
    >>> _ = register("first", everyone_first, exact=False, replace=True)
    >>> solve(AssignmentProblem(np.ones((3, 2)), max_experts=1), backend="first").status
    <Status.FEASIBLE: 'feasible'>
    """
    if not isinstance(name, str) or not name or ":" in name or name == "auto":
        raise ValueError(f"a backend name must be non-empty, without ':', not 'auto'; got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend {name!r} is already registered; pass replace=True to replace it")
    declared = _variants(name, variants, tuple(required_modules))
    if len(declared) > 1 and variant_option is None:
        raise ValueError(f"backend {name!r} has several variants and needs a `variant_option`")
    backend = Backend(
        name, solve, exact, declared, variant_option, unsupported, session, description
    )
    _REGISTRY[name] = backend
    return backend


def _variants(
    name: str, given: Iterable[str | Variant], common: tuple[str, ...]
) -> tuple[Variant, ...]:
    """The declared variants with the modules every variant needs added."""
    declared = [v if isinstance(v, Variant) else Variant(v) for v in given]
    declared = declared or [Variant(DEFAULT_VARIANT)]
    names = [v.name for v in declared]
    for v in declared:
        if not isinstance(v.name, str) or not v.name or ":" in v.name or names.count(v.name) > 1:
            raise ValueError(
                f"backend {name!r}: variant names must be unique, non-empty, without ':'; "
                f"got {names}"
            )
    return tuple(replace(v, modules=tuple(dict.fromkeys((*common, *v.modules)))) for v in declared)


def _register_module(module: ModuleType) -> None:
    doc = (module.__doc__ or "").strip().splitlines()
    register(
        module.NAME,
        module.solve,
        exact=module.EXACT,
        required_modules=tuple(getattr(module, "REQUIRED_MODULES", ())),
        unsupported=getattr(module, "unsupported", None),
        variant_option=getattr(module, "VARIANT_OPTION", None),
        variants=tuple(getattr(module, "VARIANTS", ())),
        session=getattr(module, "SESSION", None),
        description=doc[0] if doc else "",
    )


def _load_builtins() -> None:
    for name in BUILTIN:
        _register_module(importlib.import_module(f"flexmoe.assign.backends.{name}"))


def registered_backends() -> dict[str, Backend]:
    """Every registered backend, in preference order."""
    return dict(_REGISTRY)


def available_backends() -> list[str]:
    """Names of the registered backends whose default variant is installed."""
    return [name for name, b in _REGISTRY.items() if b.available]


def exact_backends() -> list[str]:
    """Names of the registered exact backends."""
    return [name for name, b in _REGISTRY.items() if b.exact]


def _unknown(what: str) -> UnknownBackendError:
    """The one error for a spec that names no backend or variant: it lists every spec."""
    specs = ["auto", *(s for b in _REGISTRY.values() for s in b.specs())]
    return UnknownBackendError(f"{what}; valid backends: {', '.join(specs)}")


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; an unknown name lists every valid spec."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise _unknown(f"unknown backend {name!r}") from None


def canonical_spec(spec: str) -> str:
    """The canonical form of `spec` (see the naming rule above); ``"auto"`` stays.

    Raises :class:`UnknownBackendError` (listing every spec) for a spec that names no
    registered backend or variant, :class:`TypeError` for one that is not a string.

    Examples
    --------
    >>> canonical_spec("milp:highs"), canonical_spec("greedy:topk"), canonical_spec("flow")
    ('milp', 'greedy:topk', 'flow')
    """
    if spec == "auto":
        return spec
    name, variant = _split(spec)
    return get_backend(name).spec(variant)


def _split(spec: Any) -> tuple[str, str | None]:
    if not isinstance(spec, str):
        raise TypeError(
            f"`backend` must be a string such as 'auto', 'flow' or 'milp:pulp'; "
            f"got {type(spec).__name__}"
        )
    name, colon, variant = spec.partition(":")
    if colon and not variant:
        raise _unknown(f"unknown backend {spec!r}")
    return name, variant or None


def choose_backend(problem: AssignmentProblem) -> Backend:
    """What ``backend="auto"`` picks: the first available exact backend that supports
    `problem` (flow when the structure allows, MILP otherwise)."""
    reasons = []
    for backend in _REGISTRY.values():
        if not (backend.exact and backend.available):
            continue
        reason = backend.why_unsupported(problem)
        if reason is None:
            return backend
        reasons.append(f"{backend.name}: {reason}")
    raise UnsupportedProblemError(
        "no available exact backend supports this problem"
        + (f" ({'; '.join(reasons)})" if reasons else "")
    )


@dataclass(frozen=True)
class _Choice:
    """A backend and variant with the options checked for them."""

    backend: Backend
    variant: Variant
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return self.backend.spec(self.variant.name)

    @property
    def kwargs(self) -> dict[str, Any]:
        """What the backend's `solve` (or session class) gets besides the problem."""
        option = self.backend.variant_option
        return self.options if option is None else {option: self.variant.name, **self.options}


def _resolve(spec: Any, options: dict[str, Any], problem: AssignmentProblem | None) -> _Choice:
    """The backend and variant `spec` names (``"auto"``, ``"name"`` or ``"name:variant"``),
    with `options` checked against what they take, and the variant's modules installed."""
    if spec == "auto":
        if problem is None:
            raise ValueError("backend 'auto' picks a backend per problem")
        backend, variant = choose_backend(problem), None
    else:
        name, variant = _split(spec)
        backend = get_backend(name)
    options = dict(options)
    variant = _variant_option(backend, spec, variant, options)
    chosen = backend.variant(variant if variant is not None else _scoped_pick(backend, options))
    _check_options(backend, chosen, options)
    if not chosen.available:
        hint = chosen.install_hint()
        raise BackendUnavailableError(
            f"backend {backend.spec(chosen.name)!r} needs {', '.join(chosen.missing_modules)}, "
            "which is not installed" + (f"; `{hint}` installs it" if hint else "")
        )
    return _Choice(backend, chosen, options)


def _variant_option(
    backend: Backend, spec: str, variant: str | None, options: dict[str, Any]
) -> str | None:
    """The variant named by the spec or, equivalently, by the variant keyword (taken out
    of `options`); both at once is an error."""
    key = backend.variant_option
    if key is None or key not in options:
        return variant
    if variant is not None:
        raise TypeError(f"backend {spec!r} sets `{key}`; do not pass it again")
    value = options.pop(key)
    if value not in backend.variants:
        raise _unknown(f"backend {backend.name!r} has no variant {value!r}; got {key}={value!r}")
    return str(value)


def _scoped_pick(backend: Backend, options: dict[str, Any]) -> str | None:
    """The variant that the variant-only options given belong to (None: the default)."""
    owners = {v.name for v in backend.all_variants for o in v.options if o in options}
    return owners.pop() if len(owners) == 1 else None


def _check_options(backend: Backend, variant: Variant, options: dict[str, Any]) -> None:
    accepted = backend.options()
    unknown = [] if accepted is None else [o for o in options if o not in accepted]
    if unknown:
        raise TypeError(
            f"backend {backend.name!r} does not take option `{unknown[0]}`; "
            f"it takes: {', '.join(accepted or ())}"
        )
    for other in backend.all_variants:
        foreign = [o for o in options if o in other.options and o not in variant.options]
        if foreign:
            raise TypeError(
                f"backend {backend.spec(variant.name)!r} does not take option `{foreign[0]}`; "
                f"only {backend.spec(other.name)!r} does"
            )


class _Stateless:
    """The session of a backend without a session class: each solve calls `solve`."""

    def __init__(self, choice: _Choice):
        self.choice = choice

    def solve(
        self,
        problem: AssignmentProblem,
        *,
        time_limit: float | None = None,
        seed: int | None = None,
    ) -> Assignment:
        backend = self.choice.backend
        return backend.solve(problem, time_limit=time_limit, seed=seed, **self.choice.kwargs)


def _one_shot(choice: _Choice) -> Session:
    return _Stateless(choice)


class Solver:
    """A session: solves problems one after another with a backend that keeps its state
    (warm re-solves), checked and verified exactly like :func:`solve`.

    Parameters
    ----------
    backend : str
        A spec (``"convex"``, ``"milp:pulp"``) or ``"auto"`` (the backend is chosen per
        problem; each chosen one keeps its own session).
    check : bool
        Re-verify every result (default), as :func:`solve` does.
    **options
        Backend options, checked now for a named backend.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem, Solver
    >>> session = Solver("convex")
    >>> p = AssignmentProblem(np.eye(3), max_experts=1, load_min=1)
    >>> [session.solve(p.replace(utility=u * np.eye(3))).objective for u in (1.0, 2.0)]
    [3.0, 6.0]
    """

    def __init__(self, backend: str = "auto", *, check: bool = True, **options: Any):
        if backend != "auto":
            _resolve(backend, options, None)
        self.backend = backend
        self.check = check
        self.options = dict(options)
        self._sessions: dict[str, Session] = {}

    def solve(
        self,
        problem: AssignmentProblem,
        *,
        time_limit: float | None = None,
        seed: int | None = None,
    ) -> Assignment:
        """Solve `problem` (see :func:`solve`) with the state kept since the last solve."""
        return _run(problem, self.backend, self.options, time_limit, seed, self.check, self._open)

    def _open(self, choice: _Choice) -> Session:
        if choice.spec not in self._sessions:
            cls = choice.backend.session
            self._sessions[choice.spec] = (
                _Stateless(choice) if cls is None else cls(**choice.kwargs)
            )
        return self._sessions[choice.spec]

    def state_dict(self) -> dict[str, Any]:
        """The JSON-serialisable state of every open session that can save its own
        (``{spec: state}``); sessions without ``state_dict`` are left out."""
        return {
            spec: session.state_dict()
            for spec, session in self._sessions.items()
            if hasattr(session, "state_dict")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Reopen the sessions :meth:`state_dict` saved, with their state."""
        for spec, saved in state.items():
            choice = _resolve(spec, dict(self.options), None)
            session = self._open(choice)
            if hasattr(session, "load_state_dict"):
                session.load_state_dict(saved)

    def __repr__(self) -> str:
        return f"Solver({self.backend!r}, sessions={sorted(self._sessions)})"


def solve(
    problem: AssignmentProblem,
    backend: str = "auto",
    *,
    time_limit: float | None = None,
    seed: int | None = None,
    check: bool = True,
    **options: Any,
) -> Assignment:
    """Solve `problem` with a registered backend and verify the answer.

    Parameters
    ----------
    problem : AssignmentProblem
    backend : str
        A spec: a registered name, optionally with a variant (``"greedy:topk"``,
        ``"flow:networkx"``), or ``"auto"``: flow when the structure allows, MILP
        otherwise. ``result.backend`` is the canonical spec of what ran.
    time_limit : float, optional
        Seconds for the whole solve; reaching it never yields ``OPTIMAL``, and the call
        returns by ``time_limit`` + 1 s whatever the backend does: one still running
        then is left to finish in the background and its best assignment so far is
        the answer (:mod:`flexmoe.assign.deadline`).
    seed : int, optional
        For backends with randomness.
    check : bool
        Re-verify the result with :func:`~flexmoe.assign.verify` (default). A violation
        turns the status into ``ERROR`` with the reason.
    **options
        Backend options; one the backend does not take raises :class:`TypeError`.

    Returns
    -------
    Assignment
        Infeasibility is a status with a reason, never an exception.

    Raises
    ------
    TypeError
        `problem` is not an :class:`AssignmentProblem`, `backend` not a string, or an
        option the backend (or variant) does not take.
    UnknownBackendError
        `backend` names no registered backend or variant (the message lists every spec).
    BackendUnavailableError
        The variant's modules are not installed (the message names the pip extra).
    UnsupportedProblemError
        The backend cannot express the problem (the message names a backend that can).
    SolverError
        The backend broke its contract: it returned something that is not an
        :class:`Assignment` (a wrong answer is an ``ERROR`` status instead).
    InvalidProblemError

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem, solve
    >>> utility = np.array([[3.0, 1.0, 0.0], [2.0, 0.0, 1.0], [2.5, 1.0, 0.0]])
    >>> problem = AssignmentProblem(utility, max_experts=1, load_min=1)
    >>> result = solve(problem)
    >>> result.status, result.objective
    (<Status.OPTIMAL: 'optimal'>, 5.0)
    >>> [result.experts_of(n) for n in range(3)]
    [[0], [2], [1]]
    """
    return _run(problem, backend, options, time_limit, seed, check, _one_shot)


def _run(
    problem: AssignmentProblem,
    spec: str,
    options: dict[str, Any],
    time_limit: float | None,
    seed: int | None,
    check: bool,
    session: Callable[[_Choice], Session],
) -> Assignment:
    """The one checked path of :func:`solve` and :meth:`Solver.solve`: spec and options,
    precheck, structure, the backend's answer, the canonical spec, the verifier."""
    if not isinstance(problem, AssignmentProblem):
        raise TypeError(f"`problem` must be an AssignmentProblem; got {type(problem).__name__}")
    if time_limit is not None and not (isinstance(time_limit, int | float) and time_limit > 0):
        raise ValueError(f"`time_limit` must be a positive number of seconds; got {time_limit!r}")
    start = time.perf_counter()
    choice = _resolve(spec, options, problem)
    reason = infeasibility_reason(problem)
    if reason is not None:
        return Assignment.no_solution(
            Status.INFEASIBLE,
            choice.spec,
            reason,
            wall_time=time.perf_counter() - start,
            info={"precheck": True},
        )
    unsupported = choice.backend.why_unsupported(problem)
    if unsupported is not None:
        raise UnsupportedProblemError(
            f"backend {choice.spec!r} cannot solve this problem: {unsupported}"
        )
    result = _call(problem, session(choice), choice.spec, time_limit, seed, start)
    if not isinstance(result, Assignment):
        raise SolverError(
            f"backend {choice.spec!r} returned {type(result).__name__}, not an Assignment"
        )
    result = result.replace(wall_time=time.perf_counter() - start)
    if check:
        result = _checked(problem, result)
    return result.replace(backend=choice.spec)


#: A limit longer than this (a year; ``inf`` included) is no limit to wait for.
_NO_LIMIT = 365 * 24 * 3600.0


def _call(
    problem: AssignmentProblem,
    solver: Session,
    spec: str,
    time_limit: float | None,
    seed: int | None,
    start: float,
) -> Any:
    """The backend's answer; under a limit, by the limit + :data:`~.deadline.PROMISE`
    seconds whatever the backend does (:func:`~flexmoe.assign.deadline.within`): the
    backend gets the time left of the limit, and one that overruns it is abandoned."""
    if time_limit is None or time_limit > _NO_LIMIT:
        return solver.solve(problem, time_limit=time_limit, seed=seed)
    left = max(time_limit - (time.perf_counter() - start), 1e-3)
    how, answer = within(problem, left, lambda: solver.solve(problem, time_limit=left, seed=seed))
    if how == "done":
        return answer
    assert isinstance(answer, Found)
    return _abandoned(problem, spec, answer, time_limit)


def _abandoned(
    problem: AssignmentProblem, spec: str, found: Found, time_limit: float
) -> Assignment:
    """The answer for a backend still running :data:`~.deadline.STOP_WAIT` s past its
    limit: the best assignment it reported (``FEASIBLE``), or ``LIMIT_NO_SOLUTION``."""
    message = (
        f"time limit {time_limit:g} s reached; {spec} gave no answer {STOP_WAIT:g} s after "
        f"being asked to stop, and what it still does runs on in the background (the "
        f"promise: an answer by the limit + {PROMISE:g} s)"
    )
    info = {"abandoned": True, "source": found.source}
    if found.x is None:
        return Assignment.no_solution(
            Status.LIMIT_NO_SOLUTION,
            spec,
            f"{message}; no feasible assignment reported before",
            bound=found.bound,
            info=info,
        )
    return Assignment.from_x(
        problem,
        found.x,
        status=Status.FEASIBLE,
        bound=found.bound,
        backend=spec,
        message=f"{message}; its best assignment so far, from {found.source}",
        info=info,
    )


def _certified(result: Assignment) -> Assignment:
    """An ``OPTIMAL`` whose certified gap exceeds its tolerance (``info["rtol"]``, the
    `mip_gap` a caller gave ``milp``, else :data:`~.result.OPTIMAL_RTOL`) — or that has
    no bound — is only ``FEASIBLE``: the status is a promise, whatever the backend's
    own tolerances did (a min-cost flow's cost scaling at |u| ≈ 1e-305, say)."""
    if result.status is not Status.OPTIMAL:
        return result
    rtol = float(result.info.get("rtol", OPTIMAL_RTOL))
    if result.gap <= rtol:
        return result
    message = (
        f"the backend claimed OPTIMAL, but its certified gap is {result.gap:.3g} > {rtol:g} "
        f"(objective {result.objective!r}, bound {result.bound!r}): no certificate"
    )
    if result.message:
        message += f" (backend said: {result.message})"
    return result.replace(status=Status.FEASIBLE, message=message)


def _checked(problem: AssignmentProblem, result: Assignment) -> Assignment:
    """Run the independent verifier on a backend's answer.

    A claimed solution that breaks a constraint, a wrong objective or an objective above
    the claimed bound turns into ``ERROR``; an ``OPTIMAL`` without a certified gap within
    its tolerance into ``FEASIBLE``. A ``RELAXED`` answer is expected to break
    constraints: it becomes ``FEASIBLE`` if it happens to satisfy them all, and otherwise
    keeps its status with the violations in `message`.
    """
    if result.x is None:
        if result.status.has_solution or result.status is Status.RELAXED:
            return result.replace(
                status=Status.ERROR,
                message=f"backend reported {result.status} without an assignment",
            )
        return result
    relaxed = result.status is Status.RELAXED
    verdict = verify(
        problem, result.x, objective=result.objective, bound=None if relaxed else result.bound
    )
    if verdict.ok:
        return result.replace(status=Status.FEASIBLE) if relaxed else _certified(result)
    if relaxed and not any(v.startswith("objective") for v in verdict.violations):
        return result.replace(message=f"violates {verdict.reason}")
    message = f"verifier rejected the {result.backend} answer: {verdict.reason}"
    if result.message:
        message += f" (backend said: {result.message})"
    return result.replace(status=Status.ERROR, message=message)
