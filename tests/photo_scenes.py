"""Seeded photo-like images of handwritten MNIST test digits, to measure how `lenet5 predict` prepares real photos.

People do not hand the model 28x28 white-on-black digits: they give phone photos and scans of a digit or a number
written on paper - plain, ruled or squared, lit from one side, crossed by a hand's shadow, lying on a table, taken
in a dim room, blurred and JPEG-compressed. This module draws such images from MNIST *test* digits (handwriting a
model trained on MNIST has never seen) and keeps the truth with each one: the digits written and each digit's ink
box in the final image.

Everything is drawn from numpy Generators seeded by (seed, set, scene number) - noise from a bank drawn once with
a fixed seed - and encoded by Pillow, so the same arguments give byte-identical files. Nothing is downloaded or
written to disk, except by `scene_sheet`, a contact sheet for a person to look at.

How one image is made (coverage and light are float32 fields; the picture is uint8 RGB from the page on, where
OpenCV is fastest, so that 400 scenes take seconds):
1. glyphs: each 28x28 digit upscaled and smoothed, then retraced by a pen of some width or filled like a marker,
   rotated and slanted: ink coverage in [0, 1];
2. layout: the glyphs written left to right on one baseline (a number), on a transparent canvas;
3. page: paper with grain (and ruled or squared lines), the ink composited multiplicatively like real ink;
4. frame: the page as the camera sees it - a mild perspective, or a sheet lying on a table;
5. light: gradient, vignette, a soft shadow, exposure, colour cast and flare;
6. camera: blur, sharpening, sensor noise (and a scanner's white point), then PNG (scans) or JPEG.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

KINDS: tuple[str, ...] = (
    "clean_scan",  # flatbed scan of pen or marker on white paper: white background, PNG (RGB or greyscale)
    "pencil_scan",  # scan of light, grainy pencil strokes: low contrast, PNG
    "plain_photo",  # phone photo of plain paper filling the frame: mild light fall-off and perspective, JPEG
    "uneven_light",  # the same lit from one side: one side about half as bright as the other
    "ruled",  # ruled notebook paper: blue or grey lines through the digits, sometimes a red margin line
    "squared",  # maths paper: a grid of thin lines, the digits two to three squares tall
    "sheet_on_table",  # a sheet (or a yellow note) turned and in perspective on wood, a dark desk or cloth
    "dim_room",  # paper at 80-130 of 255, warm tungsten cast, strong noise, lower contrast
    "shadow",  # a soft shadow of a hand or phone over part of the page, in half of them over the digits
    "blurry_jpeg",  # out of focus or shaken (motion blur), JPEG quality 40-60
)

_DIGIT_SCENES, _NUMBER_SCENES, _PHONE_PHOTO = 0, 1, 2  # streams of random numbers, one per kind of set
_INSIDE = 0.2  # ink coverage above which a pixel counts for a digit's box
_MIN_SIDE, _MAX_SIDE = 400, 1400  # frame sides of the test sets, in pixels
_BANK_SEED, _BANK_SIZE = 2828, 2**22  # the noise banks, drawn once: scenes take windows of them at seeded offsets
_NOISE_U8_SIGMA = 32  # the uint8 bank's levels per standard deviation
_LEVELS = 200  # uint8 levels per unit where a field around 1 (light, paper, table texture) is stored in 8 bits


@dataclass
class Scene:
    """One image as a user would hand it over, and the truth about it."""

    kind: str
    label: str  # the digits written, left to right, e.g. "7" or "2024"
    data: bytes  # the encoded image file, as a user would give it
    suffix: str  # ".jpg" or ".png"
    boxes: list[tuple[int, int, int, int]]  # each digit's ink box (x0, y0, x1, y1), left to right, x1 and y1 exclusive
    mnist_index: list[int]  # the MNIST test images written, left to right


@dataclass(frozen=True)
class _Look:
    """How one kind of scene is drawn: the choices and ranges each scene of that kind samples from."""

    papers: tuple[str, ...] = ("white", "white", "cream", "grey")
    inks: tuple[str, ...] = ("black", "black", "blue", "blue", "felt", "pencil")
    lines: str = ""  # "", "ruled" or "squared"
    on_table: bool = False  # a sheet lying on a table, the table showing around it
    tilt: float = 0.04  # camera perspective: page corners pushed out of the frame by up to this fraction of a side
    gradient: tuple[float, float] = (0.03, 0.18)  # light lost from the bright side of the frame to the dark side
    vignette: tuple[float, float] = (0.05, 0.2)  # light lost in the corners
    shadow: bool = False  # a hand's or phone's soft shadow over part of the page
    exposure: tuple[float, float] = (0.8, 0.97)  # brightness of fully lit white, 1.0 = 255
    warmth: tuple[float, float] = (-0.06, 0.1)  # tungsten cast: fraction of blue lost (half as much green)
    flare: tuple[float, float] = (0.0, 0.02)  # veiling glare added everywhere: lower contrast
    noise: tuple[float, float] = (0.006, 0.016)  # sensor noise sigma, fraction of full scale
    blur: tuple[float, float] = (0.4, 1.0)  # Gaussian blur sigma in pixels
    motion: float = 0.0  # chance of a motion blur of 2-6 sigma in length instead of the Gaussian blur
    sharpen: float = 0.5  # chance of a phone's unsharp mask
    quality: tuple[int, int] = (65, 90)  # JPEG quality
    png: bool = False  # a scanner's lossless PNG (half of them greyscale) instead of a JPEG
    white_point: int = 255  # a scanner's levels: from this level (up to 25 more) up, pure white


_SCAN = _Look(
    tilt=0.0, gradient=(0.0, 0.03), vignette=(0.0, 0.0), exposure=(0.98, 1.04), warmth=(0.0, 0.0),
    flare=(0.0, 0.0), noise=(0.003, 0.008), blur=(0.3, 0.6), sharpen=0.0, png=True, white_point=200,
)  # fmt: skip
_LOOKS: dict[str, _Look] = {
    "clean_scan": replace(_SCAN, papers=("white",), inks=("black", "blue", "felt")),
    "pencil_scan": replace(_SCAN, papers=("white", "cream"), inks=("pencil",)),
    "plain_photo": _Look(),
    "uneven_light": _Look(gradient=(0.45, 0.6), vignette=(0.1, 0.3)),
    "ruled": _Look(lines="ruled"),
    "squared": _Look(lines="squared"),
    "sheet_on_table": _Look(papers=("white", "white", "cream", "grey", "note"), on_table=True),
    "dim_room": _Look(
        vignette=(0.15, 0.4),
        exposure=(0.4, 0.6),
        warmth=(0.15, 0.4),
        flare=(0.02, 0.06),
        noise=(0.025, 0.045),
        blur=(0.7, 1.4),
        sharpen=0.3,
        quality=(55, 85),
    ),  # fmt: skip
    "shadow": _Look(shadow=True),
    "blurry_jpeg": _Look(blur=(1.4, 2.8), motion=0.5, sharpen=0.0, quality=(40, 60)),
}

_PAPERS = {  # RGB of lit paper
    "white": (0.96, 0.96, 0.95),
    "cream": (0.97, 0.94, 0.84),
    "grey": (0.87, 0.87, 0.85),
    "note": (0.99, 0.92, 0.52),  # a yellow sticky note
}


@dataclass
class _Ink:
    colour: np.ndarray  # (3,) RGB of fully covered paper
    strength: float  # opacity where the coverage is 1
    edge: float  # the smoothed digit's grey level where a marker's stroke ends: lower = thicker strokes
    pen: float  # a pen's stroke width as a fraction of the digit's height (0: MNIST's own thick strokes)
    spread: float  # a felt-tip's extra width, as a fraction of the digit's height
    grain: float  # how much of the ink a pencil's texture takes away


@dataclass
class _Layout:
    coverage: np.ndarray  # (h, w) float32 ink coverage of the whole number
    points: list[np.ndarray] = field(default_factory=list)  # per digit, (n, 2) float64 (x, y) of its inked pixels


@dataclass
class _Geometry:
    frame: tuple[int, int]  # (w, h) of the final image
    page: tuple[int, int]  # (w, h) of the paper as drawn, before the camera's view of it
    at: tuple[int, int]  # (x, y) of the layout's top-left on the page
    homography: np.ndarray  # (3, 3) page pixels -> frame pixels


# ---------------------------------------------------------------------------------------------------- the API


def digit_scenes(images, labels, per_kind: int, seed: int = 0, kinds=KINDS) -> list[Scene]:
    """per_kind single-digit scenes of every kind, kind by kind, each of another test digit while there are enough."""
    _check(images, labels, kinds)
    total = per_kind * len(kinds)
    chosen = np.random.default_rng([seed, _DIGIT_SCENES]).choice(len(images), total, replace=total > len(images))
    scenes = []
    for i, index in enumerate(chosen):
        rng = np.random.default_rng([seed, _DIGIT_SCENES, i])
        scenes.append(_scene(kinds[i // per_kind], images, labels, [int(index)], rng))
    return scenes


def number_scenes(images, labels, n: int, seed: int = 0, kinds=KINDS) -> list[Scene]:
    """n scenes of a number of 2 to 5 digits written in a row (a year, a house number, an amount), kinds cycled."""
    _check(images, labels, kinds)
    by_digit = [np.flatnonzero(np.asarray(labels) == d) for d in range(10)]
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([seed, _NUMBER_SCENES, i])
        indices = [int(rng.choice(by_digit[int(c)])) for c in _number_text(rng)]
        scenes.append(_scene(kinds[i % len(kinds)], images, labels, indices, rng))
    return scenes


def phone_photo(images, labels, seed: int = 0, size=(4032, 3024)) -> Scene:
    """One full-size phone photo (size = (width, height)) of a number on a sheet lying on a table, as a JPEG."""
    _check(images, labels, KINDS)
    rng = np.random.default_rng([seed, _PHONE_PHOTO])
    by_digit = [np.flatnonzero(np.asarray(labels) == d) for d in range(10)]
    indices = [int(rng.choice(by_digit[int(c)])) for c in _number_text(rng)]
    return _scene("sheet_on_table", images, labels, indices, rng, frame=(int(size[0]), int(size[1])))


def scene_sheet(scenes, path) -> None:
    """A contact sheet PNG of the scenes at `path`: each shrunk into a tile, its boxes in red, kind and label below."""
    tile, caption, columns = 260, 18, 6
    rows = -(-len(scenes) // columns)
    sheet = np.full((rows * (tile + caption), columns * tile, 3), 255, np.uint8)
    for i, scene in enumerate(scenes):
        y, x = (i // columns) * (tile + caption), (i % columns) * tile
        sheet[y : y + tile, x : x + tile] = _thumbnail(scene, tile)
        text = f"{scene.kind} {scene.label}"
        cv2.putText(sheet, text, (x + 4, y + tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    Image.fromarray(sheet).save(Path(path))


def _thumbnail(scene: Scene, tile: int) -> np.ndarray:
    """(tile, tile, 3) uint8: the decoded scene fitted into a grey square, its digit boxes drawn in red."""
    image = np.asarray(Image.open(io.BytesIO(scene.data)).convert("RGB"))
    scale = (tile - 4) / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    for x0, y0, x1, y1 in scene.boxes:
        corner0, corner1 = (round(x0 * scale), round(y0 * scale)), (round(x1 * scale) - 1, round(y1 * scale) - 1)
        cv2.rectangle(small, corner0, corner1, (255, 0, 0), 1)
    out = np.full((tile, tile, 3), 200, np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    return out


def _check(images, labels, kinds) -> None:
    if np.asarray(images).shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError("images must be (N, 28, 28) MNIST test digits with N labels")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown scene kinds {sorted(unknown)}; known: {KINDS}")


def _number_text(rng: np.random.Generator) -> str:
    """A number people write: a year (a third of them) or 2-5 digits without a leading zero."""
    if rng.random() < 1 / 3:
        return str(rng.choice([19, 20])) + "".join(str(d) for d in rng.integers(0, 10, 2))
    n = int(rng.integers(2, 6))
    return str(rng.integers(1, 10)) + "".join(str(d) for d in rng.integers(0, 10, n - 1))


# ---------------------------------------------------------------------------------------------------- one scene


def _scene(kind, images, labels, indices, rng, frame=None) -> Scene:
    """One scene of `kind` with the given test digits written left to right; `frame` fixes the image size."""

    def write(height: float, ink: _Ink, rng: np.random.Generator) -> _Layout:
        return _write([images[i] for i in indices], height, ink, rng)

    data, suffix, boxes = compose(kind, write, len(indices), rng, frame)
    label = "".join(str(int(labels[i])) for i in indices)
    return Scene(kind, label, data, suffix, boxes, list(indices))


def compose(kind, write, n_digits: int, rng, frame=None) -> tuple[bytes, str, list[tuple[int, int, int, int]]]:
    """The encoded photo of `kind` of n_digits written by `write(height, ink, rng) -> _Layout` (digits about
    `height` pixels tall, in `ink`), as (file bytes, suffix, each digit's ink box in the image). The layout's
    `points` give the boxes. Other generators of handwriting use it to put their own glyphs through the same page,
    frame, light, camera and encoding stages."""
    look = _LOOKS[kind]
    ink = _ink(str(rng.choice(look.inks)), rng)
    height = _digit_height(n_digits, frame, rng)
    layout = write(height, ink, rng)
    geometry = _geometry(look, layout, height, frame, rng)
    page = _page(look, geometry.page, height, rng)
    _apply_ink(page, layout, geometry.at, ink, rng)
    image = _frame(page, look, geometry, rng)
    image = _light(image, look, _centre(layout, geometry), rng)
    data, suffix = _encode(_camera(image, look, rng), look, rng)
    return data, suffix, _boxes(layout, geometry)


def _digit_height(n_digits: int, frame, rng) -> float:
    """Height in pixels of the written digits: 60-300 (less for long numbers), 6-14% of a fixed frame's height."""
    if frame is not None:
        return frame[1] * rng.uniform(0.06, 0.14)
    top = min(300.0, 1000.0 / (0.85 * n_digits))  # a number of n digits is about 0.85 n heights wide
    return float(np.exp(rng.uniform(np.log(60.0), np.log(top))))


def _centre(layout: _Layout, geometry: _Geometry) -> tuple[float, float]:
    """Where the written number's middle lands in the frame, in pixels."""
    h, w = layout.coverage.shape
    point = np.array([[[geometry.at[0] + w / 2, geometry.at[1] + h / 2]]])
    x, y = cv2.perspectiveTransform(point, geometry.homography)[0, 0]
    return float(x), float(y)


def _boxes(layout: _Layout, geometry: _Geometry) -> list[tuple[int, int, int, int]]:
    """Each digit's ink box in the frame: its inked pixels carried through the page placement and the homography."""
    boxes = []
    for points in layout.points:
        moved = cv2.perspectiveTransform((points + geometry.at)[None], geometry.homography)[0]  # (n, 2)
        # OpenCV puts pixel centres at integer coordinates: pixel x covers [x - 0.5, x + 0.5)
        (x0, y0), (x1, y1) = np.floor(moved.min(0) + 0.5), np.floor(moved.max(0) + 0.5) + 1
        boxes.append((int(x0), int(y0), int(x1), int(y1)))
    return boxes


# ---------------------------------------------------------------------------------------------------- ink and layout


def _ink(style: str, rng: np.random.Generator) -> _Ink:
    """A pen: black (gel pen or marker), blue ballpoint, felt-tip (thick; black, navy, red or green) or pencil."""
    if style == "black":
        pen = rng.uniform(0.05, 0.1) if rng.random() < 0.5 else 0.0
        return _Ink(colour=np.full(3, rng.uniform(0.06, 0.14)), strength=rng.uniform(0.88, 1.0),
                    edge=rng.uniform(0.25, 0.5), pen=pen, spread=0.0, grain=0.0)  # fmt: skip
    if style == "blue":
        colour = np.array([0.12, 0.17, 0.48]) + rng.uniform(-0.05, 0.05, 3)
        return _Ink(colour=colour, strength=rng.uniform(0.8, 0.95), edge=0.5, pen=rng.uniform(0.045, 0.085),
                    spread=0.0, grain=0.1)  # fmt: skip
    if style == "felt":
        colours = ([0.05, 0.05, 0.07], [0.1, 0.12, 0.38], [0.72, 0.1, 0.12], [0.08, 0.36, 0.2])
        return _Ink(colour=np.array(colours[rng.integers(len(colours))]), strength=rng.uniform(0.93, 1.0),
                    edge=0.3, pen=0.0, spread=rng.uniform(0.005, 0.025), grain=0.0)  # fmt: skip
    return _Ink(colour=np.full(3, 0.3), strength=rng.uniform(0.65, 0.85), edge=0.5, pen=rng.uniform(0.05, 0.09),
                spread=0.0, grain=rng.uniform(0.15, 0.35))  # fmt: skip


def _glyph(digit: np.ndarray, height: float, ink: _Ink, rng: np.random.Generator) -> np.ndarray:
    """Ink coverage (h, w) float32 in [0, 1] of one 28x28 digit written `height` pixels tall, tightly cropped.
    The digit is first smoothed at a working size 64 pixels tall, which rounds off MNIST's pixel steps; a pen
    retraces its centre lines, a marker fills it down to the ink's edge level."""
    rows, cols = np.flatnonzero(digit.max(1) > 40), np.flatnonzero(digit.max(0) > 40)
    crop = np.pad(digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255, 2)
    work = 64 / (rows[-1] - rows[0] + 1)
    interpolation = (cv2.INTER_CUBIC, cv2.INTER_LINEAR)[rng.integers(2)]
    smooth = cv2.resize(crop, None, fx=work, fy=work, interpolation=interpolation)
    smooth = cv2.GaussianBlur(smooth, (0, 0), 0.6 * work)
    size = (round(smooth.shape[1] * height / 64), round(smooth.shape[0] * height / 64))
    if ink.pen:
        coverage = _pen_strokes(smooth > 0.3, size, max(2.0, ink.pen * height))
    else:
        inked = cv2.resize(smooth, size, interpolation=cv2.INTER_LINEAR) > ink.edge
        coverage = cv2.GaussianBlur(inked.astype(np.float32), (0, 0), 0.7)  # anti-aliased edges
    if ink.spread:
        radius = max(1, round(ink.spread * height))
        coverage = cv2.dilate(coverage, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
    return _crop(_slant(coverage, rng.uniform(-8, 8), rng.uniform(-0.2, 0.2)))


def _pen_strokes(mask: np.ndarray, size, width: float) -> np.ndarray:
    """Coverage of `size` (w, h) retracing the strokes of a boolean (h, w) mask with a pen `width` pixels wide:
    the mask is thinned to its centre lines, which are upsampled (a core about `factor` pixels wide) and widened.
    The distance to the core is smoothed over a pixel of the mask, so that its steps do not show. Blobs (parts
    much thicker than the strokes, like a 9's filled loop) stay filled, as a pen scribbling them in would leave."""
    factor = size[0] / mask.shape[1]
    centre_lines = _thin(mask)
    core = cv2.resize(centre_lines.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) >= 0.45
    distance = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = cv2.GaussianBlur(distance, (0, 0), max(0.5, 0.7 * factor))
    strokes = np.clip((width - factor) / 2 + 0.5 - distance, 0, 1)
    half = float(np.median(cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)[centre_lines]))
    far = cv2.distanceTransform((~centre_lines).astype(np.uint8), cv2.DIST_L2, 3) > 2 * half  # (h, w)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * round(half) + 1,) * 2)
    blobs = cv2.dilate((mask & far).astype(np.float32), disk) * mask  # ink no pen stroke along the lines explains
    blobs = cv2.resize(blobs, size, interpolation=cv2.INTER_LINEAR) > 0.5
    return np.maximum(strokes, cv2.GaussianBlur(blobs.astype(np.float32), (0, 0), 0.7))


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean (h, w) mask to lines one pixel wide; each pass peels one layer off at once."""
    image = np.pad(mask, 1).astype(np.uint8)
    changed = True
    while changed:
        changed = False
        for first in (True, False):
            # the 8 neighbours clockwise from north: P2 (N), P3 (NE), P4 (E), ..., P9 (NW), each (h, w)
            p = [image[:-2, 1:-1], image[:-2, 2:], image[1:-1, 2:], image[2:, 2:],
                 image[2:, 1:-1], image[2:, :-2], image[1:-1, :-2], image[:-2, :-2]]  # fmt: skip
            count = sum(q.astype(np.int8) for q in p)
            rises = sum(((p[k] == 0) & (p[(k + 1) % 8] == 1)).astype(np.int8) for k in range(8))
            north, east, south, west = p[0], p[2], p[4], p[6]
            if first:  # peel south-east boundary points and north-west corners
                side = ((north & east & south) == 0) & ((east & south & west) == 0)
            else:  # peel north-west boundary points and south-east corners
                side = ((north & east & west) == 0) & ((north & south & west) == 0)
            peel = (image[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (rises == 1) & side
            if peel.any():
                image[1:-1, 1:-1][peel] = 0
                changed = True
    return image[1:-1, 1:-1].astype(bool)


def _slant(coverage: np.ndarray, degrees: float, shear: float) -> np.ndarray:
    """The coverage sheared (x += shear * y, leaning right for negative shear) and rotated, on a canvas that fits it."""
    h, w = coverage.shape
    centre = np.array([w / 2, h / 2])
    turn = cv2.getRotationMatrix2D((0, 0), degrees, 1.0)[:, :2]
    matrix = turn @ np.array([[1.0, shear], [0.0, 1.0]])  # (2, 2)
    corners = (np.array([[0, 0], [w, 0], [w, h], [0, h]]) - centre) @ matrix.T  # (4, 2)
    low, high = corners.min(0), corners.max(0)
    affine = np.hstack([matrix, (-matrix @ centre - low)[:, None]])  # (2, 3)
    size = tuple(int(s) for s in np.ceil(high - low) + 1)
    return cv2.warpAffine(coverage, affine, size, flags=cv2.INTER_LINEAR)


def _crop(coverage: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(coverage.max(1) > 0.01), np.flatnonzero(coverage.max(0) > 0.01)
    return coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _write(digits, height: float, ink: _Ink, rng: np.random.Generator) -> _Layout:
    """The digits written left to right on one baseline: sizes within 15%, the baseline within 10% of the height,
    gaps up to a third of a digit's width, and in a fifth of the numbers slightly negative (touching strokes)."""
    glyphs = [_glyph(d, height * rng.uniform(0.87, 1.15), ink, rng) for d in digits]
    touching = len(glyphs) > 1 and rng.random() < 0.2
    x, spots = 0, []
    for i, glyph in enumerate(glyphs):
        h, w = glyph.shape
        if i:
            gap = height * (rng.uniform(-0.1, -0.02) if touching else rng.uniform(0.04, 0.22))
            x = round(x + max(gap, -0.4 * min(w, glyphs[i - 1].shape[1])))
        spots.append((x, round(-h + height * rng.uniform(-0.1, 0.1))))  # (left, top) with the baseline at y = 0
        x += w
    top = min(y for _, y in spots)
    bottom = max(y + g.shape[0] for (_, y), g in zip(spots, glyphs))
    layout = _Layout(np.zeros((bottom - top, x), np.float32))
    for (left, y), glyph in zip(spots, glyphs):
        h, w = glyph.shape
        region = layout.coverage[y - top : y - top + h, left : left + w]
        np.maximum(region, glyph, out=region)
        ys, xs = np.nonzero(glyph > _INSIDE)
        layout.points.append(np.stack([xs + left, ys + y - top], 1).astype(np.float64))
    return layout


def _apply_ink(page: np.ndarray, layout: _Layout, at, ink: _Ink, rng: np.random.Generator) -> None:
    """Composite the layout's ink onto the page (h, w, 3) uint8 in place: paper * (1 - opacity * (1 - ink colour))."""
    h, w = layout.coverage.shape
    opacity = layout.coverage * ink.strength
    if ink.grain:  # graphite or a dry ballpoint missing the paper's pits
        texture = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 1.0)
        opacity *= np.clip(1 - ink.grain * 2.5 * (texture - 0.3), 0.2, 1)
    region = page[at[1] : at[1] + h, at[0] : at[0] + w]
    region[:] = region * (1 - opacity[..., None] * (1 - ink.colour.astype(np.float32))) + 0.5


# ---------------------------------------------------------------------------------------------------- geometry


def _geometry(look: _Look, layout: _Layout, height: float, frame, rng: np.random.Generator) -> _Geometry:
    """Frame and page sizes, where the number sits on the page and how the page lands in the frame, drawn until the
    number fits on the page with margins and lands inside the frame."""
    for _ in range(200):
        geometry = _try_geometry(look, layout.coverage.shape, height, frame, rng)
        if geometry is not None:
            return geometry
    raise RuntimeError("no geometry fits the written number")  # not reached for the sizes drawn here


def _try_geometry(look: _Look, layout_shape, height: float, frame, rng: np.random.Generator) -> _Geometry | None:
    """One draw of the geometry, or None where the number does not fit."""
    lh, lw = layout_shape
    if frame is None:  # the digits take 8-50% of the frame's height
        frame_h = height / np.exp(rng.uniform(np.log(0.08), np.log(0.5)))
        aspect = rng.choice([4 / 3, 3 / 4, 1.0, 16 / 9, 9 / 16, 3 / 2])
        frame_w = max(frame_h * aspect, lw * rng.uniform(1.25, 1.6) / (0.8 if look.on_table else 1.0))
        frame = tuple(int(np.clip(s, _MIN_SIDE, _MAX_SIDE)) for s in (frame_w, frame_h))
    page = _sheet_size(frame, rng) if look.on_table else frame
    margin = max(8, round(0.06 * min(page)))
    if lw > page[0] - 2 * margin or lh > page[1] - 2 * margin:
        return None
    at = (int(rng.integers(margin, page[0] - margin - lw + 1)), int(rng.integers(margin, page[1] - margin - lh + 1)))
    if look.on_table:
        homography = _sheet_pose(frame, page, rng)
    elif look.tilt:
        homography = _camera_tilt(frame, look.tilt, rng)
    else:
        homography = np.eye(3)
    corners = np.array([[at, (at[0] + lw, at[1]), (at[0] + lw, at[1] + lh), (at[0], at[1] + lh)]], np.float64)
    moved = cv2.perspectiveTransform(corners, homography)[0]  # (4, 2)
    inside = (moved >= 3).all() and (moved[:, 0] <= frame[0] - 4).all() and (moved[:, 1] <= frame[1] - 4).all()
    return _Geometry(frame, page, at, homography) if inside else None


def _sheet_size(frame, rng: np.random.Generator) -> tuple[int, int]:
    """(w, h) of a sheet covering 50-85% of the frame's area: A4 upright or sideways, or a square note."""
    area = rng.uniform(0.5, 0.85) * frame[0] * frame[1]
    aspect = rng.choice([1 / np.sqrt(2), np.sqrt(2), 1.0, 1.3])  # width / height
    return round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))


def _sheet_pose(frame, page, rng: np.random.Generator) -> np.ndarray:
    """(3, 3) homography putting the sheet on the table: turned up to 15 degrees, off-centre by up to 12% of the frame
    (so the table shows on two to four sides), seen slightly from one side (keystone and corner jitter)."""
    (fw, fh), (pw, ph) = frame, page
    corners = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float64) - (pw / 2, ph / 2)
    corners[:2, 0] *= rng.uniform(0.88, 1.0)  # the far edge looks shorter
    corners += rng.normal(0, 0.02 * min(pw, ph), corners.shape)
    turn = cv2.getRotationMatrix2D((0, 0), rng.uniform(-15, 15), 1.0)[:, :2]
    centre = (fw / 2 * (1 + rng.uniform(-0.12, 0.12)), fh / 2 * (1 + rng.uniform(-0.12, 0.12)))
    target = corners @ turn.T + centre
    source = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    return cv2.getPerspectiveTransform(source, target.astype(np.float32))


def _camera_tilt(frame, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """(3, 3) homography of a page filling the frame seen a little off-axis: each corner pushed outwards by up to
    `tilt` of the frame, so the page still covers the whole frame."""
    w, h = frame
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    outwards = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * rng.uniform(0, tilt, (4, 2)) * (w, h)
    return cv2.getPerspectiveTransform(source, (source + outwards).astype(np.float32))


# ---------------------------------------------------------------------------------------------------- paper and table


@functools.cache
def _bank(as_uint8: bool) -> np.ndarray:
    """(_BANK_SIZE,) read-only standard normal numbers drawn once from a fixed seed: float32, or as uint8 (see _u8)."""
    bank = np.random.default_rng(_BANK_SEED).standard_normal(_BANK_SIZE, dtype=np.float32)
    bank = _u8(bank) if as_uint8 else bank
    bank.flags.writeable = False
    return bank


def _u8(noise: np.ndarray) -> np.ndarray:
    """Standard normal noise stored in 8 bits: 128 + _NOISE_U8_SIGMA * noise, clipped."""
    return np.clip(noise * _NOISE_U8_SIGMA + 128, 0, 255).astype(np.uint8)


def _noise(shape, rng: np.random.Generator, as_uint8: bool = False) -> np.ndarray:
    """Read-only standard normal noise of `shape`: a window of the bank at a random offset, which costs nothing,
    or fresh numbers for shapes too big for the bank (the 12-megapixel photo)."""
    size = int(np.prod(shape))
    if size > _BANK_SIZE // 2:
        fresh = rng.standard_normal(shape, dtype=np.float32)
        return _u8(fresh) if as_uint8 else fresh
    start = int(rng.integers(0, _BANK_SIZE - size))
    return _bank(as_uint8)[start : start + size].reshape(shape)


def _smooth_noise(shape, cell: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float32 noise of about unit spread that varies over `cell` pixels (coarse noise upsampled)."""
    h, w = shape
    coarse = rng.standard_normal((max(2, round(h / cell) + 2), max(2, round(w / cell) + 2)), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)


def _page(look: _Look, size, height: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 paper of one of the look's tones, with fibre grain, mottling and its printed lines.
    Each printed layer of coverage c and colour k takes paper * c * (1 - k) away from the paper; all are mixed into
    RGB at once by one cv2.transform of the stacked single-channel layers (at _LEVELS per unit)."""
    w, h = size
    paper = np.array(_PAPERS[str(rng.choice(look.papers))]) + rng.normal(0, 0.01, 3)
    grain = _noise((h, w), rng) * rng.uniform(0.006, 0.018)
    grain += _smooth_noise((h, w), rng.uniform(20, 80), rng) * rng.uniform(0.004, 0.012) + 1  # (h, w) around 1
    layers = {"ruled": _rule, "squared": _square}[look.lines](size, height, rng) if look.lines else []
    channels = [grain] + [grain * coverage for coverage, _ in layers]  # each (h, w)
    mix = np.array([paper] + [-paper * (1 - np.array(colour)) for _, colour in layers]).T  # (3, layers)
    stack = cv2.convertScaleAbs(cv2.merge(channels), alpha=_LEVELS)
    return cv2.transform(stack, mix * (255 / _LEVELS))


def _line_profile(n: int, spacing: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 coverage of anti-aliased lines `width` pixels wide every `spacing` pixels, at a random phase."""
    offset = (np.arange(n, dtype=np.float32) - rng.uniform(0, spacing)) % spacing
    distance = np.minimum(offset, spacing - offset)  # to the nearest line's centre
    return np.clip(width / 2 + 0.5 - distance, 0, 1)


def _rule(size, height: float, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple]]:
    """Printed layers [(coverage, RGB)] of ruled paper: light blue or grey lines, (h, 1), that the digits sit across,
    and in some pages a red margin line, (1, w)."""
    w, h = size
    spacing = float(np.clip(height * rng.uniform(0.55, 1.1), 24, 110))
    width = float(np.clip(spacing / 30 * rng.uniform(0.7, 1.3), 1.0, 3.0))
    colour = ((0.45, 0.65, 0.92), (0.55, 0.7, 0.85), (0.6, 0.6, 0.62))[rng.integers(3)]
    layers = [(_line_profile(h, spacing, width, rng)[:, None] * rng.uniform(0.45, 0.85), colour)]
    if rng.random() < 0.4:
        margin = np.zeros((1, w), np.float32)
        margin[0, round(w * rng.uniform(0.06, 0.16))] = 2
        margin = np.clip(cv2.GaussianBlur(margin, (0, 0), rng.uniform(0.6, 1.2)), 0, 1)  # about 2 px wide
        layers.append((margin * rng.uniform(0.5, 0.85), (0.92, 0.35, 0.4)))
    return layers


def _square(size, height: float, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple]]:
    """The printed layer [(coverage (h, w), RGB)] of maths paper: a grid of thin grey or blue lines, the digits
    spanning two to three squares."""
    w, h = size
    spacing = float(np.clip(height * rng.uniform(0.3, 0.55), 16, 80))
    width = float(np.clip(spacing / 25 * rng.uniform(0.6, 1.2), 1.0, 2.5))
    rows, cols = _line_profile(h, spacing, width, rng), _line_profile(w, spacing, width, rng)
    coverage = np.maximum(rows[:, None], cols[None, :]) * rng.uniform(0.3, 0.65)  # (h, w)
    return [(coverage, ((0.55, 0.7, 0.88), (0.6, 0.62, 0.65))[rng.integers(2)])]


def _table(size, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A table top as (h, w) float32 texture around 1 and its (3,) RGB: wood, a plain dark desk or a woven cloth."""
    w, h = size
    style = rng.integers(3)
    if style == 0:
        return _wood(size, rng)
    if style == 1:
        colour = rng.uniform(0.16, 0.4) * (1 + rng.uniform(-0.06, 0.06, 3))
        return 1 + 0.03 * _smooth_noise((h, w), 60, rng) + 0.025 * _noise((h, w), rng), colour
    colour = np.array(((0.12, 0.16, 0.32), (0.12, 0.28, 0.18), (0.35, 0.1, 0.12), (0.3, 0.3, 0.32))[rng.integers(4)])
    step = 2 * np.pi / rng.uniform(3, 7)  # radians per pixel of the weave
    weave = np.sin(np.arange(h, dtype=np.float32) * step)[:, None] * np.sin(np.arange(w, dtype=np.float32) * step)
    return 1 + 0.08 * weave + 0.06 * _smooth_noise((h, w), 40, rng), colour


def _wood(size, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Wood as (h, w) float32 texture and (3,) RGB: wavy growth rings across the grain and fine streaks along it,
    the grain running along x or y."""
    w, h = size
    along_y = rng.random() < 0.5
    if along_y:
        w, h = h, w
    colour = np.array(((0.62, 0.44, 0.27), (0.45, 0.3, 0.18), (0.3, 0.19, 0.12), (0.7, 0.56, 0.4))[rng.integers(4)])
    step = 2 * np.pi / rng.uniform(25, 70)  # radians per pixel across the rings
    rows = np.arange(h, dtype=np.float32)[:, None] + 12 * _smooth_noise((h, w), 150, rng)  # (h, w) wavy rows
    rings = np.sin(rows * step) ** 2
    streaks = cv2.resize(rng.standard_normal((h, max(2, w // 60)), dtype=np.float32), (w, h))  # long along x
    texture = 1 - 0.18 * rings + 0.05 * streaks + 0.02 * _noise((h, w), rng)
    return (np.ascontiguousarray(texture.T) if along_y else texture), colour


# ---------------------------------------------------------------------------------------------------- camera


def _frame(page: np.ndarray, look: _Look, geometry: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: the page (uint8) as the camera sees it, lying on a table or filling the frame."""
    size = geometry.frame
    if not look.on_table and np.array_equal(geometry.homography, np.eye(3)):
        return page
    view = cv2.warpPerspective(page, geometry.homography, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if not look.on_table:
        return view
    texture, colour = _table(size, rng)
    texture *= 1 - 0.45 * _sheet_shadow(geometry, rng)
    table = cv2.cvtColor(cv2.convertScaleAbs(texture, alpha=_LEVELS), cv2.COLOR_GRAY2RGB)
    table = cv2.multiply(table, (*(colour * 255 / _LEVELS), 0.0))
    alpha = cv2.warpPerspective(np.ones(page.shape[:2], np.float32), geometry.homography, size, flags=cv2.INTER_LINEAR)
    return cv2.blendLinear(view, table, alpha, 1 - alpha)


def _sheet_shadow(geometry: _Geometry, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float32 in [0, 1]: the soft shadow the sheet casts on the table, drawn at 1/4 scale."""
    (w, h), (pw, ph) = geometry.frame, geometry.page
    page_corners = np.array([[[0, 0], [pw, 0], [pw, ph], [0, ph]]], np.float64)
    corners = cv2.perspectiveTransform(page_corners, geometry.homography)
    shift = rng.uniform(-0.01, 0.01, 2) * max(w, h)
    small = np.zeros((h // 4 + 1, w // 4 + 1), np.float32)
    cv2.fillConvexPoly(small, np.round((corners[0] + shift) / 4).astype(np.int32), 1.0)
    small = cv2.GaussianBlur(small, (0, 0), max(w, h) / 4 * rng.uniform(0.005, 0.015))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _light(image: np.ndarray, look: _Look, focus, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: the image (uint8) lit: a gradient, a vignette, a hand's shadow over `focus`, the camera's
    exposure and colour cast, and flare. The light is smooth, so it is drawn on a grid 8 times coarser, as uint8 at
    _LEVELS per unit of light, and upsampled."""
    h, w, _ = image.shape
    gh, gw = h // 8 + 2, w // 8 + 2
    v, u = np.mgrid[0:gh, 0:gw].astype(np.float32)
    u, v = u / (gw - 1), v / (gh - 1)  # (gh, gw) in [0, 1]
    angle = rng.uniform(0, 2 * np.pi)
    along = u * float(np.cos(angle)) + v * float(np.sin(angle))  # float32
    along = (along - along.min()) / (along.max() - along.min())  # 0 on the bright side, 1 on the dark side
    light = 1 - rng.uniform(*look.gradient) * along ** rng.uniform(0.7, 1.5)
    light *= 1 - rng.uniform(*look.vignette) * ((u - 0.5) ** 2 + (v - 0.5) ** 2) * 2
    if look.shadow:
        light *= _hand_shadow((gw, gh), (focus[0] * gw / w, focus[1] * gh / h), rng)
    gain = _exposure(look, rng)
    small = np.clip(light[..., None] * (gain * _LEVELS), 0, 255).astype(np.uint8)  # (gh, gw, 3)
    lit = cv2.multiply(image, cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), scale=1 / _LEVELS)
    return cv2.add(lit, (*(255 * rng.uniform(*look.flare) * gain), 0.0))


def _hand_shadow(size, focus, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float32 light kept under the soft shadow of an arm and hand (or a phone) reaching in from outside the
    frame, ending over `focus` (the written number) in half of the scenes."""
    w, h = size
    end = np.array(focus) + rng.normal(0, 0.08, 2) * (w, h) if rng.random() < 0.5 else rng.uniform(0.2, 0.8, 2) * (w, h)
    angle = rng.uniform(0, 2 * np.pi)
    start = end + np.array([np.cos(angle), np.sin(angle)]) * 2 * max(w, h)  # far outside the frame
    reach = min(w, h) * rng.uniform(0.15, 0.35)
    mask = np.zeros((h, w), np.float32)
    cv2.line(mask, _point(start), _point(end), 1.0, max(1, round(reach)))
    hand = (max(1, round(reach * rng.uniform(0.8, 1.1))), max(1, round(reach * rng.uniform(0.5, 0.75))))
    cv2.ellipse(mask, _point(end), hand, np.degrees(angle), 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), min(w, h) * rng.uniform(0.03, 0.09))
    return 1 - rng.uniform(0.3, 0.6) * mask


def _point(xy) -> tuple[int, int]:
    return int(round(xy[0])), int(round(xy[1]))


def _exposure(look: _Look, rng: np.random.Generator) -> np.ndarray:
    """(3,) RGB gain of the camera: brightness times a colour cast (warm tungsten, or cool daylight if negative)."""
    warmth = rng.uniform(*look.warmth)
    return rng.uniform(*look.exposure) * np.array([1, 1 - warmth / 2, 1 - warmth])


def _camera(image: np.ndarray, look: _Look, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8: the lit scene (uint8) through lens and sensor: blur (or a shake), a phone's sharpening,
    sensor noise, and for scans the scanner's white point, which turns the paper pure white."""
    sigma = rng.uniform(*look.blur)
    if rng.random() < look.motion:
        image = cv2.filter2D(image, -1, _motion_kernel(sigma * rng.uniform(2, 6), rng))
    else:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if rng.random() < look.sharpen:
        amount = rng.uniform(0.3, 0.8)
        image = cv2.addWeighted(image, 1 + amount, cv2.GaussianBlur(image, (0, 0), rng.uniform(1.0, 2.0)), -amount, 0)
    noise = cv2.cvtColor(_noise(image.shape[:2], rng, as_uint8=True), cv2.COLOR_GRAY2RGB)  # the same in R, G and B
    scale = 255 * rng.uniform(*look.noise) / _NOISE_U8_SIGMA
    image = cv2.addWeighted(image, 1.0, noise, scale, -128 * scale)
    if look.white_point < 255:
        white = rng.uniform(look.white_point, look.white_point + 25)
        image = cv2.LUT(image, np.clip(np.arange(256) * (255 / white), 0, 255).astype(np.uint8))
    return image


def _motion_kernel(length: float, rng: np.random.Generator) -> np.ndarray:
    """(k, k) float32 kernel of a straight shake `length` pixels long in a random direction."""
    k = int(np.ceil(length)) | 1
    kernel = np.zeros((k, k), np.float32)
    angle = rng.uniform(0, np.pi)
    half = (k - 1) / 2
    end = np.array([np.cos(angle), np.sin(angle)]) * half
    cv2.line(kernel, _point(half - end), _point(half + end), 1.0, 1, cv2.LINE_AA)
    return kernel / kernel.sum()


def _encode(image: np.ndarray, look: _Look, rng: np.random.Generator) -> tuple[bytes, str]:
    """The image as a file: a scanner's PNG (RGB or greyscale) or a phone's JPEG of the look's quality."""
    picture = Image.fromarray(image)
    buffer = io.BytesIO()
    if look.png:
        if rng.random() < 0.5:
            picture = picture.convert("L")
        picture.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), ".png"
    picture.save(buffer, format="JPEG", quality=int(rng.integers(look.quality[0], look.quality[1] + 1)))
    return buffer.getvalue(), ".jpg"


# ------------------------------------------------------------------ what is not a digit, and digits that touch
def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def paper(size=(800, 600), seed=0) -> np.ndarray:
    """A photo of an empty sheet: light gradient, grain (float32 RGB 0..255)."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    light = np.linspace(0.75, 1.0, w)[None, :] * np.linspace(0.9, 1.0, h)[:, None]
    page = 235 * light[..., None] * np.array([1.0, 0.98, 0.93]) + rng.normal(0, 3, (h, w, 3))
    return page.astype(np.float32)


def jpeg(page: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def with_drawing(draw_on) -> bytes:
    img = Image.fromarray(np.clip(paper(), 0, 255).astype(np.uint8))
    draw_on(ImageDraw.Draw(img))
    return jpeg(np.asarray(img, np.float32))


NOT_DIGITS = {
    "blank page": lambda d: None,
    "a cup": lambda d: (
        d.ellipse((250, 150, 520, 470), fill=(90, 60, 50)),
        d.ellipse((500, 240, 600, 380), outline=(90, 60, 50), width=22),
    ),
    "scribble": lambda d: d.line(tangle(), fill=(20, 20, 60), width=5),
}


def tangle(n: int = 60, seed: int = 3) -> list[tuple[float, float]]:
    """A pen scribbling over and over itself: a smooth random walk around one spot."""
    rng = np.random.default_rng(seed)
    angle = np.cumsum(rng.normal(0, 0.6, n))
    xy = np.cumsum(np.stack([np.cos(angle), np.sin(angle)], 1) * 25, axis=0)
    xy = 400 + 110 * (xy - xy.mean(0)) / np.abs(xy - xy.mean(0)).max()
    return [(float(x), float(y) - 100) for x, y in xy]


def touching_pair(a: np.ndarray, b: np.ndarray) -> Image.Image:
    """Two MNIST digits side by side, pushed together until two columns overlap, black on white, 6x size."""
    cols_a, cols_b = np.flatnonzero(a.max(0) > 60), np.flatnonzero(b.max(0) > 60)
    a, b = a[:, cols_a[0] : cols_a[-1] + 1], b[:, cols_b[0] : cols_b[-1] + 1]
    page = np.zeros((28, a.shape[1] + b.shape[1] + 8), np.uint8)
    page[:, 4 : 4 + a.shape[1]] = a
    at = 4 + a.shape[1] - 2  # two columns of overlap
    page[:, at : at + b.shape[1]] = np.maximum(page[:, at : at + b.shape[1]], b)
    big = Image.fromarray(255 - page).resize((page.shape[1] * 6, 28 * 6), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (big.width + 120, big.height + 120), 255)
    canvas.paste(big, (60, 60))
    return canvas
