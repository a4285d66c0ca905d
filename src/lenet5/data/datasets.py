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


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator that shuffles (and seeds the distortions of) training epoch ``epoch`` of a run."""
    return np.random.default_rng([seed, epoch])


@dataclass(frozen=True)
class EpochPlan:
    """An epoch's order of the images and the seed of its distortions, both drawn from the epoch's generator."""

    order: np.ndarray | None  # None: the images as they are
    transform_seed: int

    @classmethod
    def draw(cls, n: int, rng: np.random.Generator | None, transformed: bool) -> EpochPlan:
        """The permutation first, then the distortions' seed (only when distorting): the order of the draws
        is part of the bits, so it never changes."""
        order = rng.permutation(n) if rng is not None else None
        transform_seed = int(rng.integers(2**63)) if (rng is not None and transformed) else 0
        return cls(order, transform_seed)

    def batch_rng(self, batch: int) -> np.random.Generator:
        """The generator of batch ``batch``'s distortions: its own, so batches can be made in any order."""
        return np.random.default_rng([self.transform_seed, batch])


def draw_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    plan: EpochPlan,
    transform=None,
    start_batch: int = 0,
    stop_batch: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield batches ``start_batch`` up to ``stop_batch`` (default: all) of an epoch as (uint8 (B,28,28),
    int64 (B,)): the images in the plan's order, through ``transform(uint8 batch, plan.batch_rng(b))``."""
    n = len(images)
    stop = n if stop_batch is None else min(n, stop_batch * batch_size)
    for start in range(start_batch * batch_size, stop, batch_size):
        idx = plan.order[start : start + batch_size] if plan.order is not None else slice(start, start + batch_size)
        batch = images[idx]
        if transform is not None:
            batch = transform(batch, plan.batch_rng(start // batch_size))
        yield batch, labels[idx].astype(np.int64)


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
    plan = EpochPlan.draw(len(images), rng, transform is not None)
    for batch, y in draw_batches(images, labels, batch_size, plan, transform, start_batch):
        yield normalize(batch, dtype), y


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
