"""Seeded procedural handwriting: digits drawn as pen strokes by made-up writers, to measure `lenet5 predict` on
handwriting that is not MNIST's.

`photo_scenes` draws MNIST test digits into photo-like scenes; the photo reader is tuned on those, so numbers
measured on them flatter it. This module writes the digits itself: each digit 0-9 is one or more strokes (control
points smoothed by a centripetal Catmull-Rom spline, with sharp corners where a pen turns), in the allographs
people use (a 1 as a bare bar, with a flag, or with flag and base; a 7 with or without a crossbar; a 4 open or
closed at the top; ...). Every scene has one writer, who keeps a slant, an aspect, a pen width, a pressure, a
hand's shakiness and one allograph per digit across a whole number.

Scenes come in the photo kinds of `photo_scenes` (the writer's glyphs go through its page, frame, light, camera
and encoding stages via `photo_scenes.compose`) and in two clean kinds:
- clean_png: black on white without noise, as a drawing program or a clean scan gives, 28-400 pixels tall;
- lowres_png: the digits on a coarse 8-16 cell tall grid of 16 grey levels (like old optical-digit datasets),
  enlarged by nearest-neighbour or bilinear interpolation, dark on light or light on dark;
- grid_png: each digit as an optical-digit dataset stores it (grid_digits.py: binarized, fitted into 32x32,
  counted into 8x8 cells of 0..16), the digits of a number side by side, enlarged to a PNG.

Everything is drawn from numpy Generators seeded by (seed, set, scene number) and encoded by Pillow, so the same
arguments give byte-identical files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

import photo_scenes
from grid_digits import CELLS, grid_png, optical_grid
from photo_scenes import Scene

PEN_KINDS: tuple[str, ...] = photo_scenes.KINDS + ("clean_png", "lowres_png", "grid_png")

_DIGIT_SET, _NUMBER_SET = 7301, 7302  # streams of random numbers, one per kind of set (photo_scenes uses 0-2)
_INSIDE = photo_scenes._INSIDE  # ink coverage above which a pixel counts for a digit's box
_MAX_NUMBER_WIDTH = 1000.0  # pixels: a photo scene's number must fit photo_scenes' frames (at most 1400 wide)


# ---------------------------------------------------------------------------------------------------- writers


@dataclass
class _Writer:
    """One person's hand: what stays the same across the digits of one number."""

    slant: float  # degrees, positive leaning right
    aspect: float  # width multiplier of every digit (narrow < 1 < wide)
    width: float  # pen width as a fraction of the digit's height
    pressure: float  # relative spread of the width along a stroke
    taper: float  # fraction of width lost at a stroke's ends (a fast pen lifting off)
    jitter: float  # standard deviation of control points, fraction of the height
    rotation: float  # degrees, the whole digit turned (positive anticlockwise)
    gap: float  # chance that a stroke stops short of where it should meet another
    overshoot: float  # chance that a stroke runs past where it meets another
    allographs: dict[int, int] = field(default_factory=dict)  # digit -> the variant this writer uses


def _writer(rng: np.random.Generator, width: float | None = None) -> _Writer:
    """A random writer; `width` (fraction of the height) fixes the pen, else hairline to marker (2-15%)."""
    if width is None:
        width = float(np.exp(rng.uniform(np.log(0.02), np.log(0.15))))
    return _Writer(
        slant=rng.uniform(-20, 25) if rng.random() < 0.8 else rng.uniform(-5, 12),
        aspect=float(np.exp(rng.uniform(np.log(0.72), np.log(1.35)))),
        width=width,
        pressure=rng.uniform(0.0, 0.35),
        taper=rng.uniform(0.0, 0.6) if rng.random() < 0.5 else 0.0,
        jitter=rng.uniform(0.004, 0.025),
        rotation=rng.normal(0, 4),
        gap=rng.uniform(0.0, 0.35) if rng.random() < 0.4 else 0.0,
        overshoot=rng.uniform(0.0, 0.5),
    )


# ---------------------------------------------------------------------------------------------------- shapes
# A digit is drawn in a box 1 tall (y from 0 at the top to 1 at the baseline) and `wide` wide (x from 0 to 1 is
# scaled to it). A stroke is a list of control points (x, y) or (x, y, "corner") for a sharp turn of the pen, and
# flags for which of its ends should meet another stroke (where gaps and overshoots happen).


@dataclass
class _Stroke:
    points: list  # [(x, y) or (x, y, "corner")]
    joins: tuple[bool, bool] = (False, False)  # (start, end) meets another stroke


def _oval(cx, cy, rx, ry, start, sweep, n=None) -> list:
    """Control points along an ellipse from angle `start` (degrees; 90 = top) turning anticlockwise as seen by
    `sweep` degrees (negative: clockwise)."""
    n = n or max(4, int(abs(sweep) / 30) + 1)
    angles = np.radians(start + np.linspace(0, sweep, n))
    return [(cx + rx * np.cos(a), cy - ry * np.sin(a)) for a in angles]


def _zero(rng, variant):
    close = rng.uniform(-18, 25)  # degrees past the start (negative: the oval left open)
    start = 90 + rng.uniform(-20, 45)
    points = _oval(0.5, 0.5, 0.5, 0.5, start, 360 + close, 14)
    if variant == 1:  # a lopsided oval, narrower at the bottom, as written fast
        points = [(x + 0.08 * (0.5 - y) * (x - 0.5) * 2, y) for x, y in points]
    return 0.62, [_Stroke(points)]


def _one(rng, variant):
    lean = rng.uniform(-0.06, 0.06)  # the bar curving a little
    bar = [(0.62, 0.0), (0.6 + lean, 0.5), (0.58, 1.0)]
    if variant == 0:
        return 0.12, [_Stroke([(0.5, 0.0), (0.5 + lean, 0.5), (0.5, 1.0)])]
    drop = rng.uniform(0.2, 0.32)  # how far below the top the flag starts: a short, steep flag, not a 7's bar
    strokes = [_Stroke([(0.22, drop), (0.42, drop * 0.45), (0.62, 0.0, "corner"), *bar[1:]])]
    if variant == 2:
        strokes.append(_Stroke([(0.15, 1.0), (0.58, 1.0), (1.0, 0.99)]))
        return 0.45, strokes
    return 0.42, strokes


def _two(rng, variant):
    top = [(0.04, 0.28), (0.22, 0.06), (0.52, 0.0), (0.84, 0.1), (0.9, 0.32), (0.7, 0.57)]
    if variant == 0:
        return 0.66, [_Stroke(top + [(0.34, 0.84), (0.02, 1.0, "corner"), (0.5, 0.98), (1.0, 0.97)])]
    loop = [(0.36, 0.82), (0.14, 0.97), (0.04, 0.92), (0.1, 0.83), (0.24, 0.86), (0.45, 0.96), (0.72, 1.0),
            (1.0, 0.96)]  # fmt: skip
    return 0.66, [_Stroke(top + loop)]


def _three(rng, variant):
    if variant == 0:  # rounded, with a pointed middle
        middle = rng.uniform(0.4, 0.5)
        points = [(0.06, 0.16), (0.35, 0.0), (0.7, 0.03), (0.86, 0.2), (0.72, 0.38), (0.36, middle, "corner"),
                  (0.76, middle + 0.07), (0.94, 0.74), (0.78, 0.94), (0.45, 1.0), (0.04, 0.87)]  # fmt: skip
        return 0.6, [_Stroke(points)]
    points = [(0.04, 0.02), (0.92, 0.0, "corner"), (0.4, 0.4, "corner"), (0.75, 0.46), (0.96, 0.7), (0.82, 0.93),
              (0.45, 1.0), (0.04, 0.87)]  # fmt: skip
    return 0.6, [_Stroke(points)]


def _four(rng, variant):
    bar = rng.uniform(0.58, 0.68)  # height of the crossbar
    stem = rng.uniform(0.62, 0.74)
    if variant == 0:  # open top: an L then the stem
        left = rng.uniform(0.04, 0.2)
        return 0.7, [
            _Stroke([(left + 0.1, 0.0), (left, bar, "corner"), (1.0, bar - 0.02)], (False, False)),
            _Stroke([(stem, 0.05), (stem, 0.55), (stem - 0.02, 1.0)]),
        ]
    return 0.7, [  # closed top: a triangle, its apex where the stem starts
        _Stroke([(stem - 0.02, 0.0), (0.0, bar, "corner"), (1.0, bar - 0.02)], (True, False)),
        _Stroke([(stem, 0.0), (stem, 0.55), (stem - 0.02, 1.0)], (True, False)),
    ]


def _five(rng, variant):
    belly = [(0.2, 0.46, "corner"), (0.45, 0.37), (0.78, 0.44), (0.92, 0.68), (0.78, 0.92), (0.45, 1.0), (0.06, 0.88)]
    if variant == 0:  # the top bar as a second stroke
        bar = _Stroke([(0.26, 0.02), (0.92, 0.0)], (True, False))
        return 0.62, [_Stroke([(0.24, 0.02)] + belly, (True, False)), bar]
    return 0.62, [_Stroke([(0.94, 0.0), (0.24, 0.03, "corner")] + belly)]


def _six(rng, variant):
    if variant == 0:  # a curved stem
        points = [(0.82, 0.02), (0.45, 0.12), (0.17, 0.4), (0.08, 0.72), (0.25, 0.96), (0.57, 1.0), (0.86, 0.84),
                  (0.84, 0.6), (0.56, 0.48), (0.26, 0.54), (0.1, 0.7)]  # fmt: skip
    else:  # a straight stem
        points = [(0.72, 0.0), (0.42, 0.3), (0.14, 0.68), (0.26, 0.96), (0.58, 1.0), (0.86, 0.82), (0.8, 0.58),
                  (0.5, 0.5), (0.24, 0.58), (0.14, 0.7)]  # fmt: skip
    return 0.6, [_Stroke(points, (False, True))]


def _seven(rng, variant):
    corner = (1.0, rng.uniform(0.0, 0.04), "corner")
    bend = rng.uniform(-0.06, 0.06)  # a stem curving a little
    points = [(0.0, 0.06), (0.5, 0.02), corner, (0.72 + bend, 0.4), (0.42, 1.0)]
    if rng.random() < 0.3:  # a little tick where the pen comes down on the bar
        points = [(0.02, 0.18), (0.0, 0.06, "corner")] + points[1:]
    strokes = [_Stroke(points)]
    if variant == 1:  # crossbar through the stem at mid height
        strokes.append(_Stroke([(0.4, 0.53), (0.95, 0.5)]))
    return 0.68, strokes


def _eight(rng, variant):
    if variant == 0:  # one figure-eight stroke, crossing itself in the middle
        points = [(0.78, 0.1), (0.5, 0.0), (0.2, 0.1), (0.22, 0.32), (0.5, 0.48), (0.82, 0.66), (0.84, 0.9),
                  (0.5, 1.0), (0.16, 0.9), (0.18, 0.66), (0.5, 0.48), (0.76, 0.3), (0.8, 0.1)]  # fmt: skip
        return 0.58, [_Stroke(points, (True, True))]
    waist = rng.uniform(0.44, 0.5)
    top = _oval(0.5, waist / 2, 0.36, waist / 2, 270, 360 + rng.uniform(-10, 20), 12)
    bottom = _oval(0.5, (1 + waist) / 2, 0.48, (1 - waist) / 2, 90, 360 + rng.uniform(-10, 20), 12)
    return 0.58, [_Stroke(top, (True, True)), _Stroke(bottom, (True, True))]


def _nine(rng, variant):
    loop = [(0.86, 0.14), (0.55, 0.0), (0.2, 0.06), (0.1, 0.26), (0.28, 0.44), (0.62, 0.43), (0.88, 0.2, "corner")]
    if variant == 0:  # a curved stem
        stem = [(0.88, 0.55), (0.78, 0.82), (0.58, 1.0)]
    else:  # a straight stem
        stem = [(0.87, 0.6), (0.86, 1.0)]
    return 0.6, [_Stroke(loop + stem, (True, False))]


_SHAPES = (_zero, _one, _two, _three, _four, _five, _six, _seven, _eight, _nine)
_VARIANTS = (2, 3, 2, 2, 2, 2, 2, 2, 2, 2)  # allographs per digit
_VARIANT_ODDS = {1: (0.3, 0.45, 0.25), 7: (0.65, 0.35), 4: (0.55, 0.45)}  # how common each allograph is


def _digit_strokes(digit: int, writer: _Writer, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """The strokes of `digit` in this writer's hand, in height units: [(points (n, 2), pen widths (n,))], the
    digit's box about 1 tall with its top-left near (0, 0)."""
    if digit not in writer.allographs:
        odds = _VARIANT_ODDS.get(digit)
        writer.allographs[digit] = int(rng.choice(_VARIANTS[digit], p=odds))
        if digit == 4 and writer.slant - writer.rotation < -5:
            writer.allographs[digit] = 0  # a closed 4 leaning left looks like an A: such writers leave it open
    wide, strokes = _SHAPES[digit](rng, writer.allographs[digit])
    wide *= writer.aspect * rng.uniform(0.93, 1.07)
    shear = np.tan(np.radians(writer.slant + rng.normal(0, 2)))
    turn = np.radians(writer.rotation + rng.normal(0, 2))
    rotate = np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])  # anticlockwise on screen
    out = []
    for stroke in strokes:
        control = np.array([p[:2] for p in stroke.points], np.float64) * (wide, 1.0)
        control += rng.normal(0, writer.jitter, control.shape)
        corners = [i for i, p in enumerate(stroke.points) if len(p) > 2]
        path = _smooth(control, corners)
        for end, joins in ((0, stroke.joins[0]), (1, stroke.joins[1])):
            if joins and rng.random() < writer.gap:
                path = _trim(path, rng.uniform(0.03, 0.08), end)
            elif rng.random() < (writer.overshoot if joins else writer.overshoot / 3):
                path = _extend(path, rng.uniform(0.01, 0.06 if joins else 0.03), end)
        path = path - (wide / 2, 0.5)
        path[:, 0] -= shear * path[:, 1]  # leaning right: the top (negative y) moves right
        path = path @ rotate.T + (wide / 2, 0.5)
        out.append((path, _pen(path, writer, rng)))
    return out


def _smooth(control: np.ndarray, corners: list[int]) -> np.ndarray:
    """(m, 2) points densely along a centripetal Catmull-Rom spline through the control points, split at the
    corners so the pen turns sharply there."""
    pieces, start = [], 0
    for corner in corners + [len(control) - 1]:
        if corner > start:
            pieces.append(_catmull_rom(control[start : corner + 1]))
        start = corner
    return np.vstack(pieces)


def _catmull_rom(p: np.ndarray, step: float = 0.006) -> np.ndarray:
    """(m, 2) points every ~`step` along the centripetal Catmull-Rom spline through p (n, 2); the ends are
    extended straight so that the curve reaches them."""
    if len(p) == 2:
        n = max(2, int(np.linalg.norm(p[1] - p[0]) / step))
        return p[0] + (p[1] - p[0]) * np.linspace(0, 1, n)[:, None]
    q = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    for i in range(len(q) - 3):
        p0, p1, p2, p3 = q[i : i + 4]
        t1 = np.linalg.norm(p1 - p0) ** 0.5 + 1e-6
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5 + 1e-6
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5 + 1e-6
        n = max(2, int(np.linalg.norm(p2 - p1) / step))
        t = np.linspace(t1, t2, n, endpoint=False)[:, None]
        a1 = (t1 - t) / t1 * p0 + t / t1 * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / t2 * a1 + t / t2 * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    out.append(p[-1:])
    return np.vstack(out)


def _trim(path: np.ndarray, length: float, end: int) -> np.ndarray:
    """The path without `length` (height units) at its start (end=0) or its end (end=1); at least half remains."""
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    keep = max(2, len(path) // 2)
    if end == 0:
        cut = min(int(np.searchsorted(np.cumsum(steps), length)), len(path) - keep)
        return path[cut:]
    cut = min(int(np.searchsorted(np.cumsum(steps[::-1]), length)), len(path) - keep)
    return path[: len(path) - cut]


def _extend(path: np.ndarray, length: float, end: int) -> np.ndarray:
    """The path run on straight by `length` past its start (end=0) or its end (end=1), along its direction there."""
    if end == 0:
        return _extend(path[::-1], length, 1)[::-1]
    direction = path[-1] - path[max(0, len(path) - 6)]
    direction /= np.linalg.norm(direction) + 1e-9
    more = path[-1] + direction * np.linspace(0, length, max(2, int(length / 0.006)))[1:, None]
    return np.vstack([path, more])


def _pen(path: np.ndarray, writer: _Writer, rng: np.random.Generator) -> np.ndarray:
    """(n,) pen widths along the path (fraction of the height): the writer's width, varying with pressure along
    the stroke and thinner at tapered ends."""
    along = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    phase, period = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.5, 1.5, 2)
    turns = 2 * np.pi * along[:, None] / period + phase  # (n, 2)
    wave = 0.6 * np.sin(turns[:, 0]) + 0.4 * np.sin(turns[:, 1])
    width = writer.width * (1 + writer.pressure * wave)
    if writer.taper:
        ends = np.minimum(along, along[-1] - along) / 0.12  # 0 at the ends, 1 from 0.12 heights in
        width *= 1 - writer.taper * np.clip(1 - ends, 0, 1)
    return width


# ---------------------------------------------------------------------------------------------------- drawing


def _render(strokes, scale: float, origin) -> tuple[np.ndarray, tuple[int, int]]:
    """Ink coverage of strokes [(points in height units, widths)] drawn `scale` pixels per unit: (h, w) float32
    in [0, 1] and the (x, y) pixel of its top-left, where the point `origin` lands at pixel (0, 0). The strokes
    are drawn as round-capped segments on a canvas `ss` times finer and averaged down, which anti-aliases them."""
    ss = int(np.clip(np.ceil(480 / scale), 2, 8))
    points = np.vstack([p for p, _ in strokes]) * scale - origin  # pixels
    pad = max(w.max() for _, w in strokes) * scale / 2 + 2
    x0, y0 = (int(np.floor(v)) for v in points.min(0) - pad)
    x1, y1 = (int(np.ceil(v)) for v in points.max(0) + pad)
    canvas = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.uint8)
    fixed = 16  # 4 bits of sub-pixel precision for cv2's shift
    for path, widths in strokes:
        xy = np.round(((path * scale - origin) - (x0, y0)) * ss * fixed).astype(np.int64)
        thickness = np.maximum(1, np.round(widths * scale * ss)).astype(int)
        for i in range(len(xy) - 1):
            a, b = (int(xy[i, 0]), int(xy[i, 1])), (int(xy[i + 1, 0]), int(xy[i + 1, 1]))
            cv2.line(canvas, a, b, 255, int(thickness[i]), cv2.LINE_8, 4)
    small = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255, (x0, y0)


@dataclass
class _Number:
    """The digits of one number placed in height units: per digit its strokes, and the scale to draw it at."""

    digits: list[list[tuple[np.ndarray, np.ndarray]]]
    width: float  # height units from the leftmost ink to the rightmost
    tall: float  # height units from the highest ink to the lowest


def _place(text: str, writer: _Writer, rng: np.random.Generator, least_gap: float = -0.06) -> _Number:
    """The digits of `text` written left to right: heights within 10% of each other, a baseline wandering by a few
    percent of the height, and gaps from clearly apart to touching and slightly overlapping boxes (down to
    `least_gap` heights: negative where boxes overlap)."""
    spacing = rng.uniform(0.02, 0.24)  # the writer's usual gap, in heights
    shear = np.tan(np.radians(writer.slant - writer.rotation))  # the lean of upright strokes
    baseline, slope = 0.0, rng.normal(0, 0.02)
    placed, right = [], 0.0
    for i, c in enumerate(text):
        size = rng.uniform(0.9, 1.1)
        strokes = [(p * size, w * size) for p, w in _digit_strokes(int(c), writer, rng)]
        # the gaps are measured across the slant, as a writer spaces slanted digits
        upright = [p[:, 0] + shear * (p[:, 1] - 0.5) for p, _ in strokes]
        low = min((x - w / 2).min() for x, (_, w) in zip(upright, strokes))
        high = max((x + w / 2).max() for x, (_, w) in zip(upright, strokes))
        if i:
            baseline = float(np.clip(baseline + slope + rng.normal(0, 0.025), -0.08, 0.08))
            gap = float(np.clip(spacing + rng.normal(0, 0.05), least_gap, 0.35))  # a tenth of them 0 or less
            shift = right + gap - low
        else:
            shift = -low
        move = np.array([shift, baseline + 1 - size])  # the digit's bottom on the baseline
        placed.append([(p + move, w) for p, w in strokes])
        right = high + shift
    ink = np.vstack([np.vstack([p - w[:, None] / 2, p + w[:, None] / 2]) for digit in placed for p, w in digit])
    return _Number(placed, float(np.ptp(ink[:, 0])), float(np.ptp(ink[:, 1])))


def _draw(number: _Number, height: float) -> tuple[np.ndarray, list[np.ndarray], list[tuple[np.ndarray, tuple]]]:
    """The number drawn `height` pixels per unit: (coverage (h, w) float32 of all digits, per digit (n, 2) float64
    (x, y) of its pixels over _INSIDE, per digit (its own coverage, its (x, y) in the whole))."""
    all_points = np.vstack([p for digit in number.digits for p, _ in digit])
    origin = np.floor(all_points.min(0) * height) - 4
    glyphs = [_render(digit, height, origin) for digit in number.digits]
    right = max(x + g.shape[1] for g, (x, _) in glyphs)
    bottom = max(y + g.shape[0] for g, (_, y) in glyphs)
    left, top = min(x for _, (x, _) in glyphs), min(y for _, (_, y) in glyphs)
    coverage = np.zeros((bottom - top, right - left), np.float32)
    points, parts = [], []
    for glyph, (x, y) in glyphs:
        x, y = x - left, y - top
        region = coverage[y : y + glyph.shape[0], x : x + glyph.shape[1]]
        np.maximum(region, glyph, out=region)
        ys, xs = np.nonzero(glyph > _INSIDE)
        points.append(np.stack([xs + x, ys + y], 1).astype(np.float64))
        parts.append((glyph, (x, y)))
    rows, cols = np.flatnonzero(coverage.max(1) > 0.01), np.flatnonzero(coverage.max(0) > 0.01)
    y0, x0 = rows[0], cols[0]
    coverage = coverage[y0 : rows[-1] + 1, x0 : cols[-1] + 1]
    points = [p - (x0, y0) for p in points]
    parts = [(g, (x - x0, y - y0)) for g, (x, y) in parts]
    return np.ascontiguousarray(coverage), points, parts


def pen_glyph(digit: int, height: float = 64.0, seed: int = 0) -> np.ndarray:
    """One digit by a random writer, `height` pixels tall: float32 ink coverage in [0, 1], tightly cropped."""
    rng = np.random.default_rng([seed, 7300, digit])
    return _draw(_place(str(digit), _writer(rng), rng), height)[0]


# ---------------------------------------------------------------------------------------------------- scenes


def pen_digit_scenes(per_kind: int, seed: int = 0, kinds=PEN_KINDS) -> list[Scene]:
    """per_kind single-digit scenes of every kind, kind by kind; the digits cycle through 0-9 in shuffled rounds."""
    _check(kinds)
    total = per_kind * len(kinds)
    shuffle = np.random.default_rng([seed, _DIGIT_SET])
    order = np.concatenate([shuffle.permutation(10) for _ in range(-(-total // 10))])  # rounds of all ten digits
    scenes = []
    for i in range(total):
        rng = np.random.default_rng([seed, _DIGIT_SET, i])
        scenes.append(_scene(kinds[i // per_kind], str(order[i]), rng))
    return scenes


def pen_number_scenes(n: int, seed: int = 0, kinds=PEN_KINDS) -> list[Scene]:
    """n scenes of a number of 2 to 5 digits (a year, an amount, a house number), kinds cycled."""
    _check(kinds)
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([seed, _NUMBER_SET, i])
        scenes.append(_scene(kinds[i % len(kinds)], _number_text(rng), rng))
    return scenes


def pen_sheet(scenes, path) -> None:
    """A contact sheet PNG of the scenes (see photo_scenes.scene_sheet)."""
    photo_scenes.scene_sheet(scenes, Path(path))


def _check(kinds) -> None:
    unknown = set(kinds) - set(PEN_KINDS)
    if unknown:
        raise ValueError(f"unknown scene kinds {sorted(unknown)}; known: {PEN_KINDS}")


def _number_text(rng: np.random.Generator) -> str:
    """2-5 digits: a year in a quarter of them, else any digits with a leading zero now and then (a code)."""
    if rng.random() < 0.25:
        return str(int(rng.integers(1950, 2040)))
    n = int(rng.integers(2, 6))
    first = rng.integers(0, 10) if rng.random() < 0.1 else rng.integers(1, 10)
    return str(first) + "".join(str(d) for d in rng.integers(0, 10, n - 1))


def _scene(kind: str, text: str, rng: np.random.Generator) -> Scene:
    if kind == "clean_png":
        return _clean(text, rng)
    if kind == "lowres_png":
        return _lowres(text, rng)
    if kind == "grid_png":
        return _grid(text, rng)

    def write(height: float, ink, rng: np.random.Generator) -> photo_scenes._Layout:
        # the pen's width follows the ink: a pen's or pencil's line, a marker's or felt-tip's broad stroke
        width = ink.pen * rng.uniform(0.45, 1.3) if ink.pen else rng.uniform(0.07, 0.15)
        writer = _writer(rng, width=max(width, 1.3 / height))
        number = _place(text, writer, rng)
        height = min(height, _MAX_NUMBER_WIDTH / number.width)
        coverage, points, _ = _draw(number, height)
        return photo_scenes._Layout(coverage, points)

    data, suffix, boxes = photo_scenes.compose(kind, write, len(text), rng)
    return Scene(kind, text, data, suffix, boxes, [])


def _clean(text: str, rng: np.random.Generator) -> Scene:
    """Black on white without noise: 28-400 pixels tall, a tight (0-3 px) or loose margin, greyscale or RGB,
    anti-aliased or (a tenth of them) hard-edged like a bitmap drawing program."""
    writer = _writer(rng)
    number = _place(text, writer, rng)
    tall = float(np.exp(rng.uniform(np.log(28), np.log(400))))  # pixels from the top of the ink to its bottom
    height = min(tall / number.tall, 1400 / number.width)
    coverage, points, _ = _draw(number, height)
    if rng.random() < 0.1:
        coverage = (coverage > 0.5).astype(np.float32)
    h, w = coverage.shape
    if rng.random() < 0.4:
        margins = rng.integers(0, 4, 4)
    else:
        margins = np.round(rng.uniform(0.05, 1.0, 4) * h).astype(int)
    left, top, right, bottom = (int(m) for m in margins)
    image = np.full((h + top + bottom, w + left + right), 255, np.uint8)
    image[top : top + h, left : left + w] = np.round(255 * (1 - coverage)).astype(np.uint8)
    boxes = [_box(p + (left, top)) for p in points]
    picture = Image.fromarray(image)
    if rng.random() < 0.3:
        picture = picture.convert("RGB")
    return Scene("clean_png", text, _png(picture), ".png", boxes, [])


def _lowres(text: str, rng: np.random.Generator) -> Scene:
    """The number on a grid of 16 grey levels, 10-16 cells tall (with an empty cell around it in some), as old
    optical-digit datasets store digits, then enlarged a whole number of times to about 64-512 pixels tall by
    nearest-neighbour or bilinear interpolation; dark on light or light on dark. A digit's box is the cells where
    its own ink reaches a fifth of full level. Fewer cells, narrow digits or strokes much thinner or thicker than a
    cell lose what tells a 3 from a 5 or a 6 from a 0, so the writer here is chosen to keep it."""
    inner = int(np.clip(np.round(10 + 7 * rng.random() ** 0.7), 10, 16))  # cells the digits are tall
    # about a cell wide: thinner strokes fade in the cells, thicker ones fill the loops
    writer = _writer(rng, width=float(np.clip(1.1 / inner * rng.uniform(0.8, 1.2), 0.06, 0.12)))
    writer.aspect = max(writer.aspect, 0.95)
    writer.slant = float(np.clip(writer.slant, -10, 15))  # digits written in a form's boxes stand more upright
    number = _place(text, writer, rng, least_gap=2 / inner)  # digits less than two cells apart merge in the cells
    margin = int(rng.integers(0, 2)) if inner <= 14 else 0  # empty cells around the digits, at most 16 in all
    cells = inner + 2 * margin
    draw_height = 16.0 * inner  # 16 pixels per cell, averaged down
    coverage, _, parts = _draw(number, draw_height)
    h, w = coverage.shape
    per_cell = h / inner
    columns = max(1, round(w / per_cell))
    size = (columns + 2 * margin, cells)

    def grid(field: np.ndarray, at=(0, 0)) -> np.ndarray:
        full = _paste((h, w), field, at)
        small = cv2.resize(full, (columns, inner), interpolation=cv2.INTER_AREA)
        return np.pad(small, margin)

    whole = grid(coverage)
    gain = 1 / max(1e-6, float(np.percentile(whole[whole > 0.05], 90)))
    levels = np.clip(np.round(whole * gain * 15), 0, 15)  # 0..15
    factor = max(1, round(float(np.exp(rng.uniform(np.log(64), np.log(512)))) / cells))
    light_on_dark = rng.random() < 0.35
    tone = levels / 15 if light_on_dark else 1 - levels / 15
    big = (tone * 255).astype(np.uint8)
    interpolation = cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR
    big = cv2.resize(big, (size[0] * factor, size[1] * factor), interpolation=interpolation)
    boxes = []
    for glyph, at in parts:
        own = np.clip(np.round(grid(glyph, at) * gain * 15), 0, 15) >= 3
        rows, cols = np.flatnonzero(own.any(1)), np.flatnonzero(own.any(0))
        boxes.append((int(cols[0]) * factor, int(rows[0]) * factor, (int(cols[-1]) + 1) * factor,
                      (int(rows[-1]) + 1) * factor))  # fmt: skip
    return Scene("lowres_png", text, _png(Image.fromarray(big)), ".png", boxes, [])


def _grid(text: str, rng: np.random.Generator) -> Scene:
    """Each digit of the number written by one writer (a pen about an eighth of the height, upright enough for a
    form's boxes), stored as an 8x8 optical-digit grid; the grids side by side, enlarged to a PNG. A digit's box
    is its grid's cells with ink."""
    writer = _writer(rng, width=float(rng.uniform(0.08, 0.14)))
    writer.slant = float(np.clip(writer.slant, -10, 15))
    grids = []
    for digit in text:
        _, _, parts = _draw(_place(digit, writer, rng), 32.0 * CELLS)
        grids.append(optical_grid(parts[0][0]))
    levels = np.hstack(grids)
    data = grid_png(levels, rng)
    factor = Image.open(io.BytesIO(data)).size[0] // levels.shape[1]
    boxes = []
    for i, grid in enumerate(grids):
        rows, cols = np.flatnonzero(grid.any(1)), np.flatnonzero(grid.any(0))
        x = i * CELLS
        boxes.append(((x + int(cols[0])) * factor, int(rows[0]) * factor, (x + int(cols[-1]) + 1) * factor,
                      (int(rows[-1]) + 1) * factor))  # fmt: skip
    return Scene("grid_png", text, data, ".png", boxes, [])


def _paste(shape, glyph: np.ndarray, at) -> np.ndarray:
    """(h, w) float32 zeros with the glyph's coverage put at (x, y), the parts outside left off."""
    full = np.zeros(shape, np.float32)
    x, y = at
    gy0, gx0 = max(0, -y), max(0, -x)
    y1, x1 = min(shape[0], y + glyph.shape[0]), min(shape[1], x + glyph.shape[1])
    full[y + gy0 : y1, x + gx0 : x1] = glyph[gy0 : y1 - y, gx0 : x1 - x]
    return full


def _box(points: np.ndarray) -> tuple[int, int, int, int]:
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return int(x0), int(y0), int(x1) + 1, int(y1) + 1


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
