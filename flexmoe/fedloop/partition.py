"""Seeded partitions of a labelled data set over clients: IID, Dirichlet(α) label skew,
k-class shards; per-client train / validation / test splits; a label-skew summary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ClientSplit",
    "LabelSkew",
    "PartitionSpec",
    "label_skew",
    "parse_partition",
    "partition",
    "split_clients",
]

Index = NDArray[np.int64]


@dataclass(frozen=True)
class PartitionSpec:
    """``iid``, ``dirichlet:<α>`` (α > 0) or ``shards:<k>`` (k classes per client).

    Examples
    --------
    >>> parse_partition("dirichlet:0.3")
    PartitionSpec(kind='dirichlet', value=0.3)
    >>> str(parse_partition("shards:2"))
    'shards:2'
    """

    kind: str
    value: float = 0.0

    def __str__(self) -> str:
        if self.kind == "iid":
            return "iid"
        return f"{self.kind}:{self.value:g}"


#: Other spellings of partition kinds (``kclass:<k>`` is ``shards:<k>``).
PARTITION_ALIASES = {"kclass": "shards"}


def parse_partition(text: str | PartitionSpec) -> PartitionSpec:
    """Parse ``iid``, ``dirichlet:<alpha>`` or ``shards:<k>`` (alias ``kclass:<k>``); a
    ValueError says what is valid. The one parser of partitions.

    Examples
    --------
    >>> str(parse_partition("kclass:2"))
    'shards:2'
    """
    if isinstance(text, PartitionSpec):
        return text
    kind, _, value = str(text).strip().lower().partition(":")
    kind = PARTITION_ALIASES.get(kind, kind)
    valid = (
        "valid: iid, dirichlet:<alpha> (alpha > 0), shards:<k> (k >= 1 classes per client; "
        "alias kclass:<k>)"
    )
    if kind == "iid" and not value:
        return PartitionSpec("iid")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"bad partition {text!r}; {valid}") from None
    if kind == "dirichlet" and math.isfinite(number) and number > 0:
        return PartitionSpec("dirichlet", number)
    if kind == "shards" and number >= 1 and number == int(number):
        return PartitionSpec("shards", float(int(number)))
    raise ValueError(f"bad partition {text!r}; {valid}")


def partition(
    labels: NDArray[np.int64],
    n_clients: int,
    spec: PartitionSpec | str,
    *,
    seed: int = 0,
    min_size: int = 10,
    max_tries: int = 1000,
) -> list[Index]:
    """Split sample indices over `n_clients` clients.

    Parameters
    ----------
    labels : ndarray of int, shape (n_samples,)
    n_clients : int
    spec : PartitionSpec or str
        ``iid``: a seeded shuffle cut into equal parts. ``dirichlet:α``: for every class,
        shares ``p ~ Dir(α·1)`` over clients (small α: strong label skew).
        ``shards:k``: samples sorted by label, cut into ``n_clients·k`` shards, k per client.
    seed : int
    min_size : int
        Every client gets at least this many samples; Dirichlet draws are repeated until
        it holds (a ValueError after `max_tries`).

    Returns
    -------
    list of ndarray of int
        Sorted, disjoint index arrays covering every sample.

    Examples
    --------
    >>> parts = partition(np.repeat(np.arange(4), 25), 5, "dirichlet:0.5", seed=0, min_size=5)
    >>> sum(len(p) for p in parts), min(len(p) for p in parts) >= 5
    (100, True)
    """
    spec = parse_partition(spec)
    labels = np.asarray(labels)
    if n_clients < 1:
        raise ValueError(f"`n_clients` must be >= 1; got {n_clients}")
    if n_clients * min_size > len(labels):
        raise ValueError(
            f"{len(labels)} samples cannot give {n_clients} clients at least "
            f"min_size = {min_size} samples each"
        )
    rng = np.random.default_rng(seed)
    if spec.kind == "iid":
        parts = np.array_split(rng.permutation(len(labels)), n_clients)
    elif spec.kind == "shards":
        parts = _shards(labels, n_clients, int(spec.value), rng)
    else:
        parts = _dirichlet(labels, n_clients, spec.value, rng, min_size, max_tries)
    return [np.sort(p).astype(np.int64) for p in parts]


def _dirichlet(
    labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator, min_size: int, tries: int
) -> list[np.ndarray]:
    classes = np.unique(labels)
    for _ in range(tries):
        parts: list[list[int]] = [[] for _ in range(n)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(n, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.asarray(p, dtype=np.int64) for p in parts]
    raise ValueError(
        f"dirichlet:{alpha:g} gave some client fewer than min_size = {min_size} samples in "
        f"{tries} draws; lower min_size, use fewer clients or a larger alpha"
    )


def _shards(labels: np.ndarray, n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n * k)
    deal = rng.permutation(n * k).reshape(n, k)
    return [np.concatenate([shards[s] for s in row]) for row in deal]


@dataclass(frozen=True)
class ClientSplit:
    """One client's sample indices into the data set, by role."""

    train: Index
    val: Index
    test: Index


def split_clients(
    parts: list[Index], *, val_fraction: float, test_fraction: float, seed: int
) -> list[ClientSplit]:
    """Cut each client's indices into train / validation / test (seeded, at least one
    training sample; rounding favours training)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            "`val_fraction` and `test_fraction` must be in [0, 1) with a sum < 1; "
            f"got {val_fraction}, {test_fraction}"
        )
    rng = np.random.default_rng(seed)
    splits = []
    for part in parts:
        shuffled = rng.permutation(part)
        n_test = math.floor(test_fraction * len(part))
        n_val = math.floor(val_fraction * len(part))
        test, val, train = np.split(shuffled, [n_test, n_test + n_val])
        splits.append(ClientSplit(np.sort(train), np.sort(val), np.sort(test)))
    return splits


@dataclass(frozen=True)
class LabelSkew:
    """How non-IID a partition is.

    Attributes
    ----------
    sizes : list of int
        Samples per client.
    classes_per_client : float
        Mean number of classes a client has at least one sample of.
    total_variation : float
        Mean total-variation distance between a client's label distribution and the
        global one (0 for IID, near 1 for one class each).
    entropy : float
        Mean normalised entropy of the clients' label distributions (1 = uniform).
    """

    sizes: list[int]
    classes_per_client: float
    total_variation: float
    entropy: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes,
            "classes_per_client": self.classes_per_client,
            "total_variation": self.total_variation,
            "entropy": self.entropy,
        }

    def __str__(self) -> str:
        return (
            f"sizes {min(self.sizes)}..{max(self.sizes)} (median {int(np.median(self.sizes))}), "
            f"{self.classes_per_client:.1f} classes/client, TV {self.total_variation:.2f}, "
            f"entropy {self.entropy:.2f}"
        )


def label_skew(labels: NDArray[np.int64], parts: list[Index], n_classes: int) -> LabelSkew:
    """Summarise the label skew of `parts`.

    Examples
    --------
    >>> labels = np.array([0, 0, 1, 1])
    >>> label_skew(labels, [np.array([0, 1]), np.array([2, 3])], 2).total_variation
    0.5
    """
    counts = np.stack([np.bincount(labels[p], minlength=n_classes) for p in parts])
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    overall = np.bincount(labels, minlength=n_classes) / max(len(labels), 1)
    tv = 0.5 * np.abs(share - overall).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(share > 0, np.log(np.where(share > 0, share, 1.0)), 0.0)
    entropy = -(share * logs).sum(axis=1) / math.log(n_classes) if n_classes > 1 else np.ones(1)
    return LabelSkew(
        sizes=[int(c) for c in counts.sum(axis=1)],
        classes_per_client=float((counts > 0).sum(axis=1).mean()),
        total_variation=float(tv.mean()),
        entropy=float(np.mean(entropy)),
    )
