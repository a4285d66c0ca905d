"""The page cleaning's own parts: enlarged grids read as grids, and the shortcuts that keep it fast give exactly
what the slow way gives."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

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


def _drawn(
    size: tuple[int, int], strokes: list[list[tuple[int, int]]], width: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Black strokes on white paper: (the picture as find_ink takes it, float32 0..1; where the ink is, bool)."""
    canvas = Image.new("L", size, 255)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        draw.line(stroke, fill=0, width=width)
    gray = np.asarray(canvas, np.float32) / 255.0
    return gray, gray < 0.5


def _kept(gray: np.ndarray, inked: np.ndarray) -> float:
    """The share of the drawn ink that find_ink keeps as ink (its mask is in its working copy's pixels)."""
    ink = page.find_ink(gray)
    m = ink.margin
    mask = ink.mask[m : ink.mask.shape[0] - m, m : ink.mask.shape[1] - m] if m else ink.mask
    mask = cv2.resize(mask, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return float((mask & inked).sum() / inked.sum())


UPRIGHT_NUMBERS = {  # the upright strokes of numbers that fill the picture, thin pen: not squared paper's lines
    "1111 cropped to its ink": ((400, 200), [[(x, 2), (x, 197)] for x in (20, 120, 200, 300)]),
    "1111 with margins": ((600, 300), [[(x, 50), (x, 250)] for x in (120, 220, 300, 400)]),
    "164 cropped to its ink": (
        (210, 140),
        [
            [(8, 2), (8, 137)],
            [(90, 3), (60, 80), (65, 130), (110, 120), (100, 80), (62, 95)],
            [(190, 2), (140, 90), (207, 90)],
            [(185, 40), (185, 137)],
        ],
    ),
    "a 1 in a picture of its own height": ((40, 200), [[(25, 2), (15, 197)]]),
    "a 7 cropped to its ink": ((150, 200), [[(2, 4), (147, 4), (60, 197)]]),
    "a 4 cropped to its ink": ((150, 200), [[(100, 2), (5, 130), (147, 130)], [(110, 60), (110, 197)]]),
}


@pytest.mark.parametrize("what", UPRIGHT_NUMBERS)
def test_digit_strokes_across_a_picture_cropped_to_them_are_ink_not_lines(what):
    """A 1, a 4's or a 7's bar runs across a picture cropped to the number; with no lying lines on the page,
    upright strokes are a number's, and a lone mark across a cropped picture is a digit's bar."""
    size, strokes = UPRIGHT_NUMBERS[what]
    assert _kept(*_drawn(size, strokes)) > 0.9


def test_ruled_paper_loses_its_lines_and_margin_line_but_keeps_the_digit():
    """Ruled lines across and a margin line down a page go, where no stroke crosses them; the digit stays."""
    w, h = 600, 500
    lines = [[(0, y), (w - 1, y)] for y in range(40, h, 60)] + [[(70, 0), (70, h - 1)]]
    digit = [[(300, 150), (300, 330)]]  # a "1" between the lines
    gray, _ = _drawn((w, h), lines, width=2)
    _, inked = _drawn((w, h), digit)
    gray = np.minimum(gray, 1.0 - inked.astype(np.float32))
    ink = page.find_ink(gray)
    mask = ink.mask > 0
    assert ink.margin == 0 and mask.shape == gray.shape
    assert (mask & inked).sum() > 0.9 * inked.sum()
    assert mask[:, :250].sum() + mask[:, 350:].sum() == 0  # the lines are gone


@pytest.mark.parametrize("what", ["a thin 1 on a page", "a thin 1 cropped to its ink"])
def test_a_thin_upright_1_alone_is_a_digit_not_a_line(predictor, what):
    """A 1 written with a thin pen is long and thin like a line's leftover: alone, or beside digits as tall
    as it, it is a digit."""
    size, stroke = (
        ((200, 300), [(100, 50), (95, 250)]) if what == "a thin 1 on a page" else ((40, 200), [(25, 2), (15, 197)])
    )
    gray, _ = _drawn(size, [stroke])
    buf = io.BytesIO()
    Image.fromarray((gray * 255).astype(np.uint8)).save(buf, format="PNG")
    reading, _ = predictor.read_image_bytes(buf.getvalue(), "one.png")
    assert reading["number"] == "1"


def test_a_dark_patch_at_the_edge_far_from_the_writing_is_no_digit(predictor):
    """A piece of the table at the picture's edge, in the row of the digit and as tall as it, is kept only
    when it is as close to the writing as the digits of a number are: here it is half the picture away."""
    gray, _ = _drawn((1400, 1000), [[(600, 420), (760, 420), (660, 600)]], width=14)  # a 7 mid-picture
    gray[430:600, 1386:] = 0.1  # the table, showing at the right edge in the digit's row
    buf = io.BytesIO()
    Image.fromarray((gray * 255).astype(np.uint8)).save(buf, format="PNG")
    reading, _ = predictor.read_image_bytes(buf.getvalue(), "sheet.png")
    assert reading["number"] == "7"
