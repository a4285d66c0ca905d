"""The pen-stroke handwriting generator: deterministic, the promised counts and kinds, decodable files, boxes
inside the image and around the ink."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from pen_digits import PEN_KINDS, pen_digit_scenes, pen_glyph, pen_number_scenes
from photo_scenes import KINDS


@pytest.fixture(scope="module")
def digits():
    return pen_digit_scenes(per_kind=2, seed=7)


@pytest.fixture(scope="module")
def numbers():
    return pen_number_scenes(n=len(PEN_KINDS) + 3, seed=7)


def decode(scene) -> Image.Image:
    image = Image.open(io.BytesIO(scene.data))
    image.load()
    return image


def test_same_seed_same_bytes_other_seed_other_bytes(digits, numbers):
    assert [s.data for s in pen_digit_scenes(2, seed=7)] == [s.data for s in digits]
    assert [(s.data, s.boxes) for s in pen_number_scenes(4, seed=7)] == [(s.data, s.boxes) for s in numbers[:4]]
    other = pen_digit_scenes(2, seed=8)
    assert all(a.data != b.data for a, b in zip(other, digits))


def test_kinds_counts_and_labels(digits, numbers):
    assert set(KINDS) < set(PEN_KINDS) and {"clean_png", "lowres_png"} <= set(PEN_KINDS)
    assert [s.kind for s in digits] == [k for k in PEN_KINDS for _ in range(2)]
    assert [s.kind for s in numbers] == [PEN_KINDS[i % len(PEN_KINDS)] for i in range(len(PEN_KINDS) + 3)]
    assert all(len(s.label) == len(s.boxes) == 1 and s.label.isdigit() for s in digits)
    assert all(2 <= len(s.label) == len(s.boxes) <= 5 and s.label.isdigit() for s in numbers)
    assert all(s.mnist_index == [] for s in digits + numbers)
    many = pen_digit_scenes(20, seed=1, kinds=("clean_png",))
    assert sorted({s.label for s in many}) == [str(d) for d in range(10)]  # every digit, in shuffled rounds
    assert sorted(s.label for s in many) == sorted([str(d) for d in range(10)] * 2)


def test_only_the_requested_kinds():
    assert [s.kind for s in pen_digit_scenes(1, kinds=("lowres_png", "ruled"))] == ["lowres_png", "ruled"]
    with pytest.raises(ValueError, match="unknown"):
        pen_number_scenes(1, kinds=("moonlight",))


def test_every_scene_decodes_as_its_suffix_says(digits, numbers):
    for scene in digits + numbers:
        image = decode(scene)
        assert (image.format, scene.suffix) in {("JPEG", ".jpg"), ("PNG", ".png")}
        assert image.mode in {"RGB", "L"}
        if scene.kind in ("clean_png", "lowres_png"):
            assert scene.suffix == ".png" and 28 <= image.size[1] <= 1600 and image.size[0] <= 2000


def test_boxes_inside_the_image_left_to_right_and_around_the_ink(digits, numbers):
    for scene in digits + numbers:
        image = np.asarray(decode(scene).convert("L"), dtype=np.float32)  # (h, w)
        h, w = image.shape
        paper = np.median(image)
        ink = np.abs(image - paper)  # light-on-dark images have ink brighter than the background
        inside = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in scene.boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (scene.kind, scene.boxes, (w, h))
            assert np.percentile(ink[y0:y1, x0:x1], 98) > 20, scene.kind  # ink in every box
            inside[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = True
        lefts = [box[0] for box in scene.boxes]
        assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts)
        if scene.kind in ("clean_png", "lowres_png"):  # no noise: nothing inked outside the boxes
            margin = 0 if scene.kind == "clean_png" else max(1, h // 16)  # bilinear cells bleed half a cell
            grown = np.zeros((h, w), bool)
            for x0, y0, x1, y1 in scene.boxes:
                grown[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = True
            assert ink[~grown].max(initial=0) < 128, (scene.kind, scene.label)


def test_clean_kinds_are_noise_free_and_sized():
    clean = pen_digit_scenes(12, seed=3, kinds=("clean_png",))
    for scene in clean:
        image = np.asarray(decode(scene).convert("L"))
        assert image.max() == 255 and image.min() < 60  # white paper, black ink
        assert np.mean(image == 255) > 0.5  # most of it pure white: no noise
        x0, y0, x1, y1 = scene.boxes[0]
        assert 24 <= y1 - y0 <= 420
    low = pen_digit_scenes(12, seed=3, kinds=("lowres_png",))
    levels = []
    for scene in low:
        image = np.asarray(decode(scene).convert("L"))
        assert 60 <= image.shape[0] <= 600
        levels.append(len(np.unique(image)))
    assert min(levels) <= 16 < max(levels)  # nearest-neighbour keeps the 16 levels, bilinear blends them


def test_glyph_is_a_tight_coverage():
    for digit in range(10):
        glyph = pen_glyph(digit, height=80, seed=digit)
        assert glyph.dtype == np.float32 and 0 <= glyph.min() and glyph.max() <= 1 and glyph.max() > 0.9
        edges = (glyph[0], glyph[-1], glyph[:, 0], glyph[:, -1])
        assert all(edge.max() > 0.01 for edge in edges)  # tightly cropped: ink on every edge
        assert 70 <= glyph.shape[0] <= 110


def test_fast():
    start = time.perf_counter()
    pen_digit_scenes(4, seed=11, kinds=("clean_png", "lowres_png", "plain_photo", "clean_scan"))
    assert time.perf_counter() - start < 3
