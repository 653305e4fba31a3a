"""Backend registry and the :func:`solve` entry point.

A backend is a plain function ``solve(problem, *, time_limit=None, seed=None, **options)
-> Assignment`` registered by name. The registry's order is the preference order; lists
such as "exact backends" are derived from the flags. Vendor libraries are imported inside
each backend's ``solve``; availability is checked with :func:`importlib.util.find_spec`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from flexmoe.assign.errors import (
    BackendUnavailableError,
    UnknownBackendError,
    UnsupportedProblemError,
)
from flexmoe.assign.precheck import infeasibility_reason
from flexmoe.assign.problem import AssignmentProblem
from flexmoe.assign.result import Assignment, Status
from flexmoe.assign.verify import verify

__all__ = [
    "Backend",
    "available_backends",
    "exact_backends",
    "get_backend",
    "register",
    "registered_backends",
    "solve",
]

#: Built-in backend modules under ``flexmoe.assign.backends``, in preference order.
BUILTIN: tuple[str, ...] = ("flow", "milp", "convex", "greedy")

SolveFunction = Callable[..., Assignment]
UnsupportedCheck = Callable[[AssignmentProblem], "str | None"]


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
    required_modules : tuple of str
        Import names the backend needs; it is available when all are installed.
    unsupported : callable, optional
        ``unsupported(problem) -> str | None``: why the backend cannot take `problem`
        (names the field and a backend that can), or None.
    variant_option : str, optional
        The option that ``"name:variant"`` sets (``"greedy:topk"`` → ``method="topk"``).
    variants : tuple of str
        The values `variant_option` takes, the default first.
    description : str
    """

    name: str
    solve: SolveFunction
    exact: bool
    required_modules: tuple[str, ...] = ()
    unsupported: UnsupportedCheck | None = None
    variant_option: str | None = None
    variants: tuple[str, ...] = ()
    description: str = ""

    @property
    def missing_modules(self) -> tuple[str, ...]:
        return tuple(m for m in self.required_modules if importlib.util.find_spec(m) is None)

    @property
    def available(self) -> bool:
        return not self.missing_modules

    def options(self) -> tuple[str, ...] | None:
        """Options `solve` takes besides the problem (None: it takes any)."""
        params = list(inspect.signature(self.solve).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params)

    def why_unsupported(self, problem: AssignmentProblem) -> str | None:
        return None if self.unsupported is None else self.unsupported(problem)

    def specs(self) -> list[str]:
        """Every way to name this backend: ``name`` and ``name:variant`` past the default."""
        return [self.name, *(f"{self.name}:{v}" for v in self.variants[1:])]


_REGISTRY: dict[str, Backend] = {}


def register(
    name: str,
    solve: SolveFunction,
    *,
    exact: bool,
    required_modules: tuple[str, ...] = (),
    unsupported: UnsupportedCheck | None = None,
    variant_option: str | None = None,
    variants: tuple[str, ...] = (),
    description: str = "",
    replace: bool = False,
) -> Backend:
    """Register a backend under `name` (third parties: your own solver).

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
    if not name or ":" in name or name == "auto":
        raise ValueError(f"a backend name must be non-empty, without ':', not 'auto'; got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend {name!r} is already registered; pass replace=True to replace it")
    backend = Backend(
        name,
        solve,
        exact,
        tuple(required_modules),
        unsupported,
        variant_option,
        tuple(variants),
        description,
    )
    _REGISTRY[name] = backend
    return backend


def _register_module(module: ModuleType) -> None:
    doc = (module.__doc__ or "").strip().splitlines()
    register(
        module.NAME,
        module.solve,
        exact=module.EXACT,
        required_modules=tuple(module.REQUIRED_MODULES),
        unsupported=getattr(module, "unsupported", None),
        variant_option=getattr(module, "VARIANT_OPTION", None),
        variants=tuple(getattr(module, "VARIANTS", ())),
        description=doc[0] if doc else "",
    )


def _load_builtins() -> None:
    for name in BUILTIN:
        _register_module(importlib.import_module(f"flexmoe.assign.backends.{name}"))


def registered_backends() -> dict[str, Backend]:
    """Every registered backend, in preference order."""
    return dict(_REGISTRY)


def available_backends() -> list[str]:
    """Names of the registered backends whose libraries are installed."""
    return [name for name, b in _REGISTRY.items() if b.available]


def exact_backends() -> list[str]:
    """Names of the registered exact backends."""
    return [name for name, b in _REGISTRY.items() if b.exact]


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(["auto", *_REGISTRY])
        raise UnknownBackendError(f"unknown backend {name!r}; valid backends: {valid}") from None


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


def _resolve(spec: str, problem: AssignmentProblem, options: dict[str, Any]) -> Backend:
    """The backend `spec` names (``"auto"``, ``"name"`` or ``"name:variant"``), with
    `options` checked against what it takes."""
    if spec == "auto":
        backend = choose_backend(problem)
    else:
        name, _, variant = spec.partition(":")
        backend = get_backend(name)
        if variant:
            if backend.variant_option is None:
                raise UnknownBackendError(f"backend {name!r} has no variants; got {spec!r}")
            if backend.variant_option in options:
                raise TypeError(
                    f"backend {spec!r} sets `{backend.variant_option}`; do not pass it again"
                )
            options[backend.variant_option] = variant
    accepted = backend.options()
    unknown = [] if accepted is None else [o for o in options if o not in accepted]
    if unknown:
        raise TypeError(
            f"backend {backend.name!r} does not take option `{unknown[0]}`; "
            f"it takes: {', '.join(accepted or ())}"
        )
    if not backend.available:
        raise BackendUnavailableError(
            f"backend {backend.name!r} needs {', '.join(backend.missing_modules)}, which is "
            "not installed; `pip install flexmoe` installs it"
        )
    return backend


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
        A registered name, optionally with a variant (``"greedy:topk"``,
        ``"flow:networkx"``), or ``"auto"``: flow when the structure allows, MILP otherwise.
    time_limit : float, optional
        Seconds for the solver; reaching it never yields ``OPTIMAL``.
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
    InvalidProblemError, UnknownBackendError, BackendUnavailableError,
    UnsupportedProblemError, TypeError

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
    if not isinstance(problem, AssignmentProblem):
        raise TypeError(f"`problem` must be an AssignmentProblem; got {type(problem).__name__}")
    if time_limit is not None and not (isinstance(time_limit, int | float) and time_limit > 0):
        raise ValueError(f"`time_limit` must be a positive number of seconds; got {time_limit!r}")
    options = dict(options)
    start = time.perf_counter()
    chosen = _resolve(backend, problem, options)
    reason = infeasibility_reason(problem)
    if reason is not None:
        return Assignment.no_solution(
            Status.INFEASIBLE,
            chosen.name,
            reason,
            wall_time=time.perf_counter() - start,
            info={"precheck": True},
        )
    unsupported = chosen.why_unsupported(problem)
    if unsupported is not None:
        raise UnsupportedProblemError(
            f"backend {chosen.name!r} cannot solve this problem: {unsupported}"
        )
    result = chosen.solve(problem, time_limit=time_limit, seed=seed, **options)
    result = result.replace(wall_time=time.perf_counter() - start)
    return _checked(problem, result) if check else result


def _checked(problem: AssignmentProblem, result: Assignment) -> Assignment:
    """Run the independent verifier on a backend's answer.

    A claimed solution that breaks a constraint, a wrong objective or an objective above
    the claimed bound turns into ``ERROR``. A ``RELAXED`` answer is expected to break
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
        return result.replace(status=Status.FEASIBLE) if relaxed else result
    if relaxed and not any(v.startswith("objective") for v in verdict.violations):
        return result.replace(message=f"violates {verdict.reason}")
    message = f"verifier rejected the {result.backend} answer: {verdict.reason}"
    if result.message:
        message += f" (backend said: {result.message})"
    return result.replace(status=Status.ERROR, message=message)
