"""MNIST in memory as uint8, a seeded train/validation split, and a batch iterator.

The whole training set stays uint8 (60,000 x 28 x 28 = 47 MB); only one batch at a time is turned
into normalized float32 NCHW.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet5 import MNIST_MEAN, MNIST_STD
from lenet5.data.sources import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, DatasetFiles, locate
from lenet5.errors import DataError


@dataclass
class MNIST:
    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    files: DatasetFiles | None = None


def load_mnist(data_dir: str | Path | None = None, dataset: str = "mnist") -> MNIST:
    """Fetch (if needed), verify and parse the four files. dataset: 'mnist' (checksums) or 'idx' (format)."""
    files = locate(dataset, data_dir)
    arrays = {name: files.array(name) for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)}
    files.contents.clear()  # drop the raw bytes; the arrays are all we keep
    return MNIST(arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS], arrays[TEST_IMAGES], arrays[TEST_LABELS], files)


def split_train_val(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random split into (train_x, train_y, val_x, val_y); same seed, same split."""
    n = len(images)
    if not 0 <= val_size < n:
        raise DataError(f"validation size {val_size} must be between 0 and {n - 1} (the training set has {n} images)")
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:val_size]), np.sort(order[val_size:])
    return images[train], labels[train], images[val], labels[val]


def normalize(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 (N, 28, 28) -> normalized (N, 1, 28, 28): (x/255 - 0.1307) / 0.3081."""
    scale = np.asarray(1.0 / (255.0 * MNIST_STD), dtype=dtype)
    shift = np.asarray(MNIST_MEAN / MNIST_STD, dtype=dtype)
    x = images.astype(dtype)
    x *= scale
    x -= shift
    return x[:, None, :, :]


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator | None = None,
    dtype=np.float32,
    transform=None,
    start_batch: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x (B,1,28,28) normalized float, y (B,) int64); shuffled by ``rng`` when given.

    ``transform(uint8 batch, rng) -> uint8 batch`` (augmentation) is applied before normalization, with a
    generator of its own per batch, derived from ``rng`` and the batch index, so that skipping batches
    (``start_batch``, used to resume) does not change the distortions of the batches that follow.
    The last batch may be smaller.
    """
    n = len(images)
    order = rng.permutation(n) if rng is not None else None
    transform_seed = int(rng.integers(2**63)) if (rng is not None and transform is not None) else 0
    for start in range(start_batch * batch_size, n, batch_size):
        idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        batch = images[idx]
        if transform is not None:
            batch = transform(batch, np.random.default_rng([transform_seed, start // batch_size]))
        yield normalize(batch, dtype), labels[idx].astype(np.int64)


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
