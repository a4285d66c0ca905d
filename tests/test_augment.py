"""Augmentation: exact geometry, determinism, ink kept, exact resume, and training through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import lenet5
from lenet5.config import AugmentConfig
from lenet5.data.augment import AffineParams, Augmenter, bilinear, gaussian_matrix, make_augmenter, smoothing_basis
from lenet5.data.datasets import iterate_batches

OFF = dict(rotation=0.0, scale=0.0, shear=0.0, translate=0.0, elastic_alpha=0.0)


def augmenter(**kw) -> Augmenter:
    return make_augmenter(AugmentConfig(enabled=True, **kw))


def warp(images, params: AffineParams) -> np.ndarray:
    src_y, src_x = augmenter(**OFF).affine_grid(params)
    return bilinear(images, src_y, src_x)


def ink(images) -> np.ndarray:
    return images.reshape(len(images), -1).sum(1, dtype=np.float64)


def test_make_augmenter_is_none_when_disabled():
    assert make_augmenter(AugmentConfig()) is None


@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("elastic", [0.0, 34.0])
def test_output_is_uint8_with_the_input_shape(mnist, n, elastic):
    out = augmenter(elastic_alpha=elastic)(mnist.train_images[:n], np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == (n, 28, 28)


def test_same_seed_gives_the_same_distortions_and_another_seed_others(mnist):
    x = mnist.train_images[:64]
    a, b = augmenter(elastic_alpha=34.0), augmenter(elastic_alpha=34.0)
    first = a(x, np.random.default_rng(5))
    a(x, np.random.default_rng(6))  # scratch buffers from another call do not leak into the next one
    assert np.array_equal(first, a(x, np.random.default_rng(5)))
    assert np.array_equal(first, b(x, np.random.default_rng(5)))
    assert not np.array_equal(first, a(x, np.random.default_rng(6)))


def test_input_batch_is_left_untouched(mnist):
    x = mnist.train_images[:32].copy()
    augmenter(elastic_alpha=34.0)(x, np.random.default_rng(0))
    assert np.array_equal(x, mnist.train_images[:32])


def test_all_strengths_zero_is_the_exact_identity(mnist):
    x = mnist.train_images[:256]
    assert np.array_equal(augmenter(**OFF)(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("dx,dy", [(3, -2), (-5, 0), (0, 4), (1, 1)])
def test_integer_shift_moves_pixels_exactly(mnist, dx, dy):
    x = mnist.train_images[:16]
    params = AffineParams.identity(16)
    params.shift_x[:], params.shift_y[:] = dx, dy
    expected = np.zeros_like(x)  # positive shifts move the digit right (x) and down (y); background 0
    expected[:, max(dy, 0) : 28 + min(dy, 0), max(dx, 0) : 28 + min(dx, 0)] = x[
        :, max(-dy, 0) : 28 + min(-dy, 0), max(-dx, 0) : 28 + min(-dx, 0)
    ]
    assert np.array_equal(warp(x, params), expected)


def test_quarter_turn_is_an_exact_rotation(mnist):
    x = mnist.train_images[:16]
    params = AffineParams.identity(16)
    params.rotation[:] = 90.0  # positive angles turn clockwise on screen (y points down)
    assert np.array_equal(warp(x, params), np.rot90(x, k=-1, axes=(1, 2)))


@pytest.mark.parametrize("zoom", [0.8, 1.2])
def test_zoom_scales_the_ink_with_the_area(mnist, zoom):
    x = mnist.train_images[:500]  # digits sit in a 20x20 box: 1.2x still fits in 28x28
    params = AffineParams.identity(500)
    params.zoom[:] = zoom
    ratio = ink(warp(x, params)) / ink(x)
    assert ratio.mean() == pytest.approx(zoom**2, rel=0.02)
    assert np.abs(ratio / zoom**2 - 1).max() < 0.1


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"elastic_alpha": 34.0},
        {"rotation": 15.0, "shear": 15.0, "scale": 0.15, "translate": 3.0, "elastic_alpha": 34.0},
    ],
)
def test_distortions_keep_most_ink(mnist, kw):
    x = mnist.train_images[:2000]
    ratio = ink(augmenter(**kw)(x, np.random.default_rng(1))) / ink(x)
    assert 0.9 < ratio.mean() < 1.15  # zoom in/out and local stretching balance out on average
    assert np.quantile(ratio, 0.01) > 0.4 and np.quantile(ratio, 0.99) < 2.0
    assert 0.7 < ratio.min() or kw  # affine alone never loses a third of a digit


def test_elastic_field_is_smooth_zero_mean_and_scales_with_alpha():
    a, b = augmenter(elastic_alpha=10.0), augmenter(elastic_alpha=20.0)
    dy, dx = (v.copy() for v in a.elastic_field(500, np.random.default_rng(0)))
    dy2, _ = b.elastic_field(500, np.random.default_rng(0))
    np.testing.assert_allclose(dy2, 2 * dy, rtol=1e-5, atol=1e-5)  # same noise, twice the strength
    assert abs(dy.mean()) < 0.05 and abs(dx.mean()) < 0.05  # ~5 standard errors of a 500-field mean
    assert 0.2 < dy.std() < 1.0  # alpha 10, sigma 4: about half a pixel
    neighbour = np.corrcoef(dx[:, :, :-1].ravel(), dx[:, :, 1:].ravel())[0, 1]
    assert neighbour > 0.9  # smoothed: neighbours move together (white noise would give ~0)


def test_elastic_field_has_the_covariance_of_smoothed_uniform_noise():
    """Drawn in the smoothing's leading components, the field keeps Simard's alpha * G N G^T statistics."""
    g = gaussian_matrix(28, 4.0)
    b = smoothing_basis(28, 4.0).astype(np.float64)
    np.testing.assert_allclose(b @ b.T, g @ g.T, atol=1e-3 * (g @ g.T).max())
    dy, dx = augmenter(elastic_alpha=10.0).elastic_field(4000, np.random.default_rng(0))
    per_axis = np.diag(g @ g.T)
    exact = 10.0**2 / 3 * np.outer(per_axis, per_axis)  # var(alpha * uniform[-1, 1]) through both smoothings
    np.testing.assert_allclose(dy.var(0), exact, rtol=0.12)
    np.testing.assert_allclose(dx.var(0), exact, rtol=0.12)


def test_gaussian_matrix_keeps_constants_and_is_symmetric_in_the_interior():
    g = gaussian_matrix(28, 4.0)
    np.testing.assert_allclose(g.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(g[14, 14 - 5], g[14, 14 + 5])
    assert g[14].argmax() == 14


def test_resumed_iteration_sees_the_same_augmented_batches(mnist):
    images, labels = mnist.train_images[:1000], mnist.train_labels[:1000]
    transform = augmenter(elastic_alpha=34.0)
    full = list(iterate_batches(images, labels, 64, np.random.default_rng([3, 2]), transform=transform))
    tail = list(iterate_batches(images, labels, 64, np.random.default_rng([3, 2]), transform=transform, start_batch=9))
    assert len(tail) == len(full) - 9
    for (x1, y1), (x2, y2) in zip(full[9:], tail):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    plain = list(iterate_batches(images, labels, 64, np.random.default_rng([3, 2])))
    assert not np.array_equal(full[0][0], plain[0][0])  # the transform did act


# ---------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_training_with_augmentation_through_the_cli(small_mnist, tmp_path):
    result = lenet5(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(small_mnist),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--seed",
        "1",
        "--name",
        "aug",
        "--set",
        "data.val_size=1000",
        "--set",
        "augment.enabled=true",
        "--set",
        "augment.elastic_alpha=20",
        "--json",
        cwd=tmp_path,
        check=True,
    )
    metrics = json.loads(result.stdout)
    assert metrics["test_accuracy"] > 0.9  # distorted digits still teach; chance is 0.10
    saved = (tmp_path / "runs" / "aug" / "config.yaml").read_text()
    assert "enabled: true" in saved and "elastic_alpha: 20.0" in saved


def test_data_preview_augment_writes_a_picture(small_mnist, tmp_path):
    (tmp_path / "config.yaml").write_text("augment:\n  elastic_alpha: 30.0\n")
    out = tmp_path / "pics" / "preview.png"
    result = lenet5(
        "data",
        "--dataset",
        "idx",
        "--data-dir",
        str(small_mnist),
        "--preview-augment",
        str(out),
        "--json",
        cwd=tmp_path,
        check=True,
    )
    report = json.loads(result.stdout)["preview_augment"]
    assert report["path"] == str(out) and report["augment"]["elastic_alpha"] == 30.0
    assert report["augment"]["enabled"] is True
    with Image.open(out) as im:
        assert im.size[0] > 500 and im.size[1] > 500
        grid = np.asarray(im.convert("L"))
    assert (grid == 128).mean() < 0.3 and (grid > 200).mean() > 0.02  # grey gaps, black digits' ground, ink
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
