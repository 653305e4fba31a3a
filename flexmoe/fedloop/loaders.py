"""Loaders for data sets the user already has on disk; nothing is downloaded.

* CIFAR-10, binary version: ``data_batch_1.bin`` … ``data_batch_5.bin`` and
  ``test_batch.bin`` in `root` or in ``root/cifar-10-batches-bin``.
* MNIST: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte`` (optionally ``.gz``) in `root`.
* EMNIST: the same four files with the prefix ``emnist-<split>-`` (default split
  ``balanced``), in `root` or ``root/gzip``.
* GTSRB: every CSV under `root` with a ``ClassId`` column and a ``Filename`` or ``Path``
  column (the official ``GT-*.csv`` files, ``;``-separated, or Kaggle's ``Train.csv`` /
  ``Test.csv``), the images resolved next to the CSV or under `root`; cropped to the
  ``Roi.*`` box when given and resized to 32×32.

A missing file raises :class:`FileNotFoundError` that says what to put where.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flexmoe.fedloop.data import Dataset

__all__ = ["load_cifar10", "load_files", "load_gtsrb", "load_idx", "load_mnist", "read_idx"]

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def load_files(name: str, root: Path, variant: str | None = None) -> Dataset:
    """Dispatch to the loader of `name` (``cifar10``, ``mnist``, ``emnist``, ``gtsrb``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: data directory {root} does not exist")
    if name == "cifar10":
        return load_cifar10(root)
    if name == "mnist":
        return load_mnist(root)
    if name == "emnist":
        return load_mnist(root, emnist_split=variant or "balanced")
    if name == "gtsrb":
        return load_gtsrb(root)
    raise ValueError(f"no file loader for {name!r}; valid: cifar10, mnist, emnist, gtsrb")


def load_cifar10(root: Path) -> Dataset:
    """CIFAR-10 binary batches → images (3, 32, 32) scaled to [0, 1], train then test."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    folder = next(
        (d for d in (root, root / "cifar-10-batches-bin") if (d / names[0]).exists()), None
    )
    if folder is None:
        raise FileNotFoundError(
            f"CIFAR-10: no {names[0]} in {root} or {root / 'cifar-10-batches-bin'}; download "
            f"the binary version (cifar-10-binary.tar.gz) from {_CIFAR_URL} and extract it "
            f"into {root}"
        )
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10: missing {', '.join(missing)} in {folder}")
    records = np.concatenate([_cifar_records(folder / n) for n in names])
    y = records[:, 0].astype(np.int64)
    x = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return Dataset("cifar10", x, y, 10, "cnn")


def _cifar_records(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 3073:
        raise ValueError(
            f"CIFAR-10: {path} has {raw.size} bytes, not a multiple of 3073 "
            "(1 label byte + 3072 pixel bytes); is it the binary version?"
        )
    return raw.reshape(-1, 3073)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header declares shape {shape} but holds {body.size} bytes")
    return body.reshape(shape)


def _find(root: Path, stem: str, dataset: str) -> Path:
    for folder in (root, root / "gzip", root / "raw"):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.exists():
                return candidate
    raise FileNotFoundError(
        f"{dataset}: no {stem} (or {stem}.gz) in {root}; put the four IDX files "
        "(train/test images and labels) there"
    )


def load_idx(root: Path, prefix: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Train + test images and labels of an MNIST-style IDX set (`prefix` before the names)."""
    parts = []
    for split in ("train", "t10k" if not prefix else "test"):
        images = read_idx(_find(root, f"{prefix}{split}-images-idx3-ubyte", dataset))
        labels = read_idx(_find(root, f"{prefix}{split}-labels-idx1-ubyte", dataset))
        if len(images) != len(labels):
            raise ValueError(f"{dataset}: {len(images)} {split} images but {len(labels)} labels")
        parts.append((images, labels))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_mnist(root: Path, *, emnist_split: str | None = None) -> Dataset:
    """MNIST or EMNIST from IDX files → images (1, 32, 32) in [0, 1] (zero-padded 28 → 32).

    EMNIST images are stored transposed and are flipped back; ``letters`` labels 1..26
    become 0..25.
    """
    name = "mnist" if emnist_split is None else f"emnist:{emnist_split}"
    prefix = "" if emnist_split is None else f"emnist-{emnist_split}-"
    images, labels = load_idx(root, prefix, name)
    if emnist_split is not None:
        images = images.transpose(0, 2, 1)
    y = labels.astype(np.int64)
    if y.size and y.min() == 1 and emnist_split == "letters":
        y -= 1
    x = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32)[:, None] / 255.0
    return Dataset(name, x, y, int(y.max()) + 1 if y.size else 0, "cnn")


def load_gtsrb(root: Path, *, size: int = 32) -> Dataset:
    """GTSRB images listed in the CSV files under `root`, as (3, size, size) in [0, 1]."""
    tables = sorted(p for p in root.rglob("*.csv") if _gtsrb_columns(p) is not None)
    if not tables:
        raise FileNotFoundError(
            f"GTSRB: no CSV with `ClassId` and `Filename`/`Path` columns under {root}; put the "
            "official Final_Training folder (Images/<class>/GT-<class>.csv + .ppm files) or "
            "Kaggle's Train.csv/Test.csv with its Train/ and Test/ folders there"
        )
    xs, ys = [], []
    for table in tables:
        for row in _gtsrb_rows(table):
            image = _read_image(_resolve(row["file"], table.parent, root))
            xs.append(_crop_resize(image, row.get("roi"), size))
            ys.append(row["label"])
    y = np.asarray(ys, dtype=np.int64)
    return Dataset("gtsrb", np.stack(xs), y, max(43, int(y.max()) + 1), "cnn")


def _gtsrb_columns(path: Path) -> tuple[str, str] | None:
    with path.open(newline="") as handle:
        header = handle.readline()
    delimiter = ";" if header.count(";") > header.count(",") else ","
    columns = [c.strip() for c in header.split(delimiter)]
    file_column = next((c for c in ("Filename", "Path") if c in columns), None)
    return (delimiter, file_column) if file_column and "ClassId" in columns else None


def _gtsrb_rows(path: Path) -> list[dict]:
    found = _gtsrb_columns(path)
    assert found is not None
    delimiter, file_column = found
    rows = []
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle, delimiter=delimiter):
            record = {k.strip(): v.strip() for k, v in record.items() if k}
            roi = None
            if all(f"Roi.{c}" in record for c in ("X1", "Y1", "X2", "Y2")):
                roi = tuple(int(record[f"Roi.{c}"]) for c in ("X1", "Y1", "X2", "Y2"))
            rows.append({"file": record[file_column], "label": int(record["ClassId"]), "roi": roi})
    return rows


def _resolve(name: str, folder: Path, root: Path) -> Path:
    for base in (folder, root):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"GTSRB: image {name} listed in a CSV under {folder} is missing")


def _read_image(path: Path) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3): binary PPM natively, other formats via Pillow."""
    if path.suffix.lower() == ".ppm":
        return _read_ppm(path)
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            f"reading {path.suffix} images needs Pillow: `pip install pillow`"
        ) from None
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _read_ppm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    tokens: list[bytes] = []
    position = 0
    while len(tokens) < 4:
        while data[position : position + 1].isspace():
            position += 1
        if data[position : position + 1] == b"#":
            position = data.index(b"\n", position) + 1
            continue
        end = position
        while not data[end : end + 1].isspace():
            end += 1
        tokens.append(data[position:end])
        position = end
    if tokens[0] != b"P6" or int(tokens[3]) > 255:
        raise ValueError(f"{path}: only 8-bit binary PPM (P6) is supported; got {tokens[0]!r}")
    width, height = int(tokens[1]), int(tokens[2])
    pixels = np.frombuffer(data, np.uint8, count=width * height * 3, offset=position + 1)
    return pixels.reshape(height, width, 3)


def _crop_resize(image: np.ndarray, roi: tuple[int, ...] | None, size: int) -> np.ndarray:
    if roi is not None:
        x1, y1, x2, y2 = roi
        if x2 > x1 and y2 > y1:
            image = image[y1 : y2 + 1, x1 : x2 + 1]
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    resized = F.interpolate(
        tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].numpy().astype(np.float32)
