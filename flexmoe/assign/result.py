"""Solver results: a frozen :class:`Assignment` that never mutates the problem."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from flexmoe.assign.problem import AssignmentProblem, Bool, Float
from flexmoe.assign.verify import expert_loads, objective_scale_and_loads

__all__ = ["OPTIMAL_RTOL", "Assignment", "LoadStats", "Status", "load_stats", "relative_gap"]

#: The relative tolerance of ``OPTIMAL`` unless a backend option states a tighter or
#: looser one (``milp``'s `mip_gap`, whose default it is).
OPTIMAL_RTOL = 1e-6


class Status(StrEnum):
    """Outcome of a solve. Each status is a promise:

    * ``OPTIMAL``: ``gap <= OPTIMAL_RTOL`` (1e-6), or the `mip_gap` the caller gave
      ``milp``; the gap is relative (see :func:`relative_gap`), computed by the library
      from the objective it recomputes in float64 and a bound the backend proves;
    * ``INFEASIBLE``: proved (by the precheck's aggregate reason, a min-cost flow, or a
      MILP engine without presolve), with the reason in `message`;
    * a time limit never gives ``OPTIMAL``, and :func:`flexmoe.assign.solve` returns by
      the limit + 1 s.
    """

    OPTIMAL = "optimal"
    """Proven optimal within a relative tolerance: ``(bound − objective) / max(|objective|,
    |bound|, scale) <= OPTIMAL_RTOL`` (1e-6; ``milp``: its `mip_gap`, stated as
    ``info["rtol"]``), `scale` being the objective's scale at the assignment — the
    magnitude of its terms, at least its largest utility
    (:func:`~flexmoe.assign.verify.objective_scale`). Never on a solver's absolute gap:
    the certificate holds at any scale of the data. :func:`flexmoe.assign.solve` turns
    an ``OPTIMAL`` without such a gap into ``FEASIBLE``."""
    FEASIBLE = "feasible"
    """A verified feasible assignment without an optimality proof (heuristic or limit hit)."""
    INFEASIBLE = "infeasible"
    """No assignment satisfies the constraints; `message` says why."""
    RELAXED = "relaxed"
    """An assignment of a relaxation: the backend ignores some constraints by design
    (``greedy:topk`` ignores the load band). `x` is set, `message` lists what it violates;
    it is not a solution of the problem."""
    LIMIT_NO_SOLUTION = "limit_no_solution"
    """A time or iteration limit was reached before any feasible assignment was found."""
    ERROR = "error"
    """The backend failed or its answer was rejected by the verifier; `message` says why."""

    @property
    def has_solution(self) -> bool:
        return self in (Status.OPTIMAL, Status.FEASIBLE)


def relative_gap(objective: float, bound: float, scale: float = 0.0) -> float:
    """``(bound − objective) / max(|objective|, |bound|, scale)``: 0 when equal, NaN if
    unknown, ``inf`` for an infinite bound.

    `scale` is the objective's scale (``Assignment.scale``: the magnitude of its terms,
    at least the largest utility): where terms cancel, the objective can be near zero
    while float64 and the solvers only resolve differences relative to the terms and to
    the largest coefficient. No absolute floor: the gap means the same at utilities of
    1e-300 and of 1e300.

    >>> relative_gap(1.0, 2.0), relative_gap(1e-300, 2e-300), relative_gap(0.0, 1e-12, 2.0)
    (0.5, 0.5, 5e-13)
    """
    if math.isnan(objective) or math.isnan(bound):
        return math.nan
    if bound == objective:
        return 0.0
    if math.isinf(bound):
        return math.inf
    return (bound - objective) / max(abs(objective), abs(bound), abs(scale))


@dataclass(frozen=True)
class LoadStats:
    """Spread of expert loads (one vector of loads)."""

    cv: float
    """Coefficient of variation: std / mean (0 when every load is equal; NaN if all zero)."""
    max_over_mean: float
    min: float
    max: float
    entropy: float
    """Normalised entropy of the load shares, in [0, 1]; 1 is perfectly even."""
    zero: int
    """Experts with zero load (never trained)."""

    @classmethod
    def of(cls, loads: Float) -> LoadStats:
        loads = np.asarray(loads, dtype=np.float64)
        total = float(loads.sum())
        mean = total / loads.size
        if total <= 0:
            return cls(math.nan, math.nan, 0.0, 0.0, 0.0, int(loads.size))
        share = loads[loads > 0] / total
        entropy = 1.0
        if loads.size > 1:
            entropy = float(-(share * np.log(share)).sum() / math.log(loads.size))
        return cls(
            cv=float(loads.std() / mean),
            max_over_mean=float(loads.max() / mean),
            min=float(loads.min()),
            max=float(loads.max()),
            entropy=entropy,
            zero=int((loads == 0).sum()),
        )


def load_stats(x: Bool, problem: AssignmentProblem) -> dict[str, LoadStats]:
    """Load statistics of an assignment ``x`` by holders and by (weighted) load.

    Returns ``{"holders": ..., "weighted": ...}``; the two agree for count loads.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem, load_stats
    >>> p = AssignmentProblem(np.zeros((4, 2)), max_experts=1)
    >>> load_stats(np.array([[1, 0], [1, 0], [1, 0], [0, 1]], bool), p)["holders"].zero
    0
    """
    x = np.asarray(x, dtype=bool)
    return {
        "holders": LoadStats.of(x.sum(axis=0)),
        "weighted": LoadStats.of(expert_loads(problem, x)),
    }


@dataclass(frozen=True)
class Assignment:
    """The answer of a backend, re-verified by :func:`flexmoe.assign.solve`.

    Attributes
    ----------
    status : Status
    x : ndarray of bool, shape (n_clients, n_experts), or None
        ``x[n, e]``: client n holds expert e. None when there is no solution.
    objective : float
        Objective value of `x`, recomputed in float64 (NaN without a solution).
    bound : float
        Upper bound on the optimum: equal to `objective` (up to `gap`) when optimal,
        ``inf`` for heuristics that prove nothing, NaN when unknown.
    loads : ndarray, shape (n_experts,), or None
        Load of each expert under `x` (counts or weighted sums).
    backend : str
    message : str
        Why (infeasible, error), or what was approximated.
    build_time, solve_time, wall_time : float
        Seconds spent building the model, inside the solver, and in total.
    info : dict
        Backend-specific details (engine, iterations, scaling, ...), JSON-serialisable.
    scale : float
        The objective's scale at `x` (:func:`~flexmoe.assign.verify.objective_scale`:
        the magnitude of its terms, at least the largest utility of an allowed pair);
        `gap` is relative to it, to `objective` and to `bound`. NaN without a solution.
    """

    status: Status
    x: Bool | None
    objective: float
    bound: float
    backend: str
    loads: Float | None = None
    message: str = ""
    build_time: float = 0.0
    solve_time: float = 0.0
    wall_time: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    scale: float = math.nan

    @classmethod
    def from_x(
        cls,
        problem: AssignmentProblem,
        x: Bool,
        *,
        status: Status,
        bound: float,
        backend: str,
        largest: float | None = None,
        counts: ArrayLike | None = None,
        **kwargs: Any,
    ) -> Assignment:
        """A result for solution `x`, with objective, loads and scale recomputed from
        `problem` (`largest`: the largest ``|ū|`` of an allowed pair, when the backend
        has it already, see :func:`~flexmoe.assign.verify.objective_scale`; `counts`: the
        holders of each expert in `x`, when it keeps them)."""
        x = np.asarray(x, dtype=bool)
        x.setflags(write=False)
        objective, scale, loads = objective_scale_and_loads(
            problem, x, largest=largest, counts=counts
        )
        return cls(
            status=Status(status),
            x=x,
            objective=objective,
            bound=float(bound),
            backend=backend,
            loads=loads,
            scale=scale,
            **kwargs,
        )

    @classmethod
    def no_solution(
        cls, status: Status, backend: str, message: str, *, bound: float = math.nan, **kwargs: Any
    ) -> Assignment:
        """A result without an assignment (infeasible, limit, error)."""
        return cls(
            status=Status(status),
            x=None,
            objective=math.nan,
            bound=bound,
            backend=backend,
            message=message,
            **kwargs,
        )

    @property
    def gap(self) -> float:
        """Relative gap between `bound` and `objective` (see :func:`relative_gap`)."""
        scale = 0.0 if math.isnan(self.scale) else self.scale
        return relative_gap(self.objective, self.bound, scale)

    @property
    def has_solution(self) -> bool:
        return self.x is not None and self.status.has_solution

    def experts_of(self, client: int) -> list[int]:
        """The experts client `client` holds."""
        if self.x is None:
            raise ValueError(f"no assignment (status {self.status}): {self.message}")
        return [int(e) for e in np.flatnonzero(self.x[client])]

    def load_stats(self, problem: AssignmentProblem) -> dict[str, LoadStats]:
        """:func:`load_stats` of this assignment."""
        if self.x is None:
            raise ValueError(f"no assignment (status {self.status}): {self.message}")
        return load_stats(self.x, problem)

    def replace(self, **changes: Any) -> Assignment:
        return dataclasses.replace(self, **changes)

    # -- JSON ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (strict JSON: no NaN or infinity, those are written
        as strings, in `info` too); `x` is stored as each client's list of experts."""
        return {
            "status": str(self.status),
            "backend": self.backend,
            "objective": _json_float(self.objective),
            "bound": _json_float(self.bound),
            "gap": _json_float(self.gap),
            "scale": _json_float(self.scale),
            "message": self.message,
            "build_time": self.build_time,
            "solve_time": self.solve_time,
            "wall_time": self.wall_time,
            "info": _json_safe(self.info),
            "shape": None if self.x is None else list(self.x.shape),
            "experts": None if self.x is None else [np.flatnonzero(r).tolist() for r in self.x],
            "loads": None if self.loads is None else self.loads.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Assignment:
        x = None
        if data.get("experts") is not None:
            x = np.zeros(tuple(data["shape"]), dtype=bool)
            for n, experts in enumerate(data["experts"]):
                x[n, experts] = True
            x.setflags(write=False)
        loads = None if data.get("loads") is None else np.asarray(data["loads"], dtype=np.float64)
        return cls(
            status=Status(data["status"]),
            x=x,
            objective=_from_json_float(data["objective"]),
            bound=_from_json_float(data["bound"]),
            backend=data["backend"],
            loads=loads,
            message=data.get("message", ""),
            build_time=float(data.get("build_time", 0.0)),
            solve_time=float(data.get("solve_time", 0.0)),
            wall_time=float(data.get("wall_time", 0.0)),
            info=dict(data.get("info", {})),
            scale=_from_json_float(data.get("scale", math.nan)),
        )

    def save(self, path: str | Path) -> None:
        """Write this result as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))

    @classmethod
    def load(cls, path: str | Path) -> Assignment:
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        return (
            f"Assignment({self.status}, backend={self.backend!r}, objective={self.objective:.6g}, "
            f"bound={self.bound:.6g}, gap={self.gap:.2e}, wall={self.wall_time:.3g}s"
            + (f", message={self.message!r}" if self.message else "")
            + ")"
        )


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float (nested in dicts and lists) as a string."""
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _from_json_float(value: float | str) -> float:
    return float(value)
