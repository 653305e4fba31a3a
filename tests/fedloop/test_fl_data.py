"""Offline data sets and the file loaders, on tiny files the tests write."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from flexmoe.fedloop import load_dataset, load_digits, make_clustered, make_mnist1d
from flexmoe.fedloop.loaders import read_idx


def test_digits_is_bundled_and_scaled() -> None:
    data = load_digits()
    assert data.x.shape == (1797, 64) and data.x.dtype == np.float32
    assert 0 <= data.x.min() and data.x.max() <= 1 and data.preset == "mlp"


def test_mnist1d_is_seeded_and_balanced_enough() -> None:
    a, b, c = make_mnist1d(300, seed=3), make_mnist1d(300, seed=3), make_mnist1d(300, seed=4)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert a.x.shape == (300, 40) and np.bincount(a.y, minlength=10).min() > 10
    assert abs(float(a.x.mean())) < 1e-4 and a.preset == "conv1d"


def test_mnist1d_classes_are_separable_by_their_templates() -> None:
    data = make_mnist1d(2000, seed=0)
    means = np.stack([data.x[data.y == c].mean(0) for c in range(10)])
    nearest = np.argmin(((data.x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (nearest == data.y).mean() > 0.3  # well above chance (0.1), far from trivial


def test_clustered_shapes_and_seed() -> None:
    data = make_clustered(50, n_features=5, n_classes=3, seed=1)
    assert data.x.shape == (50, 5) and set(np.unique(data.y)) <= {0, 1, 2}
    assert np.array_equal(data.x, make_clustered(50, n_features=5, n_classes=3, seed=1).x)


def test_load_dataset_subsets_and_rejects_unknown_names() -> None:
    assert len(load_dataset("digits", n_samples=100, seed=0)) == 100
    with pytest.raises(ValueError, match="valid data sets: digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="pass the directory"):
        load_dataset("mnist")


# -- CIFAR-10 ----------------------------------------------------------------------------


def write_cifar(folder: Path, per_batch: int = 3) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (per_batch, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, per_batch)
        records.tofile(folder / name)


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-bin")
    data = load_dataset("cifar10", root=tmp_path)
    assert data.x.shape == (18, 3, 32, 32) and data.x.max() <= 1 and data.preset == "cnn"
    first = np.fromfile(tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin", np.uint8)
    assert data.y[0] == first[0] and np.isclose(data.x[0, 0, 0, 0], first[1] / 255)


def test_cifar10_missing_files_say_what_to_put_where(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no data_batch_1\.bin in .*cifar-10-binary"):
        load_dataset("cifar10", root=tmp_path)
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "test_batch.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing test_batch\.bin"):
        load_dataset("cifar10", root=tmp_path / "c")


# -- MNIST / EMNIST (IDX) -------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(folder: Path, prefix: str = "", test: str = "t10k", labels=(3, 1)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 0, 5] = 255  # row 0, column 5
    for split, gz in (("train", True), (test, False)):
        write_idx(folder / f"{prefix}{split}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{prefix}{split}-labels-idx1-ubyte", np.array(labels), gz=gz)


def test_mnist_idx_plain_and_gzip(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    data = load_dataset("mnist", root=tmp_path)
    assert data.x.shape == (4, 1, 32, 32) and data.y.tolist() == [3, 1, 3, 1]
    assert data.x[0, 0, 2, 7] == 1.0  # zero-padded by 2 on each side
    assert read_idx(tmp_path / "t10k-labels-idx1-ubyte").tolist() == [3, 1]


def test_emnist_is_transposed_back_and_letters_start_at_zero(tmp_path: Path) -> None:
    write_mnist(tmp_path, prefix="emnist-letters-", test="test", labels=(1, 26))
    data = load_dataset("emnist:letters", root=tmp_path)
    assert data.y.tolist() == [0, 25, 0, 25] and data.n_classes == 26
    assert data.x[0, 0, 7, 2] == 1.0  # transposed: column 5 became row 5


def test_idx_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


# -- GTSRB ------------------------------------------------------------------------------


def write_ppm(path: Path, rgb: np.ndarray) -> None:
    height, width, _ = rgb.shape
    path.write_bytes(f"P6\n# test\n{width} {height}\n255\n".encode() + rgb.tobytes())


def test_gtsrb_official_layout(tmp_path: Path) -> None:
    for cls in (0, 14):
        folder = tmp_path / "Final_Training" / "Images" / f"{cls:05d}"
        folder.mkdir(parents=True)
        rows = []
        for i in range(2):
            image = np.full((40, 36, 3), 10 * cls, np.uint8)
            image[:5] = 255  # outside the ROI below
            write_ppm(folder / f"{i:05d}_00000.ppm", image)
            rows.append([f"{i:05d}_00000.ppm", 36, 40, 2, 6, 33, 37, cls])
        with (folder / f"GT-{cls:05d}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, delimiter=";")
            writer.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2",
                             "Roi.Y2", "ClassId"])  # fmt: skip
            writer.writerows(rows)
    data = load_dataset("gtsrb", root=tmp_path)
    assert data.x.shape == (4, 3, 32, 32) and sorted(data.y.tolist()) == [0, 0, 14, 14]
    assert data.n_classes == 43
    assert np.allclose(data.x[data.y == 14], 10 * 14 / 255, atol=1e-5)


def test_gtsrb_kaggle_png_layout(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "Train" / "3").mkdir(parents=True)
    Image.fromarray(np.full((10, 12, 3), 128, np.uint8)).save(tmp_path / "Train/3/a.png")
    (tmp_path / "Train.csv").write_text("Width,Height,ClassId,Path\n12,10,3,Train/3/a.png\n")
    data = load_dataset("gtsrb", root=tmp_path)
    assert data.y.tolist() == [3] and np.allclose(data.x, 128 / 255, atol=1e-5)


def test_gtsrb_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GTSRB: no CSV"):
        load_dataset("gtsrb", root=tmp_path)
    (tmp_path / "Test.csv").write_text("ClassId,Path\n1,Test/missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.png .* is missing"):
        load_dataset("gtsrb", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("gtsrb", root=tmp_path / "nowhere")
