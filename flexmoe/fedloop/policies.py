"""Assignment methods: which experts each participating client holds this round.

A method gets the round's :class:`RoundInput` — the participants and the round's
:class:`~flexmoe.assign.AssignmentProblem` (built once per round by the strategy: the
fitness utility, each client's capacity, its storage and compute budgets, the balanced
load band, the churn and balance terms) — and returns a
:class:`~flexmoe.assign.Assignment` of that problem. Methods are a registry: a new one
is one function and one :func:`register_method` call; a method that keeps state across
rounds (a warm solver session, an assignment drawn once) subclasses :class:`Method`.

Built-ins: ``flex`` solves the problem with :func:`flexmoe.assign.solve`; ``greedy``
gives each client its top-k by fitness through the ``greedy:topk`` backend (load
ignored); ``random``, ``round_robin`` and ``full`` (every client every expert, capacity
ignored) need no solver. An assignment that breaks the problem's constraints by design
(greedy, full, usually random) has status ``relaxed`` with the violations in its message.

This module imports neither torch nor the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from flexmoe.assign import (
    Assignment,
    AssignmentProblem,
    BackendUnavailableError,
    Solver,
    Status,
    UnknownBackendError,
    UnsupportedProblemError,
    solve,
    verify,
)
from flexmoe.fedloop.registry import Registry
from flexmoe.params import ConfigError

if TYPE_CHECKING:
    from flexmoe.fedloop.config import FedConfig
    from flexmoe.fedloop.spec import FederationSpec

__all__ = [
    "METHODS",
    "Method",
    "MethodSetup",
    "RoundInput",
    "load_band",
    "make_method",
    "register_method",
]

log = logging.getLogger(__name__)

Bool = NDArray[np.bool_]


def load_band(
    capacity: NDArray[np.int64], n_experts: int, deficit: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The tightest band on holders per expert: ``floor(T/E) <= L_e <= ceil(T/E)`` with
    ``T = Σ capacity``; `deficit` (optional) raises the lower bound of the most
    under-served experts to the ceiling as far as the ``T`` slots allow.

    Examples
    --------
    >>> lo, hi = load_band(np.array([2, 2, 1]), 2, deficit=np.array([0.0, 1.5]))
    >>> lo.tolist(), hi.tolist()
    ([2.0, 3.0], [3.0, 3.0])
    """
    total = int(capacity.sum())
    lo = np.full(n_experts, float(total // n_experts))
    hi = np.full(n_experts, float(min(math.ceil(total / n_experts), len(capacity))))
    if deficit is not None:
        room = total - lo.sum()
        for e in np.argsort(-deficit, kind="stable"):
            if deficit[e] >= 1 - 1e-9 and lo[e] < hi[e] and room >= 1:
                lo[e] += 1
                room -= 1
    return lo, hi


@dataclass(frozen=True)
class MethodSetup:
    """What a method is built from, once per run.

    Attributes
    ----------
    config : FedConfig
        The run (``backend``, ``carry_deficit``, ``switch_cost``, ``seed``, ...).
    spec : FederationSpec
        The federation as the server knows it (clients, experts, capacities, budgets).
    """

    config: FedConfig
    spec: FederationSpec


@dataclass(frozen=True)
class RoundInput:
    """One round as a method sees it.

    Attributes
    ----------
    round : int
    clients : tuple of int
        The participants: row ``i`` of `problem` is client ``clients[i]``.
    problem : AssignmentProblem
        Built once for the round: ``utility`` (fitness plus exploration bonus),
        ``max_experts`` = the capacities, storage and compute rows, the load band
        (with the carried deficit when configured), ``previous`` / ``switch_cost``,
        ``balance_penalty`` / ``balance_metric``.
    rng : numpy.random.Generator
        The strategy's generator (draw from it only in a fixed order: it is seeded).
    seed : int
        A seed drawn for this round's solver.
    carried : bool
        Whether `problem`'s lower load bounds carry a deficit (then
        :func:`load_band` of the capacities is the plain band).
    """

    round: int
    clients: tuple[int, ...]
    problem: AssignmentProblem
    rng: np.random.Generator
    seed: int
    carried: bool = False

    def assignment(self, x: Bool, backend: str) -> Assignment:
        """An :class:`~flexmoe.assign.Assignment` of `x` without a solver: ``feasible``
        when `x` meets every constraint of `problem`, else ``relaxed`` with the
        violations in its message."""
        verdict = verify(self.problem, x)
        status = Status.FEASIBLE if verdict.ok else Status.RELAXED
        message = "" if verdict.ok else f"violates {verdict.reason}"
        return Assignment.from_x(self.problem, x, status=status, bound=math.inf,
                                 backend=backend, message=message)  # fmt: skip


class Method:
    """An assignment method; one instance serves one run, so it may keep state.

    Subclass it for a method with state across rounds (override :meth:`assign`, and
    :meth:`state_dict` / :meth:`load_state_dict` so that a resumed run continues it);
    a stateless method can be registered as a plain function instead.
    """

    def __init__(self, setup: MethodSetup) -> None:
        self.setup = setup

    def initial_holdings(self) -> Bool:
        """What each client holds (and evaluates with) before its first round:
        experts ``0 .. capacity − 1``."""
        spec = self.setup.spec
        return np.arange(spec.n_experts) < spec.capacity()[:, None]

    def assign(self, round: RoundInput) -> Assignment:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state to checkpoint (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


AssignFunction = Callable[[RoundInput], Assignment]


class _Stateless(Method):
    """A plain ``assign(round) -> Assignment`` function as a :class:`Method`."""

    function: AssignFunction

    def assign(self, round: RoundInput) -> Assignment:
        return type(self).function(round)


#: Assignment methods by name: each a :class:`Method` subclass (built once per run).
METHODS: Registry[type[Method]] = Registry("method")


def register_method(
    name: str, method: type[Method] | AssignFunction, *, replace: bool = False
) -> None:
    """Make `method` selectable as ``FedConfig(method=name)`` (``--method name``).

    Parameters
    ----------
    name : str
    method : Method subclass or callable
        A class built once per run as ``method(setup)`` (:class:`MethodSetup`), or a
        function ``assign(round) -> Assignment`` (:class:`RoundInput`) for a method
        without state.
    replace : bool
        Allow replacing a method registered under the same name.

    Examples
    --------
    Every client takes its lowest-numbered experts (a toy):

    >>> def lowest(round):
    ...     p = round.problem
    ...     return round.assignment(np.arange(p.n_experts) < p.max_experts[:, None], "lowest")
    >>> register_method("toy_lowest", lowest)
    >>> "toy_lowest" in METHODS
    True
    >>> METHODS.unregister("toy_lowest")
    """
    if isinstance(method, type) and issubclass(method, Method):
        METHODS.register(name, method, replace=replace)
        return
    if not callable(method):
        raise TypeError(f"`method` must be a Method subclass or a function; got {method!r}")
    wrapped = type(f"Method_{name}", (_Stateless,), {"function": staticmethod(method)})
    METHODS.register(name, wrapped, replace=replace)


def make_method(setup: MethodSetup) -> Method:
    """The method `setup.config.method` names, built for this run."""
    name = setup.config.method
    if name not in METHODS:
        raise ConfigError("method", f"`method` {METHODS.unknown(name)}")
    return METHODS[name](setup)


# -- the built-ins ----------------------------------------------------------------------


def _solve(
    problem: AssignmentProblem, backend: str, seed: int, session: Solver | None = None
) -> Assignment:
    """:func:`flexmoe.assign.solve` (or `session`'s warm solve), with what the registry
    raises about `backend` reported against the ``backend`` setting."""
    try:
        if session is not None:
            return session.solve(problem, seed=seed)
        return solve(problem, backend, seed=seed)
    except (UnknownBackendError, BackendUnavailableError, UnsupportedProblemError) as err:
        raise ConfigError("backend", f"`backend` {backend!r}: {err}") from err


def _solution(result: Assignment, what: str) -> Assignment:
    if result.x is None:
        raise RuntimeError(f"{what} failed ({result.status}, backend {result.backend}): "
                           f"{result.message}")  # fmt: skip
    return result


class Flex(Method):
    """The load-balanced assignment: the round's problem solved by the configured
    backend, in one :class:`~flexmoe.assign.Solver` session for the whole run (a backend
    with a session class, flow and convex, re-solves warm from the last round: flow
    from its expert prices). When a carried deficit makes the band infeasible it solves
    once more with the plain band."""

    def __init__(self, setup: MethodSetup) -> None:
        super().__init__(setup)
        self.session: Solver | None = None

    def _session(self) -> Solver:
        if self.session is None:
            backend = self.setup.config.backend
            try:
                self.session = Solver(backend)
            except (UnknownBackendError, BackendUnavailableError) as err:
                raise ConfigError("backend", f"`backend` {backend!r}: {err}") from err
        return self.session

    def assign(self, round: RoundInput) -> Assignment:
        backend, session = self.setup.config.backend, self._session()
        result = _solve(round.problem, backend, round.seed, session)
        if result.status is Status.INFEASIBLE and round.carried:
            log.warning("load band with carried deficit is infeasible; solving without the carry")
            p = round.problem
            lo, hi = load_band(p.max_experts, p.n_experts)
            result = _solve(p.replace(load_min=lo, load_max=hi), backend, round.seed, session)
        return _solution(result, "assignment")

    def state_dict(self) -> dict[str, Any]:
        """The solver sessions' state (flow's prices), so that a resumed run re-solves
        from where the interrupted one was."""
        return {"sessions": self._session().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._session().load_state_dict(state.get("sessions", {}))


def greedy(round: RoundInput) -> Assignment:
    """Each client its top-k experts by fitness (``greedy:topk``), load ignored."""
    return _solution(_solve(round.problem, "greedy:topk", round.seed), "greedy assignment")


def random(round: RoundInput) -> Assignment:
    """Each client `capacity` experts drawn uniformly (from the strategy's generator)."""
    p = round.problem
    x = np.zeros(p.shape, dtype=bool)
    for i in range(p.n_clients):
        x[i, round.rng.choice(p.n_experts, int(p.max_experts[i]), replace=False)] = True
    return round.assignment(x, "random")


def round_robin(round: RoundInput) -> Assignment:
    """Consecutive blocks of experts, shifted by one every round."""
    p = round.problem
    x = np.zeros(p.shape, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(p.max_experts)[:-1]]) + round.round
    for i in range(p.n_clients):
        x[i, (starts[i] + np.arange(p.max_experts[i])) % p.n_experts] = True
    return round.assignment(x, "round_robin")


class Full(Method):
    """Every client holds every expert, from the first round on: capacity ignored (a
    control that moves the most bytes; not an upper bound on accuracy)."""

    def initial_holdings(self) -> Bool:
        return np.ones((self.setup.spec.n_clients, self.setup.spec.n_experts), dtype=bool)

    def assign(self, round: RoundInput) -> Assignment:
        return round.assignment(np.ones(round.problem.shape, dtype=bool), "full")


register_method("flex", Flex)
register_method("greedy", greedy)
register_method("random", random)
register_method("round_robin", round_robin)
register_method("full", Full)
