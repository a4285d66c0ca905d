"""The page cleaning's own parts: enlarged grids read as grids, and the shortcuts that keep it fast give exactly
what the slow way gives."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from clean_numbers import mnist_clean_scenes
from grid_digits import grid_png, optical_grid
from lenet5.checkpoint import resolve_model
from lenet5.data import page
from lenet5.predict import Predictor


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(resolve_model(None))  # the bundled model: fixed weights


def _grid(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 17, (8, 8)).astype(np.float32) / 16.0


@pytest.mark.parametrize("side", [32, 100, 256, 512])
def test_a_grid_enlarged_by_repeating_pixels_is_read_as_the_grid(side):
    grid = _grid()
    big = np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((side, side), Image.NEAREST))
    smooth, scale = page._native_grid(big.astype(np.float32) / 255.0)
    assert smooth.shape[0] >= page.SMALL_SIDE and smooth.shape[0] % 8 == 0
    assert scale == pytest.approx(side / smooth.shape[1])
    up = smooth.shape[0] // 8
    centres = smooth[up // 2 :: up, up // 2 :: up]  # the smooth picture passes through the cells' values
    assert np.abs(centres - np.round(grid * 255) / 255).max() < 0.05


@pytest.mark.parametrize(
    "what", ["a bar", "a seven of two bars", "noise", "a smooth enlargement", "one colour", "a two-colour grid"]
)
def test_pictures_that_are_no_enlarged_grid_are_left_alone(what):
    g = np.ones((280, 280), np.float32)
    if what == "a bar":  # a "1" drawn as a rectangle: runs of 40, 200, 40 rows fit a 40-pixel cell
        g[40:240, 130:150] = 0
    elif what == "a seven of two bars":
        g[40:60, 60:220] = 0
        g[60:240, 200:220] = 0
    elif what == "noise":
        g = np.random.default_rng(0).random((280, 280)).astype(np.float32)
    elif what == "a smooth enlargement":
        g = cv2.resize(_grid(), (280, 280), interpolation=cv2.INTER_LINEAR)
    elif what == "a two-colour grid":
        g = cv2.resize((_grid() > 0.5).astype(np.float32), (256, 256), interpolation=cv2.INTER_NEAREST)
    out, scale = page._native_grid(g)
    assert out is g and scale == 1.0


@pytest.mark.slow  # a few seconds: in the full run, not the quick loop
def test_grid_digits_enlarged_by_repeating_pixels_read_as_well_as_smoothly_enlarged_ones(mnist, predictor):
    """Cut into big flat blocks, an 8x8 digit used to be taken for paper inside its strokes."""
    right = {cv2.INTER_NEAREST: 0, cv2.INTER_LINEAR: 0}
    for i in range(40):
        levels = optical_grid(mnist.test_images[i] / 255.0)
        for interpolation in right:
            rng = np.random.default_rng(i)  # the same size and polarity for both
            data = _enlarged(levels, rng, interpolation)
            reading, _ = predictor.read_image_bytes(data, "grid.png")
            right[interpolation] += reading["number"] == str(mnist.test_labels[i])
    assert right[cv2.INTER_NEAREST] >= right[cv2.INTER_LINEAR] - 4, right
    assert right[cv2.INTER_NEAREST] >= 24, right


def _enlarged(levels: np.ndarray, rng: np.random.Generator, interpolation: int) -> bytes:
    tone = 1.0 - levels / 16.0
    factor = int(rng.integers(4, 40))
    big = cv2.resize((tone * 255).astype(np.uint8), (8 * factor, 8 * factor), interpolation=interpolation)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    return buf.getvalue()


def test_grid_png_makes_pictures_the_page_reads_back_as_their_grid():
    levels = optical_grid(np.pad(np.ones((20, 6), np.float32), 4))  # a bar: a "1"
    assert levels.max() == 16 and levels.shape == (8, 8)
    picture = np.asarray(Image.open(io.BytesIO(grid_png(levels, np.random.default_rng(3)))).convert("L"))
    assert picture.shape[0] % 8 == 0


@pytest.mark.parametrize("q", [0, 1, 50, 75, 90, 95, 99, 100])
def test_percentile_shortcut_is_numpys_percentile(q):
    rng = np.random.default_rng(q)
    for n in (1, 2, 3, 10, 101, 1000):
        for values in (
            rng.random(n).astype(np.float32),
            (rng.integers(0, 3, n) / 2).astype(np.float32),  # many ties at both ends: the shortcut's case
            np.where(rng.random(n) < 0.9, 1.0, rng.random(n)).astype(np.float32),  # mostly paper
            np.where(rng.random(n) < 0.9, 0.0, rng.random(n)).astype(np.float32),  # mostly no ink
        ):
            assert page._percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-6, abs=1e-7)


def test_median_shortcut_is_numpys_median():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 10, 11, 1000):
        for share in (0.0, 0.4, 0.5, 0.51, 0.9, 1.0):
            values = np.where(rng.random(n) < share, 0.0, rng.random(n)).astype(np.float32)
            assert page._median_of_nonnegative(values) == pytest.approx(float(np.median(values)), abs=1e-7)


def test_components_are_opencvs_default_components():
    rng = np.random.default_rng(0)
    for _ in range(20):
        binary = (cv2.GaussianBlur(rng.random((120, 200)).astype(np.float32), (0, 0), 3) > 0.52).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        n2, labels2, stats2 = page.components_with_stats(binary)
        assert n == n2 and np.array_equal(labels, labels2) and np.array_equal(stats, stats2)


@pytest.mark.slow  # a few seconds: in the full run, not the quick loop
def test_bold_digits_cropped_tight_are_ink_not_a_blank_page(mnist):
    """Ink covering nearly half of a small picture (bold digits cropped to their ink): the paper's noise is
    measured on the paper alone, not on a picture that is half ink."""
    scenes = mnist_clean_scenes(mnist.test_images, mnist.test_labels, 150, seed=100)
    problems = []
    for scene in scenes:
        gray = np.asarray(Image.open(io.BytesIO(scene.data)).convert("L"), np.float32) / 255.0
        ink = page.find_ink(gray)
        if ink.problem is not None or not ink.mask.any():
            problems.append((scene.label, ink.problem))
    assert not problems
