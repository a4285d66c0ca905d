"""The dataset in memory: uint8, seeded split, normalized float32 NCHW batches, same seed -> same batches."""

from __future__ import annotations

import numpy as np
import pytest

from lenet5.data.datasets import iterate_batches, normalize, split_train_val
from lenet5.errors import DataError


def test_real_mnist_stays_uint8_with_expected_shapes(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_labels.dtype == np.uint8
    assert np.bincount(mnist.train_labels, minlength=10).min() > 5000


def test_split_is_seeded_disjoint_and_complete(mnist):
    x, y = mnist.train_images[:2000], mnist.train_labels[:2000]
    a = split_train_val(x, y, 500, seed=3)
    b = split_train_val(x, y, 500, seed=3)
    c = split_train_val(x, y, 500, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert len(a[0]) == 1500 and len(a[2]) == 500
    assert not np.array_equal(a[2], c[2])
    with pytest.raises(DataError):
        split_train_val(x, y, 2000, seed=0)


def test_batches_are_normalized_float32_nchw_and_reproducible(mnist):
    x, y = mnist.train_images[:300], mnist.train_labels[:300]
    first = list(iterate_batches(x, y, 128, np.random.default_rng(7)))
    again = list(iterate_batches(x, y, 128, np.random.default_rng(7)))
    assert [len(b[1]) for b in first] == [128, 128, 44]
    xb, yb = first[0]
    assert xb.dtype == np.float32 and xb.shape == (128, 1, 28, 28) and yb.dtype == np.int64
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    seen = np.concatenate([b for _, b in first])
    assert sorted(seen.tolist()) == sorted(y.tolist())  # every sample once per epoch


def test_normalize_matches_the_mnist_constants():
    pixels = np.array([[[0, 255]]], dtype=np.uint8)
    out = normalize(pixels)
    np.testing.assert_allclose(out[0, 0, 0], [(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-6)
    whole = normalize(np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8))
    assert whole.shape == (10, 1, 28, 28)
