"""The photo-scene generator itself: deterministic, the promised counts and kinds, decodable files, sound boxes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from photo_scenes import KINDS, digit_scenes, number_scenes, phone_photo


@pytest.fixture(scope="module")
def digits(mnist):
    return digit_scenes(mnist.test_images, mnist.test_labels, per_kind=2, seed=7)


@pytest.fixture(scope="module")
def numbers(mnist):
    return number_scenes(mnist.test_images, mnist.test_labels, n=len(KINDS) + 2, seed=7)


def decode(scene) -> Image.Image:
    image = Image.open(io.BytesIO(scene.data))
    image.load()
    return image


def test_same_seed_same_bytes_other_seed_other_bytes(mnist, digits, numbers):
    assert [s.data for s in digit_scenes(mnist.test_images, mnist.test_labels, 2, seed=7)] == [s.data for s in digits]
    assert [s.data for s in number_scenes(mnist.test_images, mnist.test_labels, 3, seed=7)] == [
        s.data for s in numbers[:3]
    ]
    other = digit_scenes(mnist.test_images, mnist.test_labels, 2, seed=8)
    assert all(a.data != b.data for a, b in zip(other, digits))


def test_counts_and_kinds(digits, numbers):
    assert len(KINDS) >= 8 and len(set(KINDS)) == len(KINDS)
    assert [s.kind for s in digits] == [k for k in KINDS for _ in range(2)]
    assert [s.kind for s in numbers] == [KINDS[i % len(KINDS)] for i in range(len(KINDS) + 2)]
    assert all(len(s.label) == len(s.boxes) == len(s.mnist_index) == 1 for s in digits)
    assert all(2 <= len(s.label) == len(s.boxes) == len(s.mnist_index) <= 5 for s in numbers)


def test_only_the_requested_kinds(mnist):
    scenes = digit_scenes(mnist.test_images, mnist.test_labels, 1, kinds=("ruled", "dim_room"))
    assert [s.kind for s in scenes] == ["ruled", "dim_room"]
    with pytest.raises(ValueError, match="unknown"):
        digit_scenes(mnist.test_images, mnist.test_labels, 1, kinds=("moonlight",))


def test_every_scene_decodes_as_its_suffix_says(digits, numbers):
    for scene in digits + numbers:
        image = decode(scene)
        assert (image.format, scene.suffix) in {("JPEG", ".jpg"), ("PNG", ".png")}
        assert image.mode in {"RGB", "L"}
        assert min(image.size) >= 400 and max(image.size) <= 1400


def test_boxes_inside_the_image_left_to_right_and_inked(digits, numbers):
    for scene in digits + numbers:
        image = np.asarray(decode(scene).convert("L"), dtype=np.float32)  # (h, w)
        h, w = image.shape
        for x0, y0, x1, y1 in scene.boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (scene.kind, scene.boxes, (w, h))
            # the ink makes the box's darkest pixels clearly darker than the paper around it
            around = image[max(0, y0 - 20) : y1 + 20, max(0, x0 - 20) : x1 + 20]
            assert np.percentile(image[y0:y1, x0:x1], 2) < np.median(around) - 20, scene.kind
        lefts = [box[0] for box in scene.boxes]
        assert lefts == sorted(lefts) and len(set(lefts)) == len(lefts)


def test_labels_are_the_mnist_test_digits_used(mnist, digits, numbers):
    for scene in digits + numbers:
        assert all(0 <= i < len(mnist.test_images) for i in scene.mnist_index)
        assert scene.label == "".join(str(mnist.test_labels[i]) for i in scene.mnist_index)
    chosen = [s.mnist_index[0] for s in digits]
    assert len(set(chosen)) == len(chosen)  # no test digit written twice in one set


def test_phone_photo_is_a_full_size_jpeg(mnist):
    scene = phone_photo(mnist.test_images, mnist.test_labels, seed=1, size=(1600, 1200))
    image = decode(scene)
    assert (image.format, image.size, scene.suffix) == ("JPEG", (1600, 1200), ".jpg")
    assert 2 <= len(scene.boxes) <= 5
    assert all(0 <= x0 < x1 <= 1600 and 0 <= y0 < y1 <= 1200 for x0, y0, x1, y1 in scene.boxes)
