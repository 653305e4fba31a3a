"""Data sets by name: offline ones (scikit-learn's bundled digits, a procedural MNIST-1D,
synthetic clustered data), the file loaders of :mod:`flexmoe.fedloop.loaders`
(CIFAR-10, MNIST/EMNIST, GTSRB), and any added with :func:`register_dataset`."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from flexmoe.fedloop.registry import Registry

__all__ = [
    "DATASETS",
    "DataRequest",
    "Dataset",
    "DatasetLoader",
    "default_lr",
    "load_dataset",
    "load_digits",
    "make_clustered",
    "make_mnist1d",
    "register_dataset",
]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features and labels of one data set, with the model preset that suits it.

    Attributes
    ----------
    name : str
    x : ndarray of float32, shape (n_samples, *in_shape)
    y : ndarray of int64, shape (n_samples,)
    n_classes : int
    preset : str
        The :func:`~flexmoe.models.build_model` preset for this input shape.
    """

    name: str
    x: NDArray[np.float32]
    y: NDArray[np.int64]
    n_classes: int
    preset: str

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"`x` has {len(self.x)} samples but `y` has {len(self.y)}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes}); got {self.y.min()}..")

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, size: int | None, seed: int) -> Dataset:
        """A seeded random subset of `size` samples (all of them if None or larger)."""
        if size is None or size >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size, replace=False))
        return Dataset(self.name, self.x[keep], self.y[keep], self.n_classes, self.preset)


def load_digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 samples, 64 features scaled to [0, 1]).

    Examples
    --------
    >>> data = load_digits()
    >>> len(data), data.in_shape, data.n_classes
    (1797, (64,), 10)
    """
    if importlib.util.find_spec("sklearn") is None:
        raise ImportError(
            "the `digits` data set needs scikit-learn: `pip install scikit-learn` "
            "(or pick --dataset mnist1d / clustered, which need nothing)"
        )
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    return Dataset("digits", x, bunch.target.astype(np.int64), 10, "mlp")


# Ten hand-drawn 12-point templates, one per class (values are heights).
_TEMPLATES = np.array(
    [
        [0, 2, 4, 5, 5.5, 5.8, 5.8, 5.5, 5, 4, 2, 0],  # 0: hill
        [0, 0, 0, 0, 1, 6, 6, 1, 0, 0, 0, 0],  # 1: spike
        [0, 1, 2, 3, 4, 5, 6, 6, 0, 0, 0, 0],  # 2: ramp then drop
        [0, 4, 5, 4, 0, 0, 0, 4, 5, 4, 0, 0],  # 3: two bumps
        [0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 5, 5],  # 4: step up
        [5, 5, 5, 2, 0, 0, 0, 2, 5, 5, 5, 5],  # 5: dip then plateau
        [6, 5.5, 5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 1, 0],  # 6: falling ramp
        [0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 2, 0],  # 7: rising with plateau
        [0, 4, 0, -2, 0, 4, 0, -2, 0, 4, 0, 0],  # 8: oscillation
        [3, 1, -1, -3, -4, -4.5, -4.5, -4, -3, -1, 1, 3],  # 9: valley
    ]
)


def make_mnist1d(n_samples: int = 4000, *, length: int = 40, seed: int = 0) -> Dataset:
    """A procedural MNIST-1D: ten 1-D templates under random translation, width,
    amplitude, shear and (correlated plus white) noise, sampled at `length` points.

    Deterministic for a given `seed`; no download. Standardised to zero mean, unit
    variance over the whole set.

    Examples
    --------
    >>> data = make_mnist1d(50, seed=1)
    >>> data.x.shape, bool(np.array_equal(data.x, make_mnist1d(50, seed=1).x))
    ((50, 40), True)
    """
    if n_samples < 1 or length < 12:
        raise ValueError(f"need n_samples >= 1 and length >= 12; got {n_samples}, {length}")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n_samples)
    grid = np.linspace(0.0, 1.0, length)
    width = rng.uniform(0.4, 0.7, n_samples)
    start = rng.uniform(0.0, 1.0, n_samples) * (1.0 - width)
    amplitude = rng.uniform(0.7, 1.3, n_samples)
    shear = rng.uniform(-3.0, 3.0, n_samples)
    x = np.empty((n_samples, length))
    for i in range(n_samples):
        knots = start[i] + width[i] * np.linspace(0.0, 1.0, 12)
        x[i] = amplitude[i] * np.interp(grid, knots, _TEMPLATES[y[i]], left=0.0, right=0.0)
    x += shear[:, None] * (grid - 0.5)
    kernel = np.ones(7) / 7.0
    white = rng.normal(0.0, 1.5, (n_samples, length + 6))
    x += np.apply_along_axis(np.convolve, 1, white, kernel, mode="valid")
    x += rng.normal(0.0, 0.4, x.shape)
    x = (x - x.mean()) / x.std()
    return Dataset("mnist1d", x.astype(np.float32), y.astype(np.int64), 10, "conv1d")


def make_clustered(
    n_samples: int = 10000,
    *,
    n_features: int = 32,
    n_classes: int = 10,
    clusters_per_class: int = 3,
    separation: float = 2.0,
    seed: int = 0,
) -> Dataset:
    """Synthetic classification for scale: each class is a mixture of Gaussian clusters.

    Cluster centres are drawn ``N(0, separation²)`` per feature; samples are a centre
    plus unit Gaussian noise.

    Examples
    --------
    >>> data = make_clustered(100, n_features=8, n_classes=4, seed=0)
    >>> data.x.shape, data.n_classes
    ((100, 8), 4)
    """
    if min(n_samples, n_features, n_classes, clusters_per_class) < 1:
        raise ValueError("n_samples, n_features, n_classes and clusters_per_class must be >= 1")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, separation, (n_classes, clusters_per_class, n_features))
    y = rng.integers(0, n_classes, n_samples)
    cluster = rng.integers(0, clusters_per_class, n_samples)
    x = centres[y, cluster] + rng.normal(0.0, 1.0, (n_samples, n_features))
    return Dataset("clustered", x.astype(np.float32), y.astype(np.int64), n_classes, "mlp")


@dataclass(frozen=True)
class DataRequest:
    """What a data-set loader is asked for.

    Attributes
    ----------
    name : str
        As configured, variant included (``"emnist:balanced"``).
    variant : str or None
        The part after ``:`` (``"balanced"``), None without one.
    root : Path or None
        The folder of files the user provides (``FedConfig.data_dir``).
    n_samples : int or None
        Samples to generate, or a seeded subset to keep (None: the loader's default).
    seed : int
    """

    name: str
    variant: str | None = None
    root: Path | None = None
    n_samples: int | None = None
    seed: int = 0


#: ``loader(request) -> Dataset``.
DatasetLoader = Callable[[DataRequest], Dataset]

#: Data sets by name (the built-ins: ``digits``, ``mnist1d``, ``clustered`` offline;
#: ``cifar10``, ``mnist``, ``emnist``, ``gtsrb`` read from local files).
DATASETS: Registry[DatasetLoader] = Registry("data set")

#: The learning rate of a data set registered without one.
FALLBACK_LR = 0.1

#: Each data set's default learning rate (``register_dataset(..., lr=...)``).
_LEARNING_RATES: dict[str, float] = {}


def default_lr(name: str) -> float:
    """The default learning rate of data set `name` (``emnist:balanced`` → ``emnist``'s):
    the one it was registered with, else :data:`FALLBACK_LR`.

    The built-ins' were chosen on their validation split (README, "Results"; 5 seeds of
    the default task): digits 0.1 (0.2 ties, 0.05 loses 0.06), clustered 0.05 (0.1
    diverges in every seed: its features are not standardised), mnist1d 0.05 (0.1 scored
    best on validation, but diverged in 1 of 40 runs of the ``mnist1d`` preset, at round
    28: a default must not diverge).

    Examples
    --------
    >>> default_lr("digits")
    0.1
    """
    return _LEARNING_RATES.get(name.partition(":")[0], FALLBACK_LR)


def register_dataset(
    name: str, loader: DatasetLoader, *, lr: float | None = None, replace: bool = False
) -> None:
    """Make `loader` selectable as ``FedConfig(dataset=name)`` (``--dataset name``).

    Parameters
    ----------
    name : str
        ``--dataset name`` or ``name:<variant>`` reaches it.
    loader : callable
        ``loader(request) -> Dataset``, `request` a :class:`DataRequest`. Honour
        ``request.seed`` so that runs are reproducible.
    lr : float, optional
        The data set's default learning rate (``train.lr`` unset); choose it on the
        validation split. None: :data:`FALLBACK_LR`.
    replace : bool
        Allow replacing a data set registered under the same name.

    Examples
    --------
    >>> def two_blobs(request):
    ...     rng = np.random.default_rng(request.seed)
    ...     y = rng.integers(0, 2, request.n_samples or 100)
    ...     x = (rng.normal(size=(len(y), 4)) + 3 * y[:, None]).astype(np.float32)
    ...     return Dataset("two_blobs", x, y, 2, "mlp")
    >>> register_dataset("toy_blobs", two_blobs)
    >>> load_dataset("toy_blobs", n_samples=10).x.shape
    (10, 4)
    >>> DATASETS.unregister("toy_blobs")
    """
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a finite number > 0; got {lr!r}")
    DATASETS.register(name, loader, replace=replace)
    _LEARNING_RATES.pop(name, None)
    if lr is not None:
        _LEARNING_RATES[name] = float(lr)


def _from_files(request: DataRequest) -> Dataset:
    from flexmoe.fedloop import loaders

    base = request.name.partition(":")[0]
    if request.root is None:
        raise ValueError(
            f"data set {request.name!r} reads local files: pass the directory as `data_dir`"
        )
    data = loaders.load_files(base, request.root, request.variant)
    return data.subset(request.n_samples, request.seed)


# Learning rates chosen on each data set's validation split (README, "Results").
register_dataset("digits", lambda r: load_digits().subset(r.n_samples, r.seed), lr=0.1)
register_dataset("mnist1d", lambda r: make_mnist1d(r.n_samples or 4000, seed=r.seed), lr=0.05)
register_dataset("clustered", lambda r: make_clustered(r.n_samples or 10000, seed=r.seed), lr=0.05)
for _name in ("cifar10", "mnist", "emnist", "gtsrb"):
    register_dataset(_name, _from_files)


def load_dataset(
    name: str, *, root: str | Path | None = None, n_samples: int | None = None, seed: int = 0
) -> Dataset:
    """Load a registered data set by name.

    Parameters
    ----------
    name : str
        A name in :data:`DATASETS`; ``emnist`` may name a split: ``emnist:balanced``.
    root : path, optional
        Directory holding the files of ``cifar10``, ``mnist``, ``emnist``, ``gtsrb``
        (``FedConfig.data_dir``).
    n_samples : int, optional
        Samples to generate (``mnist1d``, ``clustered``) or a seeded subset to keep
        (every other data set).
    seed : int
    """
    base, _, variant = name.partition(":")
    if base not in DATASETS:
        raise ValueError(DATASETS.unknown(name))
    request = DataRequest(name, variant or None, None if root is None else Path(root),
                          n_samples, seed)  # fmt: skip
    return DATASETS[base](request)
