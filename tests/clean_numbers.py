"""Clean pictures of MNIST test digits cropped to their ink: what a drawing program, a screenshot or a tight
crop of a scan gives. Black on white, no noise, the picture's edge touching the outer digits' strokes (or a few
pixels away), 28 to 400 pixels tall, PNG. The tuning set's clean kind (benchmarks/reject_rule.py): the pen set's
clean_png (pen_digits.py) is drawn by other code, for reporting.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from photo_scenes import Scene

_CLEAN_SCENES = 7501  # stream of random numbers of these scenes


def mnist_clean_scenes(images, labels, n: int, seed: int = 0, lengths=(1, 5)) -> list[Scene]:
    """n pictures of lengths[0]..lengths[1] MNIST test digits side by side, from a gap to a slight overlap."""
    by_digit = [np.flatnonzero(np.asarray(labels) == d) for d in range(10)]
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([seed, _CLEAN_SCENES, i])
        count = int(rng.integers(lengths[0], lengths[1] + 1))
        text = str(rng.integers(1, 10)) + "".join(str(d) for d in rng.integers(0, 10, count - 1))
        indices = [int(rng.choice(by_digit[int(c)])) for c in text]
        scenes.append(_scene(text, [np.asarray(images[k], np.float32) / 255.0 for k in indices], indices, rng))
    return scenes


def _scene(text: str, glyphs: list[np.ndarray], indices: list[int], rng: np.random.Generator) -> Scene:
    crops = []
    for g in glyphs:
        ys, xs = np.nonzero(g > 0.1)
        crops.append(g[:, xs.min() : xs.max() + 1])
    gaps = rng.integers(-2, 7, len(crops) - 1)  # MNIST pixels between neighbours: slightly touching to apart
    width = sum(c.shape[1] for c in crops) + int(gaps.sum()) + 2
    line = np.zeros((28, max(width, 1)), np.float32)
    x, boxes = 0, []
    for k, c in enumerate(crops):
        line[:, x : x + c.shape[1]] = np.maximum(line[:, x : x + c.shape[1]], c)
        ys = np.flatnonzero(c.max(1) > 0.1)
        boxes.append((x, int(ys[0]), x + c.shape[1], int(ys[-1]) + 1))
        x += c.shape[1] + (int(gaps[k]) if k < len(gaps) else 0)
    pad = int(rng.integers(0, 4)) if rng.random() < 0.5 else 0  # often cropped to the ink itself
    padded = np.pad(line, pad)
    ys, xs = np.nonzero(padded > 0.1)
    y0, y1, x0, x1 = ys.min() - pad, ys.max() + 1 + pad, xs.min() - pad, xs.max() + 1 + pad
    crop = padded[y0:y1, x0:x1]
    x0, y0 = x0 - pad, y0 - pad  # the crop's corner in the line's coordinates
    height = int(np.exp(rng.uniform(np.log(28), np.log(400))))
    scale = height / crop.shape[0]
    size = (max(1, round(crop.shape[1] * scale)), height)
    big = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    picture = np.round(255 * (1 - np.clip(big, 0, 1))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "PNG")
    boxes = [
        (round((a - x0) * scale), round((b - y0) * scale), round((c - x0) * scale), round((d - y0) * scale))
        for a, b, c, d in boxes
    ]
    return Scene("clean_png", text, buf.getvalue(), ".png", boxes, indices)
