"""Expert prices for the `flow` backend: settle them, contest the clients at the cut, certify.

With count loads the assignment problem's dual has one price ``p[e]`` per expert. Given
prices, each client's best choice is a top-k over its reduced values ``A = S − p`` (S: the
scaled integer utilities of :class:`Market`); only the clients whose choice the prices
leave open need the exact network. This module holds every step of that scheme that is
numpy rather than a min-cost flow solver:

1. :func:`rank`: each client's ``m`` best experts under prices, in one chunked pass over
   the matrix (the candidates), kept fresh by :func:`refresh`.
2. :func:`settle`: prices from the candidates by monotone best-response rounds (an
   ascending then a descending phase on the ``E`` prices), each expert's response read
   off its sorted holder (or entrant) slacks.
3. :func:`contested`: the clients whose choice the prices leave open.
4. :func:`potentials` and :func:`certify`: integer potentials of the whole network from a
   shortest path on the ``E + 1``-node expert graph, then a check of every pair's reduced
   cost (on the candidates, every other pair bounded by the ranking's exact outsider
   value; whole rows where that bound does not decide). Passing it proves the assignment
   optimal for the scaled costs.

Sign convention: node potentials ``π[e] = −p[e]`` for experts, ``π[o] = 0`` for the source
and sink (merged into ``o``: the return arc never binds), ``π[n] = t[n]`` for clients. A
residual arc ``a → b`` of cost ``c`` needs ``c + π[a] − π[b] >= 0``.

Candidate arrays are stored expert-slot by client, shape ``(m, N)``: the per-client
reductions over a few slots then run along contiguous rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Int = NDArray[np.int64]
Bool = NDArray[np.bool_]

#: :func:`settle` moves every expert its own way at once while the excess demand is at
#: most one holding in this many (prices that start close, as a warm start's do); from
#: farther, rises and falls overshoot each other (a cold start on clustered utilities fell
#: back to the dense flow), and it alternates.
CLOSE = 64

#: Matrix elements per chunk of a pass over the (N, E) matrix (a few passes over a chunk
#: stay in the cache).
CHUNK = 1 << 17


def chunks(n: int, width: int) -> list[slice]:
    """Row slices of about :data:`CHUNK` elements each."""
    step = max(1, CHUNK // max(width, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def widest(parts: list[slice]) -> int:
    """Rows of the largest of `parts` (a pass's :func:`chunks`): a buffer that many rows
    tall serves every chunk, so the pass allocates one instead of one a chunk."""
    return max((p.stop - p.start for p in parts), default=0)


def where2(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``np.nonzero`` of a 2-D mask, row-major (a flat search is several times faster)."""
    flat = np.flatnonzero(mask.ravel())
    return np.divmod(flat, mask.shape[1])


def pair_index(experts: NDArray[np.intp], n_experts: int) -> NDArray[np.intp]:
    """Flat index into an (N, E) matrix of candidate slots `experts` (shape (m, N), column
    n client n's): ``take``/``put`` on the flat matrix is several times faster than the
    2-D fancy index ``x[arange(N), experts]``.

    >>> pair_index(np.array([[1, 0], [2, 1]]), 3).tolist()
    [[1, 3], [2, 4]]
    """
    return experts + (np.arange(experts.shape[1]) * n_experts)[None, :]


def column_counts(x: Bool) -> Int:
    """``x.sum(axis=0)`` of a boolean (N, E) matrix as int64, summed as bytes (about twice
    as fast as the bool sum, which converts every element).

    >>> column_counts(np.array([[True, False], [True, True]])).tolist()
    [2, 1]
    """
    wide = np.int32 if x.shape[0] < 2**31 else np.int64
    return np.add.reduce(x.view(np.uint8), axis=0, dtype=wide).astype(np.int64)


# -- the problem in scaled integer units ---------------------------------------------------


@dataclass(frozen=True)
class Market:
    """A flow-structured problem with every cost an int64, and the bounds that keep every
    sum of this module inside int64.

    Attributes
    ----------
    value : ndarray of int64, shape (N, E)
        ``rint(ũ · 2**exponent)``; :attr:`excluded` on pairs that are not allowed.
    least, most : ndarray of int64, shape (N,)
        Experts per client: ``min_experts`` and ``max_experts`` capped by the allowed count.
    lo, hi : ndarray of int64, shape (E,)
        Whole holder band per expert.
    penalty : float
        λ of the variance penalty (0: none); the L-th holder of an expert costs
        ``rint(λ·(2L − 1) · 2**exponent)`` (:meth:`unit`).
    exponent : int
        Costs are utilities times ``2**exponent``.
    magnitude : int
        Largest |scaled utility| of an allowed pair or |unit cost|, at most :meth:`cap`.
    """

    value: Int
    least: Int
    most: Int
    lo: Int
    hi: Int
    penalty: float
    exponent: int
    magnitude: int
    bits: int = field(init=False)
    """Bits of an expert index (packed into sort keys)."""
    fixed: bool = field(init=False)
    """Every client holds the same number of experts, exactly."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", max(1, (self.n_experts - 1).bit_length()))
        same = self.n_clients > 0 and bool((self.least == self.most).all())
        same = same and bool((self.least == self.least[0]).all())
        object.__setattr__(self, "fixed", same)

    @property
    def n_clients(self) -> int:
        return int(self.value.shape[0])

    @property
    def n_experts(self) -> int:
        return int(self.value.shape[1])

    @staticmethod
    def cap(n_experts: int) -> int:
        """Largest magnitude for which prices, reduced values, slacks and packed sort keys
        all stay below ``2**62`` (prices are kept within :attr:`price_bound`)."""
        bits = max(1, (n_experts - 1).bit_length())
        return (1 << (62 - bits)) // (64 * (n_experts + 2))

    @staticmethod
    def excluded_for(n_experts: int, magnitude: int) -> int:
        return -16 * (n_experts + 2) * max(magnitude, 1)

    @property
    def price_bound(self) -> int:
        """Prices stay within ± this (the optimal potentials lie well inside)."""
        return 4 * (self.n_experts + 2) * max(self.magnitude, 1)

    @property
    def excluded(self) -> int:
        """Scaled value of a pair that is not allowed: below any reduced value."""
        return self.excluded_for(self.n_experts, self.magnitude)

    @property
    def none(self) -> int:
        """Reduced value standing for "no such expert": below every real one."""
        return self.excluded - self.price_bound

    @property
    def inf(self) -> int:
        """A cost no finite sum of this module reaches."""
        return 1 << (62 - self.bits)

    def unit(self, loads: Int) -> Int:
        """Scaled cost of the `loads`-th holder of an expert (λ·(2L − 1), rounded); loads
        are capped at ``max(hi) + 1``, which the magnitude covers."""
        if self.penalty == 0:
            return np.zeros(np.shape(loads), dtype=np.int64)
        capped = np.minimum(np.asarray(loads, dtype=np.float64), float(self.hi.max()) + 1)
        raw = self.penalty * (2.0 * capped - 1.0)
        return np.rint(np.ldexp(raw, self.exponent)).astype(np.int64)

    def marginal(self, experts: Int, loads: Int) -> Int:
        """Cost of expert `experts`' `loads`-th holder: −inf at or below its ``lo`` (those
        holders are forced), +inf above its ``hi``, else :meth:`unit`."""
        cost = self.unit(loads)
        cost = np.where(loads <= self.lo[experts], -self.inf, cost)
        return np.where(loads > self.hi[experts], self.inf, cost)

    def supplied(self, prices: Int, *, strict: bool) -> Int:
        """Per expert: the most holders whose marginal cost is at most (``strict``: below)
        its price, within ``[lo, hi]`` (the first ``lo`` cost −inf)."""
        lo, hi = self.lo, np.maximum(self.hi, self.lo)
        if self.penalty == 0:
            return np.where(prices > 0 if strict else prices >= 0, hi, lo)
        everyone = np.arange(self.n_experts)
        left, right = lo.copy(), hi.copy()  # the answer lies in [left, right]
        while (left < right).any():
            mid = (left + right + 1) // 2
            cost = self.marginal(everyone, mid)
            ok = (cost < prices) if strict else (cost <= prices)
            left = np.where(ok, mid, left)
            right = np.where(ok, right, mid - 1)
        return left

    def reduced(self, rows: slice | Int, prices: Int) -> Int:
        """``value[rows] − prices``: reduced values of the rows (a new array)."""
        return self.value[rows] - prices


# -- candidates: each client's best experts under prices -------------------------------------


@dataclass(frozen=True)
class Candidates:
    """Each client's ``m`` best experts at some prices, and a bound on what lies beyond.

    Attributes
    ----------
    experts : ndarray of intp, shape (m, N)
        Column n: client n's candidates (:func:`choose` reorders them, held ones first).
    value : ndarray of int64, shape (m, N)
        Their scaled utilities (not reduced).
    beyond : ndarray of int64, shape (N,)
        At least the reduced value, under `prices`, of every expert outside the candidates
        (:attr:`Market.none` when there is none).
    prices : ndarray of int64, shape (E,)
    """

    experts: NDArray[np.intp]
    value: Int
    beyond: Int
    prices: Int

    @property
    def width(self) -> int:
        return int(self.experts.shape[0])

    def moved(self, prices: Int) -> Candidates:
        """The same candidates with `beyond` bounded under new `prices`: an outsider's
        reduced value moves by minus its price change, so by at most the largest fall
        (negative when every price rose)."""
        fall = int((self.prices - prices).max())
        return Candidates(self.experts, self.value, self.beyond + fall, prices)


def rank(market: Market, prices: Int, width: int) -> Candidates:
    """Each client's `width` best experts by reduced value ``S − prices``: one chunked pass.

    The sort key packs ``−A`` and the expert index into one int64, so one partition and a
    sort of the first `width` columns rank a chunk (ties go to the lower expert).
    """
    n = market.n_clients
    width = min(width, market.n_experts)
    experts = np.empty((width, n), dtype=np.intp)
    value = np.empty((width, n), dtype=np.int64)
    beyond = np.empty(n, dtype=np.int64)
    parts = chunks(n, market.n_experts)
    work = np.empty((widest(parts), market.n_experts), dtype=np.int64)  # one a pass
    for rows in parts:
        best, best_value, beyond[rows] = _ranked(market, rows, prices, width, work)
        experts[:, rows] = best.T
        value[:, rows] = best_value.T
    return Candidates(experts, value, beyond, prices.copy())


def _ranked(
    market: Market, rows: slice | Int, prices: Int, width: int, work: Int | None = None
) -> tuple[Int, Int, Int]:
    """The `width` best experts of `rows` (shape (rows, width)), their scaled utilities and
    the best reduced value beyond them (`work`: a buffer of at least as many rows)."""
    bits = market.bits
    values = market.value[rows]
    key = np.left_shift(values, bits, out=None if work is None else work[: values.shape[0]])
    base = (prices << bits) | np.arange(market.n_experts, dtype=np.int64)
    np.subtract(base, key, out=key)  # (−A << bits) | e: the low bits of v << bits are 0
    if width < market.n_experts:
        key.partition(width, axis=1)
        beyond = -(key[:, width] >> bits)
        top = np.sort(key[:, :width], axis=1)
    else:
        beyond = np.full(key.shape[0], market.none, dtype=np.int64)
        top = np.sort(key, axis=1)
    best = top & ((1 << bits) - 1)
    return best, prices[best] - (top >> bits), beyond


def refresh(market: Market, cand: Candidates, choice: Choice) -> tuple[Candidates, Int]:
    """Rank again the clients an outsider may now beat (its bound above what a candidate
    must beat to enter): a rise can sink a client's candidates below what lay beyond them,
    a fall lift an outsider above them. The candidates under the new prices (their arrays
    rewritten in place, as :func:`choose` reorders them) and the clients ranked again."""
    cand = cand.moved(choice.prices)
    suspect = np.flatnonzero(cand.beyond > choice.enter)
    for part in chunks(suspect.size, market.n_experts):
        rows = suspect[part]
        best, best_value, cand.beyond[rows] = _ranked(market, rows, choice.prices, cand.width)
        cand.experts[:, rows] = best.T
        cand.value[:, rows] = best_value.T
    return cand, suspect


# -- each client's choice among its candidates -------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Each client's best choice among its candidates under `prices`.

    ``experts`` and ``reduced`` hold each client's candidates (column n), held ones first:
    the first ``count[n]``. ``keep`` is the reduced value a held expert must beat to stay
    (the best other candidate, or 0 when the client may drop it), ``enter`` the one a
    candidate must beat to come in (the worst held, or 0 when the client may add it);
    holder slacks ``A − keep >= 0`` and entrant slacks ``enter − A >= 0`` are how far each
    price can move before the choice changes.
    """

    prices: Int
    experts: NDArray[np.intp]
    """Candidate experts, held first, shape (m, N) (the candidates' own array)."""
    reduced: Int
    """Their reduced values, shape (m, N)."""
    held: Bool
    """Which slots are held, shape (m, N)."""
    count: Int
    keep: Int
    enter: Int
    worst: Int
    """Reduced value of the worst held candidate (``inf`` when none is held)."""
    other: Int
    """Reduced value of the best candidate not held (:attr:`Market.none` when none is)."""
    loads: Int
    """Holders of each expert."""


def choose(
    market: Market,
    cand: Candidates,
    prices: Int,
    only: Int | None = None,
    last: Choice | None = None,
) -> Choice:
    """Each client's best feasible count of its candidates under `prices`: its ``least``
    best, then more (up to ``most``) while their reduced value is positive.

    The candidates are reordered in place, held ones first. When every client holds
    exactly k, only the clients whose held k no longer beat the rest are sorted again
    (with `only`: the clients whose candidates changed since the last choice at these
    prices, all of them sorted again), and with `last`, the choice these candidates were
    last ordered by, its loads are updated for those clients instead of counted afresh
    (and its reduced values are overwritten: `last` is consumed).
    """
    m, n = cand.experts.shape
    buffer = last.reduced if last is not None and last.reduced.shape == (m, n) else None
    reduced = np.take(prices, cand.experts, out=buffer, mode="clip")
    np.subtract(cand.value, reduced, out=reduced)
    if market.fixed and m > int(market.least[0]):
        return _choose_k(market, cand, prices, reduced, only, last)
    _sort(market, cand, reduced, slice(None), prices)
    count = np.clip((reduced > 0).sum(axis=0), market.least, market.most)
    held = np.arange(m)[:, None] < count
    clients = np.arange(n)
    worst = np.where(count > 0, reduced[np.maximum(count - 1, 0), clients], market.inf)
    other = np.where(count < m, reduced[np.minimum(count, m - 1), clients], market.none)
    keep = np.where(count > market.least, np.maximum(other, 0), other)
    enter = np.where(count < market.most, np.minimum(worst, 0), worst)
    loads = np.bincount(cand.experts[held], minlength=market.n_experts).astype(np.int64)
    return Choice(prices, cand.experts, reduced, held, count, keep, enter, worst, other, loads)


def _choose_k(
    market: Market,
    cand: Candidates,
    prices: Int,
    reduced: Int,
    only: Int | None,
    last: Choice | None,
) -> Choice:
    """:func:`choose` when every client holds exactly k: the first k slots."""
    m, n = cand.experts.shape
    e = market.n_experts
    k = int(market.least[0])
    worst = reduced[:k].min(axis=0) if k else np.full(n, market.inf, dtype=np.int64)
    other = reduced[k:].max(axis=0)
    changed = np.flatnonzero(worst <= other)  # the held k may have changed (or a tie)
    if only is not None:
        changed = np.union1d(changed, only)
    redo: slice | Int = slice(None) if changed.size > n // 2 else changed
    if last is not None and not isinstance(redo, slice):  # loads less the sorted clients'
        loads = last.loads - np.bincount(cand.experts[:k, redo].ravel(), minlength=e)
    if changed.size:
        _sort(market, cand, reduced, redo, prices)
        worst[redo] = reduced[k - 1, redo] if k else market.inf
        other[redo] = reduced[k, redo]
    held = np.broadcast_to((np.arange(m) < k)[:, None], (m, n))
    if last is not None and not isinstance(redo, slice):
        loads += np.bincount(cand.experts[:k, redo].ravel(), minlength=e)
    else:
        loads = np.bincount(cand.experts[:k].ravel(), minlength=e).astype(np.int64)
    return Choice(
        prices, cand.experts, reduced, held, market.least, other, worst, worst, other, loads,
    )  # fmt: skip


def _sort(
    market: Market, cand: Candidates, reduced: Int, clients: slice | Int, prices: Int
) -> None:
    """Sort the candidates of `clients` best first, in place (their reduced values too);
    the key packs ``−A`` and the expert index (ties: the lower expert first)."""
    bits = market.bits
    key = np.ascontiguousarray(reduced[:, clients].T)  # one row per client: a contiguous sort
    np.negative(key, out=key)
    key <<= bits
    key |= cand.experts[:, clients].T
    key.sort(axis=1)
    experts = (key & ((1 << bits) - 1)).T
    values = -(key >> bits).T
    cand.experts[:, clients] = experts
    reduced[:, clients] = values
    cand.value[:, clients] = values + np.take(prices, experts)


def held_matrix(market: Market, choice: Choice) -> Bool:
    """``x`` of `choice`: each client holds its first ``count`` candidates."""
    x = np.zeros((market.n_clients, market.n_experts), dtype=bool)
    flat = pair_index(choice.experts, market.n_experts)
    if market.fixed:  # the held candidates are the first k slots
        x.ravel()[flat[: int(market.least[0])]] = True
    else:
        x.ravel()[flat[choice.held]] = True
    return x


def margins(market: Market, cand: Candidates, choice: Choice, x: Bool) -> Int:
    """Each client's margin: a lower bound on the reduced weight of every residual arc
    through it, exact where it is small.

    An arc through client n swaps a held expert for another (``A_held − A_other``), drops
    one (``A_held``, when above ``least``) or adds one (``−A_other``, below ``most``). Every
    expert outside the candidates has a reduced value of at most ``beyond``; where that
    bound decides a margin, the client's whole row (`x`) gives the exact margin instead.
    """
    cand = cand.moved(choice.prices)
    other = np.maximum(choice.other, cand.beyond)
    out = _margin(market, choice.count, choice.worst, other, slice(None))
    loose = np.flatnonzero(cand.beyond > choice.other)
    for part in chunks(loose.size, market.n_experts):
        out[loose[part]] = row_margins(market, x, choice.prices, loose[part])
    return out


def row_margins(market: Market, x: Bool, prices: Int, rows: Int) -> Int:
    """The exact margin of the clients `rows` under `prices`, from their whole rows."""
    reduced = market.reduced(rows, prices)
    held = x[rows]
    worst = np.where(held, reduced, market.inf).min(axis=1)
    other = np.where(held, market.none, reduced).max(axis=1)
    return _margin(market, held.sum(axis=1), worst, other, rows)


def _margin(market: Market, count: Int, worst: Int, other: Int, rows: slice | Int) -> Int:
    keep = np.where(count > market.least[rows], np.maximum(other, 0), other)
    enter = np.where(count < market.most[rows], np.minimum(worst, 0), worst)
    return np.minimum(worst - keep, enter - other)


# -- settling prices: monotone best responses -------------------------------------------------


@dataclass
class Settled:
    """Prices after :func:`settle`, the candidates they were settled on, and the rounds."""

    prices: Int
    cand: Candidates
    choice: Choice
    rounds: int = 0
    converged: bool = False
    refreshed: int = 0
    """Clients ranked again because an outsider may have become better."""


def settle(
    market: Market, cand: Candidates, prices: Int, *, max_rounds: int = 16, max_phases: int = 6
) -> Settled:
    """Best-response rounds on the expert prices, on the candidates.

    Each round every expert that wants to move in the current direction sets its price to
    its best response with the others fixed: where its demand (read off its sorted holder
    slacks when rising, entrant slacks when falling) meets its supply (its holder band, or
    the marginal cost λ(2L − 1) of its L-th holder). Clients substitute, so while only
    rises happen every expert's demand only grows and no rise overshoots (likewise for
    falls): an ascending phase, then a descending one, alternating until no expert moves.
    The fixed point meets every optimality condition except on ties at the cut, which
    :func:`contested` hands to the exact flow. After each round the clients an outsider
    may now beat are ranked again (:func:`refresh`).

    A phase also ends when its excess demand stops shrinking (by a quarter in two rounds):
    that tail is prices passing the last few holders around a ring of full experts, one
    hop a round, which the exact flow routes at once.

    Without a penalty, prices that start close (excess demand at most one holding in
    :data:`CLOSE`, as a warm start's) first move every expert its own way in the same
    round, while the excess shrinks: the rises and the falls that a warm start needs are
    mostly apart, and doing them together saves a phase of rounds.
    """
    out = Settled(prices, cand, choose(market, cand, prices))
    _level(market, out)
    if market.penalty == 0:  # (under a penalty, :func:`_level` re-fits between phases)
        _, fixed = _phase(market, out, 0, max_rounds)
        if fixed:  # no expert would move either way
            out.converged = True
            return out
    direction, still, checked = 1, 0, False
    for _ in range(max_phases):
        moved, fixed = _phase(market, out, direction, max_rounds)
        shifted = _level(market, out)
        still = 0 if moved else still + 1
        # no move either way: two still phases, or a still one after a phase whose last
        # round found no move at these same prices (a warm start's usual end)
        if still == 2 or (still == 1 and checked and not shifted):
            out.converged = True
            break
        checked = fixed and not shifted
        if out.rounds >= max_rounds:
            break
        direction = -direction
    return out


def _phase(market: Market, out: Settled, direction: int, max_rounds: int) -> tuple[bool, bool]:
    """Rounds in one direction (0: each expert in its own) until no expert moves or the
    excess stalls; whether any price moved, and whether the phase ended on a round where
    none would."""
    history: list[int] = []
    while out.rounds < max_rounds:
        if direction:
            step, excess = _responses(market, out.choice, direction)
        else:  # an expert that would rise would not fall (its demand exceeds its supply)
            up, down = _demand(market, out.choice, 1), _demand(market, out.choice, -1)
            excess = _excess(up) + _excess(down)
            if excess * CLOSE > int(market.least.sum()):  # far from settled: one way
                return bool(history), False
            step = np.where(
                up[0], _responses(market, out.choice, 1, up)[0],
                _responses(market, out.choice, -1, down)[0],
            )  # fmt: skip
        out.rounds += 1
        if (step == out.prices).all():
            return bool(history), True
        out.prices = step
        out.choice = choose(market, out.cand, step, last=out.choice)
        out.cand, again = refresh(market, out.cand, out.choice)
        if again.size:  # ranked best first already: choosing again sorts only ties
            out.refreshed += int(again.size)
            out.choice = choose(market, out.cand, step)
        history.append(excess)
        if len(history) > 2 and 4 * history[-1] > 3 * history[-3]:
            break
    return bool(history), False


def _level(market: Market, out: Settled) -> bool:
    """Under a variance penalty with every client holding exactly k, shift all prices by
    the constant that best fits the supply interval ``[cost(L), cost(L + 1)]`` of each
    expert inside its band (the median of their ends): the shift changes no client's
    choice, and without it the best responses would drift the common level one small
    step a round. Whether the prices moved."""
    if market.penalty == 0 or not market.fixed:
        return False
    loads = out.choice.loads
    inside = np.flatnonzero((loads > market.lo) & (loads < market.hi))
    if inside.size == 0:
        return False
    ends = np.concatenate([market.unit(loads[inside]), market.unit(loads[inside] + 1)]) - np.tile(
        out.prices[inside], 2
    )
    shift = int(np.sort(ends)[inside.size - 1])
    shift = int(
        np.clip(
            shift, -market.price_bound - out.prices.min(), market.price_bound - out.prices.max()
        )
    )
    if shift:  # every reduced value falls by the shift; no choice changes
        c = out.choice
        out.prices = out.prices + shift
        out.cand = out.cand.moved(out.prices)
        out.choice = Choice(
            out.prices, c.experts, c.reduced - shift, c.held, c.count, c.keep - shift,
            c.enter - shift, c.worst - shift, c.other - shift, c.loads,
        )  # fmt: skip
    return bool(shift)


def _demand(market: Market, choice: Choice, direction: int) -> tuple[Bool, Int]:
    """Which experts would move in `direction` (+1: demand above supply at their price,
    −1: below), and how far from their supply each one's demand is (holders to shed, or
    entrants to gain; negative where it has room)."""
    everyone = np.arange(market.n_experts)
    prices, held_loads = choice.prices, choice.loads
    if direction > 0:  # below the marginal cost of its load: shed what its price does not
        active = market.marginal(everyone, held_loads) > prices  # supply
        room = held_loads - market.supplied(prices, strict=False)
    else:
        active = market.marginal(everyone, held_loads + 1) < prices
        room = market.supplied(prices, strict=True) - held_loads
    return active, room


def _excess(demand: tuple[Bool, Int]) -> int:
    """The excess demand of :func:`_demand`'s moving experts."""
    active, room = demand
    return int(np.maximum(room[active], 0).sum())


def _responses(
    market: Market, choice: Choice, direction: int, demand: tuple[Bool, Int] | None = None
) -> tuple[Int, int]:
    """Every expert's best response in `direction` (+1 rises only, −1 falls only), and the
    excess demand in that direction (holders to shed, or entrants to gain); `demand`:
    :func:`_demand`'s answer, when the caller has it."""
    everyone = np.arange(market.n_experts)
    prices, held_loads = choice.prices, choice.loads
    active, room = _demand(market, choice, direction) if demand is None else demand
    out = prices.copy()
    if not active.any():
        return out, 0
    if market.penalty == 0:
        experts, slack = _slacks(market, choice, active, direction, None)
    else:  # only slacks below the gap between price and cost can bind (see _meet)
        gap = np.where(
            direction > 0,
            market.marginal(everyone, held_loads) - prices,
            prices - market.marginal(everyone, held_loads + 1),
        )
        experts, slack = _slacks(market, choice, active, direction, gap)
    chosen = np.flatnonzero(active)
    room = np.maximum(room[chosen], 0)
    if market.penalty == 0:
        out[chosen] = _band(market, choice, chosen, experts, slack, direction)
        return np.clip(out, -market.price_bound, market.price_bound), int(room.sum())
    least = _smallest(experts, slack, chosen, room, market.n_experts)
    steps = np.arange(least.shape[1] + 1)
    if direction > 0:  # cost of the (L − j)-th holder: shedding j
        cost = market.marginal(chosen[:, None], held_loads[chosen][:, None] - steps)
        out[chosen] = _meet(prices[chosen], least, cost, room)
    else:  # gaining j, the (L + j + 1)-th costs: mirrored into a rise
        cost = market.marginal(chosen[:, None], held_loads[chosen][:, None] + steps + 1)
        out[chosen] = -_meet(-prices[chosen], least, -cost, room)
    return np.clip(out, -market.price_bound, market.price_bound), int(room.sum())


def _band(
    market: Market, choice: Choice, chosen: Int, experts: Int, slack: Int, direction: int
) -> Int:
    """:func:`_responses` without a penalty, where supply is the band alone: shedding
    (rising; mirrored when falling) at least ``j0`` holders to reach the band's near end,
    then those whose slack is below ``−p`` (the price goes to 0), at most ``jmax`` (to the
    far end); the price is the j-th least slack above the price, or 0 when that is higher
    and the band's far end is not reached."""
    loads = choice.loads[chosen]
    sign = 1 if direction > 0 else -1
    price = sign * choice.prices[chosen]
    near, far = (market.hi, market.lo) if direction > 0 else (market.lo, market.hi)
    j0 = np.maximum(sign * (loads - near[chosen]), 0)
    jmax = np.maximum(sign * (loads - far[chosen]), j0)
    row_of = np.full(market.n_experts, -1, dtype=np.int64)
    row_of[chosen] = np.arange(chosen.size)
    rows = row_of[experts]
    sizes = np.bincount(rows, minlength=chosen.size)
    below = np.bincount(rows[slack < -price[rows]], minlength=chosen.size)
    j = np.minimum(np.minimum(np.maximum(j0, below), jmax), sizes)
    grouped = slack[_grouping(rows, chosen.size)]
    starts = np.cumsum(sizes) - sizes
    shed = price.copy()
    for r in np.flatnonzero(j > 0):
        part = grouped[starts[r] : starts[r] + sizes[r]]  # a view of a new array
        part.partition(j[r] - 1)
        step = int(part[j[r] - 1])
        if j[r] < sizes[r]:  # halfway to the next slack: no tie on either side of the cut
            step += (int(part[j[r] :].min()) - step) // 2
            if j[r] > j0[r]:  # shedding more than the band needs: the price stops at 0
                step = min(step, -int(price[r]))
        shed[r] = price[r] + step
    floor = np.where(j < jmax, 0, -market.inf)  # the far end reached: no floor at 0
    return sign * np.maximum(np.maximum(price, shed), floor)


def _grouping(groups: Int, count: int) -> NDArray[np.intp]:
    """A stable order by group id (a radix sort when the ids fit 16 bits)."""
    small = np.int16 if count <= np.iinfo(np.int16).max else np.int32
    return np.argsort(groups.astype(small), kind="stable")


def _slacks(
    market: Market, choice: Choice, active: Bool, direction: int, cap: Int | None
) -> tuple[Int, Int]:
    """Expert and slack of every holder (rising) or open candidate (falling) of an
    active expert (with `cap`: only the slacks at most its expert's cap)."""
    block = slice(None)
    if market.fixed:  # the held candidates are the first k slots
        k = int(market.least[0])
        block = slice(0, k) if direction > 0 else slice(k, None)
    experts, values = choice.experts[block], choice.reduced[block]
    mask = np.take(active, experts)
    if not market.fixed:
        mask &= choice.held[block] if direction > 0 else ~choice.held[block]
    if cap is not None:  # the cap keeps few of the active slots: test it on the whole block
        slack_all = values - choice.keep if direction > 0 else choice.enter - values
        if direction < 0:
            mask &= values > market.excluded // 2
        mask &= slack_all <= np.take(cap, experts)
        at = np.flatnonzero(mask)
        return experts.ravel()[at], slack_all.ravel()[at]
    at = np.flatnonzero(mask)  # the slots of active experts (few, late in settling)
    expert, value = experts.ravel()[at], values.ravel()[at]
    clients = at % experts.shape[1]
    if direction > 0:
        return expert, value - choice.keep[clients]
    kept = value > market.excluded // 2
    return expert[kept], (choice.enter[clients] - value)[kept]


def _meet(prices: Int, slack: Int, cost: Int, room: Int) -> Int:
    """Where each expert's demand meets its supply, rising: shedding the j holders of least
    slack (rows of `slack`, ascending) at ``max(p + h_(j), cost_j)``, j the least with
    ``p + h_(j+1) >= cost_j`` (true at ``j = room`` by the choice of the room)."""
    width = slack.shape[1]
    cond = np.ones((prices.size, width + 1), dtype=bool)
    cond[:, :width] = (prices[:, None] + slack >= cost[:, :width]) | (
        np.arange(width) >= room[:, None]
    )
    at = cond.argmax(axis=1)
    rows = np.arange(prices.size)
    below = slack[rows, np.maximum(at - 1, 0)] if width else np.zeros(prices.size, np.int64)
    shed = np.where(at >= 1, prices + below, prices)
    return np.maximum(np.maximum(prices, shed), cost[rows, at])


def _smallest(experts: Int, values: Int, chosen: Int, counts: Int, n_experts: int) -> Int:
    """Per expert of `chosen`, its `counts` smallest `values` ascending, one row each
    (padded with a huge value), grouping by a stable radix sort of the expert ids."""
    row_of = np.full(n_experts, -1, dtype=np.int64)
    row_of[chosen] = np.arange(chosen.size)
    rows = row_of[experts]
    order = _grouping(rows, chosen.size)
    rows, values = rows[order], values[order]
    sizes = np.bincount(rows, minlength=chosen.size)
    width = int(min(sizes.max(initial=0), counts.max(initial=0)))
    pad = np.iinfo(np.int64).max // 4
    out = np.full((chosen.size, width), pad, dtype=np.int64)
    if width == 0:
        return out
    starts = np.cumsum(sizes) - sizes
    longest = int(sizes.max())
    if chosen.size * longest <= 4 * values.size + 4096:  # one padded matrix
        grid = np.full((chosen.size, longest), pad, dtype=np.int64)
        grid[rows, np.arange(rows.size) - starts[rows]] = values
        if width < longest:
            grid.partition(width - 1, axis=1)
        out[:] = np.sort(grid[:, :width], axis=1)
        return out
    for r in range(chosen.size):  # lopsided groups: one selection each
        part = values[starts[r] : starts[r] + sizes[r]]
        take = min(int(counts[r]), part.size)
        if take:
            out[r, :take] = np.sort(np.partition(part, take - 1)[:take])
    return out


# -- which clients the exact flow decides -------------------------------------------------------


def contested(market: Market, settled: Settled, margin: Int) -> Bool:
    """Clients whose choice the prices leave open: a tie at the cut (margin 0), or a client
    that the next best response of some expert would move (only when settling stopped
    before its fixed point)."""
    out = margin <= 0
    if settled.converged:
        return out
    choice = settled.choice
    for direction in (1, -1):
        step = np.take(_responses(market, choice, direction)[0] - choice.prices, choice.experts)
        if direction > 0:
            slack = choice.reduced - choice.keep
            moving = choice.held & (step > 0) & (slack <= step)
        else:
            slack = choice.enter - choice.reduced
            moving = ~choice.held & (step < 0) & (slack <= -step)
        out |= moving.any(axis=0)
    return out


def helpers(market: Market, choice: Choice, excess: Int, short: Int) -> Bool:
    """Clients that can fix a band the fixed clients break: for each expert with `excess`
    fixed holders, twice as many of its holders of least slack (plus 8); for each expert
    `short` of its band, as many of its entrants of least slack."""
    out = np.zeros(market.n_clients, dtype=bool)
    for mask, slack, need in (
        (choice.held, choice.reduced - choice.keep, excess),
        (~choice.held, choice.enter - choice.reduced, short),
    ):
        for e in np.flatnonzero(need > 0):
            slots, clients = where2(mask & (choice.experts == e))
            take = min(clients.size, 2 * int(need[e]) + 8)
            if take:
                least = np.argpartition(slack[slots, clients], take - 1)[:take]
                out[clients[least]] = True
    return out


# -- potentials: a shortest path on the expert graph ---------------------------------------------


def potentials(
    market: Market,
    x: Bool,
    prices: Int,
    included: Bool,
    margin: Int,
    limit: int | None = None,
    *,
    loads: Int | None = None,
) -> tuple[Int | None, Bool]:
    """Prices under which `x` may be optimal, from the residual arcs of some clients.

    The expert graph has the experts and ``o`` (source and sink) as nodes; an arc ``a → b``
    weighs the least reduced cost (under `prices`) of any residual path ``a → n → b``
    through a client n of `included`, or of the expert's own arc to the sink. Bellman–Ford
    from a virtual root gives distances ``d``; an arc left out joins two experts (or an
    expert and ``o``) and has a reduced weight of at least its client's `margin`, so when
    the spread ``D`` of ``d`` over those nodes is at most the smallest such margin the
    shifted prices satisfy every arc. Otherwise the clients with a margin below ``D`` join
    and the search repeats (giving up past `limit` clients). `loads`: the holders of each
    expert in `x`, when the caller keeps them.

    Returns
    -------
    prices, included : (ndarray or None, ndarray of bool)
        The new prices (``None``: a negative cycle through the included clients, so `x` is
        not optimal, or too many clients to include) and the clients whose arcs were used.
    """
    e = market.n_experts
    weights = np.full((e + 1, e + 1), market.inf, dtype=np.int64)
    _expert_arcs(market, column_counts(x) if loads is None else loads, prices, weights)
    added = included.copy()
    included = np.zeros_like(included)
    while True:
        _client_arcs(market, x, prices, np.flatnonzero(added), weights)
        included |= added
        dist = _bellman_ford(weights)
        if dist is None:
            return None, included
        # an arc left out joins two experts (or an expert and o, for clients whose count
        # may change): the spread of the distances over those nodes bounds its change
        nodes = dist[:e] if market.fixed else dist
        depth = int(nodes.max() - nodes.min())
        added = ~included & (margin < depth)
        if not added.any():
            shifted = prices - dist[:e] + dist[e]
            if np.abs(shifted).max(initial=0) > market.price_bound:
                return None, included
            return shifted, included
        if limit is not None and int((included | added).sum()) > limit:
            return None, included | added


def _expert_arcs(market: Market, held_loads: Int, prices: Int, weights: Int) -> None:
    """Arcs between each expert and ``o``: one more holder (below ``hi``) costs the next unit,
    one fewer (above ``lo``) saves the last."""
    e = market.n_experts
    more = held_loads < market.hi
    fewer = held_loads > market.lo
    everyone = np.arange(e)
    weights[everyone[more], e] = market.unit(held_loads[more] + 1) - prices[more]
    weights[e, everyone[fewer]] = prices[fewer] - market.unit(held_loads[fewer])


def _client_arcs(market: Market, x: Bool, prices: Int, clients: Int, weights: Int) -> None:
    """Fold the residual paths through `clients` into `weights` (minimum per node pair)."""
    e = market.n_experts
    for part in chunks(clients.size, e * max(int(market.most.max(initial=1)), 1)):
        rows = clients[part]
        reduced = market.reduced(rows, prices)
        held = x[rows]
        allowed = market.value[rows] > market.excluded
        open_ = np.where(~held & allowed, reduced, -market.inf)
        count = held.sum(axis=1)
        adding = count < market.most[rows]  # o -> e' at −A (clients below `most`)
        if adding.any():
            weights[e, :e] = np.minimum(weights[e, :e], (-open_[adding]).min(axis=0))
        r, c = where2(held)  # e -> e' at A_e − A_e', e -> o at A_e (above `least`)
        if r.size == 0:
            continue
        order = np.argsort(c, kind="stable")
        r, c = r[order], c[order]
        swap = reduced[r, c][:, None] - open_[r]
        starts = np.flatnonzero(np.diff(c, prepend=-1))
        experts = c[starts]
        weights[experts, :e] = np.minimum(weights[experts, :e], np.minimum.reduceat(swap, starts))
        dropping = count[r] > market.least[rows][r]
        if dropping.any():
            drop = np.full(e, market.inf, dtype=np.int64)
            np.minimum.at(drop, c[dropping], reduced[r[dropping], c[dropping]])
            weights[:e, e] = np.minimum(weights[:e, e], drop)


def _bellman_ford(weights: Int) -> Int | None:
    """Distances from a virtual root joined to every node at cost 0 (None: negative cycle)."""
    nodes = weights.shape[0]
    dist = np.zeros(nodes, dtype=np.int64)
    for _ in range(nodes + 1):
        relaxed = np.minimum(dist, (dist[:, None] + weights).min(axis=0))
        if (relaxed == dist).all():
            return dist
        dist = relaxed
    return None


# -- the certificate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What :func:`certify` found: the clients and experts whose arcs break the prices."""

    clients: Int
    experts: Int

    @property
    def ok(self) -> bool:
        return self.clients.size == 0 and self.experts.size == 0


def certify(
    market: Market,
    x: Bool,
    prices: Int,
    cand: Candidates | None = None,
    *,
    loads: Int | None = None,
    count: Int | None = None,
) -> Verdict:
    """Check that `prices` prove `x` optimal: every residual arc of the whole network has a
    nonnegative reduced cost, in exact integer arithmetic.

    A client n needs a threshold ``t[n]`` with every held reduced value ``>= t[n]``, every
    other allowed one ``<= t[n]``, ``t[n] <= 0`` if it may hold more and ``t[n] >= 0`` if it
    may hold fewer; an expert with L holders needs ``p[e] <= unit(L + 1)`` below ``hi`` and
    ``p[e] >= unit(L)`` above ``lo``. Without `cand` every row is checked (one chunked
    pass). With `cand`, a client holding only candidates is checked on its candidates, and
    on every other expert through ``beyond``, a bound on their reduced values that the
    ranking computed exactly and price falls can only have raised; the clients that bound
    does not clear are checked row by row. `loads` and `count`: the holders of each expert
    and the experts of each client in `x`, when the caller keeps them.
    """
    if cand is None:
        bad = _rows_fail(market, x, prices)
    else:
        bad = np.zeros(market.n_clients, dtype=bool)
        count = x.sum(axis=1) if count is None else count
        unclear = np.flatnonzero(~_candidates_clear(market, x, prices, cand, count))
        for part in chunks(unclear.size, market.n_experts):
            rows = unclear[part]
            bad[rows] = _exact(market, x[rows], market.reduced(rows, prices), rows)
    held_loads = column_counts(x) if loads is None else loads
    more = (held_loads < market.hi) & (prices > market.unit(held_loads + 1))
    fewer = (held_loads > market.lo) & (prices < market.unit(held_loads))
    return Verdict(np.flatnonzero(bad), np.flatnonzero(more | fewer))


def _candidates_clear(market: Market, x: Bool, prices: Int, cand: Candidates, count: Int) -> Bool:
    """Clients whose threshold interval is provably nonempty from their candidates and the
    `beyond` bound alone (every holding a candidate; `count` of them held per client)."""
    cand = cand.moved(prices)
    inside = np.take(x, pair_index(cand.experts, market.n_experts))  # (m, N): held ones
    reduced = cand.value - np.take(prices, cand.experts)
    upper = np.where(inside, reduced, market.inf).min(axis=0)
    lower = np.maximum(np.where(inside, market.none, reduced).max(axis=0), cand.beyond)
    return (inside.sum(axis=0) == count) & _interval_ok(market, count, upper, lower, slice(None))


def _interval_ok(market: Market, count: Int, upper: Int, lower: Int, rows: slice | Int) -> Bool:
    upper = np.where(count < market.most[rows], np.minimum(upper, 0), upper)
    lower = np.where(count > market.least[rows], np.maximum(lower, 0), lower)
    return lower <= upper


def _exact(market: Market, held: Bool, reduced: Int, rows: slice | Int) -> Bool:
    """Which rows (held mask and reduced values of their whole rows) fail."""
    upper = np.where(held, reduced, market.inf).min(axis=1)
    lower = np.where(held, market.none, reduced).max(axis=1)
    return ~_interval_ok(market, held.sum(axis=1), upper, lower, rows)


def _rows_fail(market: Market, x: Bool, prices: Int) -> Bool:
    """:func:`certify` on every row: one chunked pass."""
    n, e = market.n_clients, market.n_experts
    bad = np.zeros(n, dtype=bool)
    held_rows, held_cols = where2(x)
    count = np.bincount(held_rows, minlength=n)
    ends = np.cumsum(count)
    for rows in chunks(n, e):
        first = int(ends[rows.start - 1]) if rows.start else 0
        last = int(ends[rows.stop - 1])
        r, c = held_rows[first:last] - rows.start, held_cols[first:last]
        reduced = market.reduced(rows, prices)
        upper = np.full(rows.stop - rows.start, market.inf, dtype=np.int64)
        some = count[rows] > 0
        if r.size:
            upper[some] = np.minimum.reduceat(
                reduced[r, c], (ends[rows] - count[rows] - first)[some]
            )
        reduced[r, c] = market.none
        lower = reduced.max(axis=1)
        bad[rows] = ~_interval_ok(market, count[rows], upper, lower, rows)
    return bad
