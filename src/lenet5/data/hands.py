"""Many hands from MNIST's: distortions that cover how people's handwriting differs, and the fields a photo
reader actually hands the network.

MNIST's writers are a few hundred American clerks and students, scanned in one way. People who photograph
their own digits write with a hairline pen or a marker, slant their digits left or right, write them narrow or
wide, leave gaps where strokes should meet; and the reader (``data.digits``) does not crop them the way
MNIST was cropped: a field may be a little off-centre or mis-scaled, or carry a sliver of a neighbour at its
edge. ``hand_style`` draws one MNIST digit the way another hand and the reader would give it:

1. the digit is redrawn at twice MNIST's resolution (56x56), where strokes can be thinned or widened by a
   grey erosion or dilation (hairline to marker);
2. broken strokes: a short gap is erased across the ink in some of them;
3. one affine map for the hand: slant (shear), aspect (narrow to wide), a small rotation;
4. sometimes a neighbour digit, placed left or right, so close that a sliver of it lies inside the digit's box;
5. sometimes a coarse grid: the digit stored as a few cells of 17 grey levels (as old optical-digit datasets
   and low-resolution scans keep it), enlarged smoothly again as the page cleaning enlarges such a grid;
6. the reader's own recipe (``digits.mnist_field``: crop to the ink, longer side to about 20 px, centre of
   mass at (14, 14)), with its mistakes: the box a little too large or small, the field shifted a pixel or two;
7. the ink's look after the page cleaning: saturated cores (strokes as dark as can be), a little blur.

Everything is drawn from the generator passed in: the same generator state gives the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lenet5.data.digits import BOX, SIZE, mnist_field

WORK = 56  # the working resolution: MNIST's 28x28 drawn at twice its size


@dataclass(frozen=True)
class HandStyle:
    """The ranges one distorted digit's parameters are drawn from (uniformly unless said otherwise)."""

    width: tuple[float, float] = (-2.0, 3.0)  # stroke change in working pixels: < 0 thinner, > 0 a marker
    slant: tuple[float, float] = (-0.45, 0.35)  # horizontal shear (x += slant * (centre - y)): > 0 leans right
    aspect: tuple[float, float] = (0.65, 1.35)  # width factor against height (log-uniform)
    rotation: tuple[float, float] = (-12.0, 12.0)  # degrees
    broken: float = 0.15  # chance of a gap erased across a stroke
    neighbour: float = 0.2  # chance of a sliver of a neighbour digit inside the box
    box: tuple[float, float] = (16.5, 22.5)  # the longer side in the field (MNIST's: 20)
    shift: float = 1.5  # field shifted by up to this many pixels each way after centring
    saturate: float = 0.5  # chance of strokes saturated (page cleaning's ink at full strength)
    blur: float = 0.15  # chance of a small Gaussian blur
    coarse: float = 0.1  # chance of the digit kept as a coarse grid (an 8x8 optical-digit scan)
    cells: tuple[int, int] = (7, 16)  # cells along the grid's longer side


def hand_style(
    images: np.ndarray, rng: np.random.Generator, style: HandStyle = HandStyle(), neighbours: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (N, 28, 28) MNIST digits -> uint8 (N, 28, 28) as other hands and the reader would give them.
    ``neighbours`` (uint8 (M, 28, 28), default: the batch itself) lend the slivers at the edges."""
    images = np.asarray(images, np.uint8)
    pool = images if neighbours is None else np.asarray(neighbours, np.uint8)
    return np.stack([_one(image, pool, rng, style) for image in images])


def _one(image: np.ndarray, pool: np.ndarray, rng: np.random.Generator, style: HandStyle) -> np.ndarray:
    ink = _redraw(image, rng, style)
    ink = _affine(ink, rng, style)  # float32 (S, S) in 0..1, canvas larger than the digit
    ys, xs = np.nonzero(ink > 0.2)
    if ys.size == 0:
        return image.copy()
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    if rng.random() < style.neighbour:
        ink = _with_neighbour(ink, box, pool[rng.integers(len(pool))], rng, style)
    x0, y0, x1, y1 = box
    crop = ink[y0:y1, x0:x1]
    if rng.random() < style.coarse:
        crop = coarse_grid(crop, rng, style)
    return as_read(crop, rng, style)


def coarse_grid(crop: np.ndarray, rng: np.random.Generator, style: HandStyle) -> np.ndarray:
    """float (h, w) ink -> the same ink kept as a grid of ``style.cells`` cells along its longer side, each cell
    one of 17 grey levels (the share of its pixels that are ink, as optical-digit datasets count a binarized
    scan, or its average ink), enlarged back to (h, w) by linear interpolation, as ``page`` enlarges a grid. Its
    strokes are not brought to full strength here, as the page cleaning would: a thin grid comes out faint."""
    h, w = crop.shape
    cells = int(rng.integers(style.cells[0], style.cells[1] + 1))
    size = (max(1, round(w * cells / max(h, w))), max(1, round(h * cells / max(h, w))))
    binary = rng.random() < 0.5
    ink = (crop > 0.5).astype(np.float32) if binary else crop.astype(np.float32)
    grid = cv2.resize(ink, size, interpolation=cv2.INTER_AREA)
    if float(grid.max()) < 0.05:  # a hairline lost in the cells: the digit stays as it was
        return crop
    grid = np.round(grid / max(float(grid.max()), 1e-6) * 16.0) / 16.0
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)


def as_read(crop: np.ndarray, rng: np.random.Generator, style: HandStyle) -> np.ndarray:
    """float (h, w) ink cropped to its box -> uint8 (28, 28) as the reader would hand it to the network: maybe
    saturated, the reader's recipe with a box a little off and a shift, maybe a little blurred."""
    if rng.random() < style.saturate:
        crop = np.clip(crop * rng.uniform(1.3, 2.5), 0.0, 1.0)
    field = field_of(crop, rng.uniform(*style.box), rng.uniform(-style.shift, style.shift, 2))
    if rng.random() < style.blur:
        field = cv2.GaussianBlur(field, (3, 3), rng.uniform(0.4, 0.8))
    return np.round(np.clip(field, 0.0, 1.0) * 255.0).astype(np.uint8)


def _redraw(image: np.ndarray, rng: np.random.Generator, style: HandStyle) -> np.ndarray:
    """uint8 (28, 28) -> float32 (56, 56) in 0..1 with thinner or wider strokes, maybe a gap in one."""
    ink = cv2.resize(image.astype(np.float32) / 255.0, (WORK, WORK), interpolation=cv2.INTER_CUBIC)
    ink = np.clip(ink, 0.0, 1.0)
    change = rng.uniform(*style.width)
    radius = int(round(abs(change)))
    if radius:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        thinner = cv2.erode(ink, kernel)
        if change < 0 and thinner.max() > 0.5:  # never erode a digit away
            ink = thinner / thinner.max()  # the page cleaning makes a stroke's core full strength
        elif change > 0:
            ink = cv2.dilate(ink, kernel)
    if rng.random() < style.broken:
        ys, xs = np.nonzero(ink > 0.5)
        if ys.size:
            i = rng.integers(ys.size)
            angle = rng.uniform(0, np.pi)
            half = rng.uniform(4, 9)
            dx, dy = half * np.cos(angle), half * np.sin(angle)
            gap = max(1, int(round(rng.uniform(1.5, 3.5))))
            cv2.line(ink, (int(xs[i] - dx), int(ys[i] - dy)), (int(xs[i] + dx), int(ys[i] + dy)), 0.0, gap)
    return ink


def _affine(ink: np.ndarray, rng: np.random.Generator, style: HandStyle) -> np.ndarray:
    """Slant, aspect and rotation about the centre, onto a canvas with room for them: float32 (84, 84)."""
    side = WORK + WORK // 2
    c = WORK / 2.0
    aspect = float(np.exp(rng.uniform(np.log(style.aspect[0]), np.log(style.aspect[1]))))
    slant = rng.uniform(*style.slant)
    theta = np.deg2rad(rng.uniform(*style.rotation))
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    shear = np.array([[1.0, -slant], [0.0, 1.0]])  # x moves right as y goes up (rows grow downwards)
    scale = np.diag([aspect, 1.0])
    a = rotate @ shear @ scale
    t = np.array([side / 2.0, side / 2.0]) - a @ np.array([c, c])
    m = np.hstack([a, t[:, None]]).astype(np.float32)
    return cv2.warpAffine(ink, m, (side, side), flags=cv2.INTER_LINEAR, borderValue=0.0)


def _with_neighbour(ink: np.ndarray, box, other: np.ndarray, rng: np.random.Generator, style: HandStyle) -> np.ndarray:
    """Add another digit beside the box (left or right), reaching up to a fifth of the box's width into it."""
    x0, y0, x1, y1 = box
    neighbour = _affine(_redraw(other, rng, style), rng, style)
    ys, xs = np.nonzero(neighbour > 0.2)
    if ys.size == 0:
        return ink
    into = rng.uniform(0.03, 0.2) * (x1 - x0)
    if rng.random() < 0.5:  # on the right: its leftmost ink lands `into` pixels left of x1
        dx = x1 - into - xs.min()
    else:
        dx = x0 + into - xs.max()
    dy = (y0 + y1) / 2 - (ys.min() + ys.max()) / 2 + rng.uniform(-0.1, 0.1) * (y1 - y0)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(neighbour, m, ink.shape[::-1], flags=cv2.INTER_LINEAR, borderValue=0.0)
    return np.maximum(ink, moved)


def field_of(crop: np.ndarray, box: float = BOX, shift=(0.0, 0.0)) -> np.ndarray:
    """The reader's recipe with a longer side of ``box`` px, then shifted by ``shift`` (dx, dy) pixels:
    float (h, w) ink in 0..1 -> float32 (28, 28)."""
    field = mnist_field(crop).astype(np.float32) / 255.0
    if abs(box - BOX) > 0.25:  # mis-scaled: zoom about the centre
        m = cv2.getRotationMatrix2D((SIZE / 2 - 0.5, SIZE / 2 - 0.5), 0.0, box / BOX)
        field = cv2.warpAffine(field, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0)
    if max(abs(shift[0]), abs(shift[1])) > 0.25:
        m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        field = cv2.warpAffine(field, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return field
