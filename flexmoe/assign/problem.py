"""The expert-assignment problem as a frozen, validated value."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from flexmoe.assign import derived
from flexmoe.assign.errors import InvalidProblemError

__all__ = ["AssignmentProblem", "BalanceMetric", "BudgetRow"]


class BalanceMetric(StrEnum):
    """How the soft balance term measures the spread of expert loads."""

    VARIANCE = "variance"
    """``Σ_e (L_e − L̄)²`` with ``L̄`` the mean load (convex)."""
    RANGE = "range"
    """``max_e L_e − min_e L_e``."""


Float = NDArray[np.float64]
Int = NDArray[np.int64]
Bool = NDArray[np.bool_]

#: Budget rows built from the friendly keyword arguments: row name → (cost field, limit field).
FRIENDLY_ROWS: dict[str, tuple[str, str]] = {
    "storage": ("expert_size", "storage"),
    "compute": ("compute_cost", "compute_budget"),
}


@dataclass(frozen=True, eq=False)
class BudgetRow:
    r"""A named budget of every client: ``Σ_e cost[n, e]·x[n, e] <= limit[n]``.

    Storage (``expert_size`` in ``storage``) and compute (``compute_cost`` in
    ``compute_budget``) are two such rows; pass more to
    :class:`AssignmentProblem` as ``budgets=(BudgetRow(...), ...)``, e.g. the bytes a
    client may download per round. Arrays are converted once and made read-only; the
    problem checks their shapes against its own.

    Parameters
    ----------
    name : str
        Names the row in messages, results and files; unique within a problem
        (``storage`` and ``compute`` are the rows of the friendly keyword arguments).
    cost : array_like, shape (n_clients, n_experts) or (n_experts,)
        What holding each expert costs each client (or every client alike); finite, >= 0.
    limit : float or array_like, shape (n_clients,)
        Each client's budget; finite, >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem, BudgetRow
    >>> download = BudgetRow("download", cost=[3.0, 1.0, 1.0], limit=2.0)
    >>> p = AssignmentProblem(np.eye(3), max_experts=2, min_experts=1, budgets=(download,))
    >>> [row.name for row in p.budgets], p.budgets[0].limit.tolist()
    (['download'], [2.0, 2.0, 2.0])
    >>> try:
    ...     BudgetRow("download", cost=[-1.0, 1.0], limit=2.0)
    ... except ValueError as err:
    ...     print(err)
    `download.cost` must be >= 0; got -1 at index 0
    """

    name: str
    cost: Float
    limit: Float

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidProblemError(
                f"a budget row's `name` must be a non-empty string; got {self.name!r}"
            )
        cost = _owned(f"{self.name}.cost", self.cost, np.float64)
        if cost.ndim not in (1, 2):
            raise InvalidProblemError(
                f"`{self.name}.cost` must be 1-D (n_experts,) or 2-D (n_clients, n_experts); "
                f"got {cost.ndim}-D with shape {cost.shape}"
            )
        limit = _owned(f"{self.name}.limit", self.limit, np.float64)
        if limit.ndim > 1:
            raise InvalidProblemError(
                f"`{self.name}.limit` must be a number or 1-D (n_clients,); got shape {limit.shape}"
            )
        for label, array in ((f"{self.name}.cost", cost), (f"{self.name}.limit", limit)):
            _check_finite(label, array)
            _check_nonnegative(label, array)
        _set(self, "cost", cost)
        _set(self, "limit", limit)

    def at(self, clients: NDArray[np.integer], experts: NDArray[np.integer]) -> Float:
        """``cost[n, e]`` of the pairs ``(clients[i], experts[i])`` (a cost per expert is
        the same for every client)."""
        return self.cost[experts] if self.cost.ndim == 1 else self.cost[clients, experts]

    def used(self, x: ArrayLike) -> Float:
        """``Σ_e cost[n, e]·x[n, e]`` of every client."""
        return np.where(np.asarray(x, dtype=bool), self.cost, 0.0).sum(axis=1)

    def _fit(self, n_clients: int, n_experts: int) -> BudgetRow:
        """This row checked against a problem's shape, a scalar limit broadcast."""
        if self.cost.shape not in ((n_experts,), (n_clients, n_experts)):
            raise InvalidProblemError(
                f"`{self.name}.cost` must have shape (n_clients, n_experts) = "
                f"{(n_clients, n_experts)} or (n_experts,) = ({n_experts},); got {self.cost.shape}"
            )
        if self.limit.ndim == 0:
            return BudgetRow(self.name, self.cost, np.full(n_clients, float(self.limit)))
        _check_shape(f"{self.name}.limit", self.limit, (n_clients,), "(n_clients,)")
        return self


@dataclass(frozen=True, eq=False)
class AssignmentProblem:
    r"""Which experts each federated client holds and trains this round.

    Every array is converted once (at most one copy), made read-only and validated on
    construction; malformed data raises :class:`~flexmoe.assign.InvalidProblemError`
    naming the field, the rule and what was received. Scalars broadcast to per-client or
    per-expert vectors.

    Parameters
    ----------
    utility : array_like, shape (n_clients, n_experts)
        Client–expert fitness; higher is better. Any finite real (a cost is a negative
        utility).
    max_experts : int or array_like, shape (n_clients,)
        How many experts a client may hold.
    min_experts : int or array_like, shape (n_clients,), optional
        How many experts a client must hold (a gate's top-k needs at least k).
        Default: equal to `max_experts`, i.e. every client holds exactly that many.
    load_min, load_max : float or array_like, shape (n_experts,), optional
        Hard band on each expert's load. Defaults 0 and ``inf``. ``load_min >= 1``
        means every expert is trained.
    expert_size, storage : array_like, shapes (n_experts,), (n_clients,), optional
        Storage: ``Σ_e expert_size[e]·x[n, e] <= storage[n]``. Given together; they
        make the budget row named ``storage``.
    compute_cost, compute_budget : array_like, shapes (n_clients, n_experts), (n_clients,)
        Compute: ``Σ_e compute_cost[n, e]·x[n, e] <= compute_budget[n]``. Given
        together; they make the budget row named ``compute``.
    load_weight : array_like, shape (n_clients, n_experts), optional
        Load of expert e is ``Σ_n load_weight[n, e]·x[n, e]``; None counts holders.
    allowed : array_like of bool, shape (n_clients, n_experts), optional
        ``False`` forbids a pair (a client that cannot host an expert).
    balance_penalty : float
        λ ≥ 0, weight of the soft balance term.
    balance_metric : {"variance", "range"}
        ``variance``: ``Σ_e (L_e − L̄)²``; ``range``: ``max L − min L``.
    previous : array_like of bool, shape (n_clients, n_experts), optional
        Last round's assignment, for the churn term.
    switch_cost : float
        μ ≥ 0 paid per expert a client holds now but did not hold in `previous`.
    name : str
        A label carried into results and benchmark tables.
    budgets : sequence of BudgetRow, optional
        More budget rows ``Σ_e cost[n, e]·x[n, e] <= limit[n]`` (download bytes per
        round, energy, ...). After construction `budgets` holds every row: ``storage``
        and ``compute`` first (when given), then these; those two names are reserved
        for the friendly keyword arguments.

    Notes
    -----
    With ``x[n, e] ∈ {0, 1}`` and loads ``L_e = Σ_n w[n, e]·x[n, e]`` the problem is

    .. math::

        \max_x \; \sum_{n,e} u_{ne} x_{ne} - λ\,\mathrm{imbalance}(L)
              - μ \sum_{n,e} (1 - p_{ne}) x_{ne}

    subject to ``min_experts[n] <= Σ_e x[n, e] <= max_experts[n]``,
    ``load_min[e] <= L_e <= load_max[e]``, every budget row
    ``Σ_e cost[n, e]·x[n, e] <= limit[n]``, and ``x[n, e] = 0`` where not allowed.

    Quantities derived from the data (each client's most experts, each expert's reach,
    the holder band, the masked utility, ...) are computed once, on first use, with the
    one slack :data:`flexmoe.assign.derived.SLACK`; see the properties below.

    Examples
    --------
    >>> import numpy as np
    >>> from flexmoe.assign import AssignmentProblem
    >>> p = AssignmentProblem(np.eye(3), max_experts=1, load_min=1)
    >>> p.shape
    (3, 3)
    >>> from flexmoe.assign import InvalidProblemError
    >>> try:
    ...     AssignmentProblem(np.eye(3), max_experts=[1, 1])
    ... except InvalidProblemError as err:
    ...     print(err)
    `max_experts` must have shape (n_clients,) = (3,); got (2,)
    """

    utility: Float
    max_experts: Int
    min_experts: Int = None  # type: ignore[assignment]
    load_min: Float = None  # type: ignore[assignment]
    load_max: Float = None  # type: ignore[assignment]
    expert_size: Float | None = None
    storage: Float | None = None
    compute_cost: Float | None = None
    compute_budget: Float | None = None
    load_weight: Float | None = None
    allowed: Bool | None = None
    balance_penalty: float = 0.0
    balance_metric: BalanceMetric = BalanceMetric.VARIANCE
    previous: Bool | None = None
    switch_cost: float = 0.0
    name: str = field(default="", compare=False)
    budgets: tuple[BudgetRow, ...] = ()

    def __post_init__(self) -> None:
        utility = _matrix("utility", self.utility, None)
        n, e = utility.shape
        _set(self, "utility", utility)
        _set(self, "max_experts", _counts("max_experts", self.max_experts, n))
        mins = self.max_experts if self.min_experts is None else self.min_experts
        _set(self, "min_experts", _counts("min_experts", mins, n))
        load_min = 0.0 if self.load_min is None else self.load_min
        _set(self, "load_min", _vector("load_min", load_min, e))
        load_max = np.inf if self.load_max is None else self.load_max
        _set(self, "load_max", _vector("load_max", load_max, e, allow_inf=True))
        for name, length in (("expert_size", e), ("storage", n), ("compute_budget", n)):
            value = getattr(self, name)
            if value is not None:
                _set(self, name, _vector(name, value, length))
        for name in ("compute_cost", "load_weight"):
            value = getattr(self, name)
            if value is not None:
                _set(self, name, _matrix(name, value, (n, e), nonnegative=True))
        for name in ("allowed", "previous"):
            value = getattr(self, name)
            if value is not None:
                _set(self, name, _mask(name, value, (n, e)))
        _set(self, "balance_penalty", _scalar("balance_penalty", self.balance_penalty))
        _set(self, "switch_cost", _scalar("switch_cost", self.switch_cost))
        _set(self, "balance_metric", _metric(self.balance_metric))
        _validate_pairs(self)
        _validate_objective_range(self)
        _set(self, "budgets", _budget_rows(self))

    # -- shape and structure ---------------------------------------------------------

    @property
    def n_clients(self) -> int:
        return int(self.utility.shape[0])

    @property
    def n_experts(self) -> int:
        return int(self.utility.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_clients, self.n_experts)

    @property
    def has_storage(self) -> bool:
        return self.storage is not None

    @property
    def has_compute(self) -> bool:
        return self.compute_budget is not None

    @property
    def weighted_loads(self) -> bool:
        return self.load_weight is not None

    def budget(self, name: str) -> BudgetRow:
        """The budget row called `name`."""
        for row in self.budgets:
            if row.name == name:
                return row
        names = ", ".join(repr(r.name) for r in self.budgets) or "none"
        raise KeyError(f"no budget row {name!r}; the problem has: {names}")

    def allowed_mask(self) -> Bool:
        """The allowed mask, all ``True`` when none was given."""
        if self.allowed is None:
            return np.ones(self.shape, dtype=bool)
        return self.allowed

    def weights(self) -> Float:
        """Per-pair load weights, all ones for count loads."""
        if self.load_weight is None:
            return np.ones(self.shape)
        return self.load_weight

    def effective_utility(self) -> Float:
        """``utility`` minus the switch cost μ on pairs not held in `previous`.

        The linear part of the objective: ``Σ effective_utility · x``.
        """
        if self.previous is None or self.switch_cost == 0.0:
            return self.utility
        return self.utility - self.switch_cost * (~self.previous)

    # -- derived quantities (computed once, on first use) ----------------------------

    @cached_property
    def allowed_count(self) -> Int:
        """How many experts each client may hold by the mask, shape (n_clients,)."""
        return derived.allowed_count(self)

    @cached_property
    def count_caps(self) -> tuple[Int, ...]:
        """Per budget row, the most experts it lets each client hold where it is
        count-equivalent for that client (:func:`~flexmoe.assign.derived.count_caps`),
        ``n_experts`` elsewhere."""
        return derived.count_caps(self)

    @cached_property
    def count_equivalent_rows(self) -> tuple[bool, ...]:
        """Per budget row: it costs each client the same for all the client's allowed
        experts, so it only caps how many experts the client holds."""
        return derived.count_equivalent(self)

    @property
    def count_equivalent(self) -> bool:
        """Every budget row is count-equivalent (True without budget rows): with
        :attr:`most_experts` the rows say nothing more."""
        return all(self.count_equivalent_rows)

    @cached_property
    def most_experts(self) -> Int:
        """The most experts each client can hold: ``min(max_experts, allowed count,
        the caps of the budget rows uniform across its allowed experts)``."""
        return derived.most_experts(self)

    @cached_property
    def reach(self) -> Float:
        """Each expert's largest load: ``Σ_n w[n, e]`` over the clients allowed it."""
        return derived.reach(self)

    @cached_property
    def holder_band(self) -> tuple[Int, Int]:
        """Whole holder counts per expert (count loads): ``ceil(load_min)`` and
        ``min(floor(load_max), clients allowed it, Σ most_experts)``."""
        return derived.holder_band(self)

    @cached_property
    def load_range(self) -> tuple[Float, Float]:
        """Bounds ``lo <= hi`` on each expert's load in any feasible assignment."""
        return derived.load_range(self)

    @cached_property
    def total_range(self) -> tuple[float, float]:
        """Bounds ``lo <= hi`` on the total load ``Σ_e L_e`` of any feasible assignment."""
        return derived.total_range(self)

    @cached_property
    def fixed_total(self) -> int | None:
        """The total number of holders when every feasible assignment has the same one
        (count loads), else None."""
        return derived.fixed_total(self)

    @cached_property
    def masked_utility(self) -> Float:
        """``effective_utility()`` with ``-inf`` on pairs that are not allowed."""
        return derived.masked_utility(self)

    @cached_property
    def load_unit(self) -> float:
        """The typical load of one holder: the median positive load weight (1 for count
        loads)."""
        return derived.load_unit(self)

    @cached_property
    def objective_unit(self) -> float:
        """A power of two at or below the largest objective coefficient: the unit the
        ``milp`` and ``convex`` backends hand the objective to their solvers in
        (:func:`~flexmoe.assign.derived.objective_unit`)."""
        return derived.objective_unit(self)

    @cached_property
    def budget_share(self) -> Float:
        """Per pair, ``Σ_rows cost[n, e] / limit[n]``: the share of its budgets a pair
        takes (zeros without budget rows)."""
        return derived.budget_share(self)

    def replace(self, **changes: Any) -> AssignmentProblem:
        """A copy with some fields replaced (and validated again).

        Unchanged arrays are shared, not copied (they are read-only); `budgets` carries
        the rows passed as `budgets`, the ``storage`` and ``compute`` rows are rebuilt
        from their fields.
        """
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["budgets"] = tuple(r for r in self.budgets if r.name not in FRIENDLY_ROWS)
        values.update(changes)
        return AssignmentProblem(**values)

    def __repr__(self) -> str:
        extras = [
            *(f"budget {row.name}" if row.name not in FRIENDLY_ROWS else row.name
              for row in self.budgets),
            *(label for label, present in (
                ("weighted-loads", self.weighted_loads),
                ("allowed", self.allowed is not None),
                ("previous", self.previous is not None),
            ) if present),
        ]  # fmt: skip
        name = f"{self.name!r}, " if self.name else ""
        return (
            f"AssignmentProblem({name}{self.n_clients} clients × {self.n_experts} experts, "
            f"experts per client {int(self.min_experts.min())}..{int(self.max_experts.max())}, "
            f"λ={self.balance_penalty:g} ({self.balance_metric}), μ={self.switch_cost:g}"
            + (f", {', '.join(extras)}" if extras else "")
            + ")"
        )


# -- conversion and validation helpers ----------------------------------------------

#: Arrays this module made (read-only, referenced by nothing writable): validating one
#: again, as :meth:`AssignmentProblem.replace` does, shares it instead of copying.
_OWNED: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _as_array(name: str, value: ArrayLike) -> np.ndarray:
    """`value` as an array (no copy of an array), checked rectangular, numeric and real."""
    try:
        array = np.asarray(value)
    except ValueError:  # numpy: "setting an array element with a sequence"
        raise InvalidProblemError(
            f"`{name}` must be a rectangular array of numbers; got a ragged nested sequence"
            + _row_lengths(value)
        ) from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise InvalidProblemError(f"`{name}` must be numeric; got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise InvalidProblemError(f"`{name}` must be real; got dtype {array.dtype}")
    return array


def _row_lengths(value: Any) -> str:
    """`` (rows of lengths 2, 1)`` for a sequence of sequences of unequal lengths, else ""."""
    if not isinstance(value, Sequence) or not all(
        isinstance(row, Sequence | np.ndarray) and not isinstance(row, str) for row in value
    ):
        return ""
    lengths = [len(row) for row in value]
    return f" (rows of lengths {', '.join(map(str, lengths))})" if len(set(lengths)) > 1 else ""


def _owned(name: str, value: Any, dtype: type) -> np.ndarray:
    """`value` converted to `dtype` as a read-only array nobody else can write, with at
    most one copy: none for an array this module made, none when the conversion already
    made a new array, one otherwise."""
    if isinstance(value, np.ndarray) and _OWNED.get(id(value)) is value and value.dtype == dtype:
        return value
    array: np.ndarray = np.asarray(_as_array(name, value), dtype=dtype)
    fresh = isinstance(value, list | tuple | int | float | bool | np.generic) or (
        isinstance(value, np.ndarray) and not np.may_share_memory(array, value)
    )
    return _freeze(array if fresh else array.copy())


def _freeze(array: np.ndarray) -> np.ndarray:
    """Make a new array read-only and remember it as this module's."""
    array.setflags(write=False)
    _OWNED[id(array)] = array
    return array


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...], dims: str) -> None:
    if array.shape != shape:
        raise InvalidProblemError(f"`{name}` must have shape {dims} = {shape}; got {array.shape}")


def _first(mask: np.ndarray) -> int | tuple[int, ...]:
    """Index of the first ``True`` in `mask`: an int for vectors, a tuple otherwise."""
    where = tuple(int(i) for i in np.argwhere(mask)[0])
    return where[0] if len(where) == 1 else where


def _check_finite(name: str, array: np.ndarray, *, allow_inf: bool = False) -> None:
    bad = np.isnan(array) if allow_inf else ~np.isfinite(array)
    if bad.any():
        at = _first(bad)
        rule = "must not contain NaN" if allow_inf else "must be finite"
        raise InvalidProblemError(f"`{name}` {rule}; got {array[at]} at index {at}")


def _check_nonnegative(name: str, array: np.ndarray) -> None:
    if (array < 0).any():
        at = _first(array < 0)
        raise InvalidProblemError(f"`{name}` must be >= 0; got {array[at]:g} at index {at}")


def _matrix(
    name: str, value: ArrayLike, shape: tuple[int, int] | None, *, nonnegative: bool = False
) -> Float:
    array = _owned(name, value, np.float64)
    if shape is None:
        if array.ndim != 2:
            raise InvalidProblemError(
                f"`{name}` must be 2-D (n_clients, n_experts); got {array.ndim}-D "
                f"with shape {array.shape}"
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise InvalidProblemError(
                f"`{name}` must have at least one client and one expert; got shape {array.shape}"
            )
    else:
        _check_shape(name, array, shape, "(n_clients, n_experts)")
    _check_finite(name, array)
    if nonnegative:
        _check_nonnegative(name, array)
    return array


def _vector(name: str, value: ArrayLike, length: int, *, allow_inf: bool = False) -> Float:
    array = _owned(name, value, np.float64)
    if array.ndim == 0:
        array = _freeze(np.full(length, float(array)))
    dims = "(n_experts,)" if name in ("load_min", "load_max", "expert_size") else "(n_clients,)"
    _check_shape(name, array, (length,), dims)
    _check_finite(name, array, allow_inf=allow_inf)
    _check_nonnegative(name, array)
    return array


#: The largest count: counts are int64.
COUNT_MAX = int(np.iinfo(np.int64).max)


def _counts(name: str, value: ArrayLike, n_clients: int) -> Int:
    """Whole numbers >= 0 that fit int64, checked before the cast (which would wrap)."""
    array = _huge_integers(name, value)
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if array.ndim == 0:
        array = np.full(n_clients, array)
    _check_shape(name, array, (n_clients,), "(n_clients,)")
    _check_finite(name, array.astype(np.float64))
    if not np.array_equal(array, np.round(array)):
        at = _first(array != np.round(array))
        raise InvalidProblemError(f"`{name}` must be whole numbers; got {array[at]} at index {at}")
    _check_nonnegative(name, array)
    # 2.0**63 is the first float above the int64 range; uint64 compares exactly
    too_big = array.astype(np.float64) >= 2.0**63 if array.dtype.kind == "f" else array > COUNT_MAX
    if too_big.any():
        at = _first(too_big)
        raise InvalidProblemError(
            f"`{name}` must be at most 2**63 - 1 (int64); got {_number(array[at])} at index {at}"
        )
    return _freeze(array.astype(np.int64))


def _huge_integers(name: str, value: ArrayLike) -> np.ndarray:
    """`value` as a numeric array; Python integers beyond uint64 (an object array to
    numpy) are named as out of the int64 range rather than as non-numeric."""
    try:
        return _as_array(name, value)
    except InvalidProblemError:
        flat = np.asarray(value, dtype=object).ravel().tolist()
        big = [i for i, v in enumerate(flat) if isinstance(v, int) and v > COUNT_MAX]
        if big and all(isinstance(v, int) for v in flat):  # counts are 0-D or 1-D
            raise InvalidProblemError(
                f"`{name}` must be at most 2**63 - 1 (int64); got {flat[big[0]]} at index {big[0]}"
            ) from None
        raise


def _number(value: Any) -> str:
    """A value as a message shows it: whole numbers in full, floats with ``:g``."""
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)


def _mask(name: str, value: ArrayLike, shape: tuple[int, int]) -> Bool:
    array = _as_array(name, value)
    _check_shape(name, array, shape, "(n_clients, n_experts)")
    if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
        at = _first(~np.isin(array, (0, 1)))
        raise InvalidProblemError(f"`{name}` must be boolean (0/1); got {array[at]} at index {at}")
    if array.dtype == np.bool_:
        return _owned(name, value, np.bool_)
    return _freeze(array != 0)


def _scalar(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidProblemError(f"`{name}` must be a real number; got {value!r}") from None
    if not np.isfinite(number) or number < 0:
        raise InvalidProblemError(f"`{name}` must be finite and >= 0; got {number!r}")
    return number


def _metric(value: Any) -> BalanceMetric:
    try:
        return BalanceMetric(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in BalanceMetric)
        raise InvalidProblemError(
            f"`balance_metric` must be one of {valid}; got {value!r}"
        ) from None


def _validate_pairs(p: AssignmentProblem) -> None:
    """Rules that involve two fields."""
    _check_band("min_experts", p.min_experts, "max_experts", p.max_experts, "client")
    _check_band("load_min", p.load_min, "load_max", p.load_max, "expert")
    if np.isinf(p.load_min).any():
        raise InvalidProblemError("`load_min` must be finite; got inf")
    for a, b in FRIENDLY_ROWS.values():
        if (getattr(p, a) is None) != (getattr(p, b) is None):
            given, missing = (a, b) if getattr(p, a) is not None else (b, a)
            raise InvalidProblemError(f"`{given}` requires `{missing}`; got only `{given}`")
    if p.switch_cost > 0 and p.previous is None:
        raise InvalidProblemError(
            f"`switch_cost` requires `previous`; got switch_cost={p.switch_cost:g} "
            "and previous=None"
        )


def _validate_objective_range(p: AssignmentProblem) -> None:
    """Every objective value must be finite in float64: ``max |utility|·N·E + μ·N·E`` and
    ``λ·E·(largest load)²`` (variance) or ``λ·(largest load)`` (range) bound what any
    assignment can reach (utilities up to 1e300 on 10⁸ pairs stay well inside). No
    temporary the size of the data is made."""
    top = max(float(p.utility.max()), -float(p.utility.min()))
    load = float(p.n_clients)
    if p.load_weight is not None and p.balance_penalty:
        load = float(p.load_weight.sum(axis=0).max())
    with np.errstate(over="ignore"):
        terms = np.float64(top + p.switch_cost) * p.utility.size
        spread = p.n_experts * load * load if p.balance_metric is BalanceMetric.VARIANCE else load
        penalty = np.float64(p.balance_penalty) * spread
    if not np.isfinite(terms):
        raise InvalidProblemError(
            "`utility` is too large: objective values must be finite in float64, and "
            f"max |utility| · {p.utility.size} pairs overflows; got |utility| up to {top:g}"
        )
    if not np.isfinite(penalty + terms):
        raise InvalidProblemError(
            "`balance_penalty` is too large: objective values must be finite in float64, "
            f"and λ·imbalance can reach {penalty:g} (λ = {p.balance_penalty:g}, largest "
            f"load {load:g}) beside max |utility| · pairs = {terms:g}"
        )


def _check_band(lo_name: str, lo: np.ndarray, hi_name: str, hi: np.ndarray, what: str) -> None:
    bad = lo > hi
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidProblemError(
            f"`{lo_name}` must be <= `{hi_name}` for every {what}; "
            f"got {lo[i]:g} > {hi[i]:g} at {what} {i}"
        )


def _budget_rows(p: AssignmentProblem) -> tuple[BudgetRow, ...]:
    """The rows of the friendly fields, then the user's rows, each checked against the
    problem's shape; names unique."""
    given: Any = p.budgets
    if isinstance(given, BudgetRow) or not isinstance(given, Sequence) or isinstance(given, str):
        raise InvalidProblemError(
            f"`budgets` must be a sequence of BudgetRow; got {type(given).__name__}"
        )
    rows = []
    for name, (cost, limit) in FRIENDLY_ROWS.items():
        if getattr(p, limit) is not None:
            rows.append(BudgetRow(name, getattr(p, cost), getattr(p, limit)))
    seen = {row.name for row in rows}
    for row in given:
        if not isinstance(row, BudgetRow):
            raise InvalidProblemError(
                f"`budgets` must hold BudgetRow values; got {type(row).__name__}"
            )
        if row.name in FRIENDLY_ROWS:
            cost, limit = FRIENDLY_ROWS[row.name]
            raise InvalidProblemError(
                f"budget row name {row.name!r} is reserved: pass `{cost}` and `{limit}` instead"
            )
        if row.name in seen:
            raise InvalidProblemError(f"budget row names must be unique; got {row.name!r} twice")
        seen.add(row.name)
        rows.append(row._fit(p.n_clients, p.n_experts))
    return tuple(rows)
