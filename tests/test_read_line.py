"""Reading a line as a whole: marks over-segmented into atoms, candidate digits scored, the best path chosen by
dynamic programming. These tests use a scorer with known answers (it likes fields as wide as a ring digit), so
they test the search, not a trained network's bits."""

from __future__ import annotations

import cv2
import numpy as np

from lenet5.data.digits import find_digits
from lenet5.data.page import Ink


def ink_of(picture: np.ndarray) -> Ink:
    """A clean binary picture (1 = ink) as the page cleaning would hand it on."""
    mask = (picture > 0).astype(np.uint8)
    return Ink(strength=mask.astype(np.float32), mask=mask, level=1.0, scale=1.0)


def ring(canvas: np.ndarray, x: int, y: int = 20, w: int = 30, h: int = 50) -> None:
    cv2.ellipse(canvas, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 1, 4)


def ring_scorer(fields: np.ndarray) -> np.ndarray:
    """(N, 10) log-probabilities: a sure 0 for a field whose ink is as wide as one ring (12 of 20 px), ten even
    guesses for wider or narrower ones."""
    widths = np.array([np.ptp(np.flatnonzero(f.max(axis=0) > 60)) + 1 for f in fields])
    ring_like = np.abs(widths - 12) <= 3
    out = np.full((len(fields), 10), np.log(0.1))
    out[ring_like] = np.log(1e-6)
    out[ring_like, 0] = 0.0
    return out


def test_touching_digits_are_cut_where_the_reading_is_best():
    canvas = np.zeros((90, 140), np.uint8)
    for x in (10, 38, 66):  # three rings, each overlapping the next by 2 px: one connected mark
        ring(canvas, x)
    ink = ink_of(canvas)
    digits, problem = find_digits(ink, ring_scorer)
    assert problem is None
    assert len(digits) == 3
    for d, x in zip(digits, (10, 38, 66)):
        assert abs(d.box[0] - x) <= 4 and abs(d.box[2] - (x + 31)) <= 4, [d.box for d in digits]


def test_a_digit_in_two_strokes_is_joined():
    canvas = np.zeros((90, 140), np.uint8)
    ring(canvas, 20)
    canvas[:, 34:37] = 0  # the ring broken into two halves 3 px apart
    ring(canvas, 80)
    digits, _ = find_digits(ink_of(canvas), ring_scorer)
    assert len(digits) == 2
    assert digits[0].box[0] <= 21 and digits[0].box[2] >= 49


def test_separate_marks_far_apart_are_never_joined():
    canvas = np.zeros((90, 200), np.uint8)
    canvas[20:70, 20:24] = 1  # a bar: reads badly alone, would read well joined, but lies far away
    ring(canvas, 90)
    digits, _ = find_digits(ink_of(canvas), ring_scorer)
    assert len(digits) == 2


def test_a_frame_around_the_writing_is_not_a_digit():
    canvas = np.zeros((300, 300), np.uint8)
    cv2.rectangle(canvas, (30, 30), (270, 270), 1, 3)  # a sheet's outline inside the picture
    ring(canvas, 130, 120)
    digits, _ = find_digits(ink_of(canvas), ring_scorer)
    assert len(digits) == 1 and digits[0].box[0] >= 120


def test_without_a_network_a_mark_is_never_cut():
    canvas = np.zeros((90, 140), np.uint8)
    for x in (10, 38, 66):
        ring(canvas, x)
    digits, _ = find_digits(ink_of(canvas))
    assert len(digits) == 1


def test_the_runner_up_reading_and_its_margin_come_with_the_digits():
    canvas = np.zeros((90, 140), np.uint8)
    for x in (10, 38, 66):
        ring(canvas, x)
    digits, _ = find_digits(ink_of(canvas), ring_scorer)
    assert {d.rival for d in digits} == {digits[0].rival} and digits[0].rival != "000"
    assert digits[0].margin >= 0.7 - 1e-9  # any other reading has a digit more to pay for, or reads worse


def test_a_number_cropped_to_its_ink_keeps_the_digits_on_the_pictures_edge():
    """A tight crop: the outer rings touch the picture's edge; they are digits of the row, not the page's edge."""
    canvas = np.zeros((60, 110), np.uint8)
    for x in (0, 40, 79):  # the outer rings touch the left and the right edge, the middle one nothing
        ring(canvas, x, y=5)
    digits, _ = find_digits(ink_of(canvas), ring_scorer)
    assert len(digits) == 3, [d.box for d in digits]


def test_edges_along_the_border_still_go_beside_a_digit_inside():
    canvas = np.zeros((200, 300), np.uint8)
    canvas[0:200, 0:3] = 1  # the page's edge down the left border
    cv2.line(canvas, (150, 199), (299, 120), 1, 3)  # a table's edge across a corner
    ring(canvas, 120, 60)
    digits, _ = find_digits(ink_of(canvas), ring_scorer)
    assert len(digits) == 1 and digits[0].box[0] >= 110, [d.box for d in digits]
