"""Digits stored the way old optical-digit datasets store them: an 8x8 grid of 17 grey levels, enlarged to a PNG.

Such datasets scanned a form, binarized each digit's box, fitted it into 32x32 pixels (height filled, aspect
kept, centred) and counted the ink pixels in each 4x4 block: 8x8 cells of 0..16. A user who hands such a digit to
`lenet5 predict` enlarges it first: by repeating pixels (nearest neighbour) or smoothly (bilinear, bicubic), to
anything from 32 to 512 pixels, dark on light or light on dark.

``optical_grid`` makes the grid from any ink coverage (MNIST digits here, pen strokes in pen_digits.py);
``grid_png`` enlarges it; ``mnist_grid_scenes`` gives single-digit scenes of MNIST digits, the tuning set's
kind (benchmarks/reject_rule.py).
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from photo_scenes import Scene

CELLS, BLOCK = 8, 4  # an 8x8 grid of 4x4 blocks: a 32x32 bitmap
_GRID_SCENES = 7401  # stream of random numbers of the MNIST grid scenes


def optical_grid(coverage: np.ndarray) -> np.ndarray:
    """float (h, w) ink coverage in 0..1 -> int (8, 8) in 0..16: binarized at half coverage, the ink's box fitted
    into 32x32 (the longer side filled, centred), ink pixels counted per 4x4 block."""
    ink = np.asarray(coverage, np.float32) >= 0.5
    ys, xs = np.nonzero(ink)
    if ys.size == 0:
        return np.zeros((CELLS, CELLS), np.int64)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)
    side = CELLS * BLOCK
    scale = side / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    fitted = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR) >= 0.5
    bitmap = np.zeros((side, side), np.int64)
    y0, x0 = (side - h) // 2, (side - w) // 2
    bitmap[y0 : y0 + h, x0 : x0 + w] = fitted
    return bitmap.reshape(CELLS, BLOCK, CELLS, BLOCK).sum(axis=(1, 3))


def grid_png(levels: np.ndarray, rng: np.random.Generator) -> bytes:
    """int (r, c) in 0..16 -> PNG bytes of the grid enlarged 4-64 times (nearest, bilinear or bicubic), dark
    ink on light or (a third of them) light on dark."""
    tone = np.clip(np.asarray(levels, np.float32) / 16.0, 0.0, 1.0)
    if rng.random() >= 1 / 3:
        tone = 1.0 - tone
    small = np.round(tone * 255.0).astype(np.uint8)
    factor = int(np.exp(rng.uniform(np.log(4), np.log(64))))
    interpolation = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(3))]
    big = cv2.resize(small, (small.shape[1] * factor, small.shape[0] * factor), interpolation=interpolation)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    return buf.getvalue()


def mnist_grid_scenes(images, labels, n: int, seed: int = 0) -> list[Scene]:
    """n single-digit grid PNGs of MNIST digits (kind "grid_png"), each of another digit while there are enough."""
    chosen = np.random.default_rng([seed, _GRID_SCENES]).choice(len(images), n, replace=n > len(images))
    scenes = []
    for i, index in enumerate(chosen):
        rng = np.random.default_rng([seed, _GRID_SCENES, i])
        levels = optical_grid(np.asarray(images[index], np.float32) / 255.0)
        data = grid_png(levels, rng)
        size = Image.open(io.BytesIO(data)).size
        scenes.append(Scene("grid_png", str(int(labels[index])), data, ".png", [(0, 0, *size)], [int(index)]))
    return scenes
