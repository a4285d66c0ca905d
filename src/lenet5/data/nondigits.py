"""Things that are not digits, drawn procedurally, as the reader would hand them to the network.

A network trained on digits alone has no way to say "this is not a digit": it spreads its certainty over ten
answers and often picks one with confidence. Trained to answer these fields with equal probabilities for all
ten digits (Hendrycks et al. 2019, outlier exposure), its calibrated top probability becomes a "not a digit"
score as well: a letter, a scribble, a sheet's outline, two digits squashed into one field or half a digit
read as "unsure". The last two also teach the number reader (``data.digits``) which cuts make whole digits.

Kinds (``KINDS``, with their weight in a batch of non-digits; the weights are divided by their sum):
- letters and signs drawn as pen strokes (A E F H K M N P R T U V W X Y e h k m n r u v w x ? # & + = % @ * ! <
  >), none that people also write for a digit (O, I, l, S, Z, B, G, b, g, q, a, s, z);
- scribbles: a pen wandering through random points;
- boxes and corners: a sheet's or a frame's outline, sometimes with a small mark inside, a page corner;
- shapes: triangles, stars, crosses, arrows, smileys, wavy lines, hatching, grids;
- typed letters and signs: the same kind of signs set in the DejaVu fonts found on the machine (regular,
  bold, oblique, serif, mono; none when the fonts are missing), since people photograph print as well;
- a line of text: a row of small letters;
- textures: blotches of paper grain or shade that survived the cleaning;
- pairs: two MNIST digits written so close that they share one field (a bad merge);
- pieces: a part of an MNIST digit cut off (a bad cut).

No digit is drawn from a font (only the letters and signs of TYPED are set in one) and none of this code draws
a digit: the only digits here are MNIST training images, used for pairs and pieces.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lenet5.data.hands import WORK, HandStyle, _affine, _redraw, as_read

# Letters and signs in a unit box (x right, y down): a list of strokes, each a list of points; "arc" strokes
# are (cx, cy, rx, ry, from_degrees, to_degrees).
_P = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16) -> _P:
    t = np.deg2rad(np.linspace(a0, a1, n))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


GLYPHS: dict[str, list[_P]] = {
    "A": [[(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)], [(0.22, 0.6), (0.78, 0.6)]],
    "E": [[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0), (0.9, 1.0)], [(0.1, 0.5), (0.7, 0.5)]],
    "F": [[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0)], [(0.1, 0.5), (0.7, 0.5)]],
    "H": [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.9, 1.0)], [(0.1, 0.5), (0.9, 0.5)]],
    "K": [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.1, 0.6)], [(0.35, 0.45), (0.9, 1.0)]],
    "M": [[(0.0, 1.0), (0.1, 0.0), (0.5, 0.7), (0.9, 0.0), (1.0, 1.0)]],
    "N": [[(0.1, 1.0), (0.1, 0.0), (0.9, 1.0), (0.9, 0.0)]],
    "P": [[(0.15, 1.0), (0.15, 0.0), *_arc(0.5, 0.27, 0.38, 0.27, -90, 90), (0.15, 0.54)]],
    "R": [[(0.15, 1.0), (0.15, 0.0), *_arc(0.5, 0.27, 0.38, 0.27, -90, 90), (0.15, 0.54), (0.9, 1.0)]],
    "T": [[(0.0, 0.0), (1.0, 0.0)], [(0.5, 0.0), (0.5, 1.0)]],
    "U": [[(0.1, 0.0), *_arc(0.5, 0.6, 0.4, 0.4, 180, 0), (0.9, 0.0)]],
    "V": [[(0.0, 0.0), (0.5, 1.0), (1.0, 0.0)]],
    "W": [[(0.0, 0.0), (0.25, 1.0), (0.5, 0.3), (0.75, 1.0), (1.0, 0.0)]],
    "X": [[(0.0, 0.0), (1.0, 1.0)], [(1.0, 0.0), (0.0, 1.0)]],
    "Y": [[(0.0, 0.0), (0.5, 0.5), (1.0, 0.0)], [(0.5, 0.5), (0.5, 1.0)]],
    "e": [[(0.1, 0.6), (0.9, 0.6), *_arc(0.5, 0.62, 0.4, 0.38, 0, -200)[1:], *_arc(0.5, 0.62, 0.4, 0.38, 160, 40)]],
    "h": [[(0.15, 0.0), (0.15, 1.0)], [(0.15, 0.6), *_arc(0.5, 0.65, 0.35, 0.25, 200, 360), (0.85, 1.0)]],
    "k": [[(0.15, 0.0), (0.15, 1.0)], [(0.8, 0.4), (0.15, 0.75)], [(0.4, 0.65), (0.85, 1.0)]],
    "m": [[(0.05, 1.0), (0.05, 0.45)], [(0.05, 0.6), *_arc(0.27, 0.62, 0.22, 0.17, 200, 360), (0.49, 1.0)],
          [(0.49, 0.62), *_arc(0.72, 0.62, 0.23, 0.17, 180, 360), (0.95, 1.0)]],
    "n": [[(0.15, 1.0), (0.15, 0.4)], [(0.15, 0.6), *_arc(0.5, 0.6, 0.35, 0.2, 200, 360), (0.85, 1.0)]],
    "r": [[(0.2, 1.0), (0.2, 0.4)], [(0.2, 0.65), *_arc(0.55, 0.62, 0.35, 0.2, 200, 300)]],
    "u": [[(0.15, 0.4), *_arc(0.5, 0.75, 0.35, 0.25, 180, 0), (0.85, 0.4)], [(0.85, 0.4), (0.85, 1.0)]],
    "v": [[(0.0, 0.4), (0.5, 1.0), (1.0, 0.4)]],
    "w": [[(0.0, 0.4), (0.25, 1.0), (0.5, 0.5), (0.75, 1.0), (1.0, 0.4)]],
    "x": [[(0.0, 0.4), (1.0, 1.0)], [(1.0, 0.4), (0.0, 1.0)]],
    "?": [[*_arc(0.5, 0.25, 0.35, 0.25, 190, 400), (0.5, 0.7)], [(0.5, 0.92), (0.5, 1.0)]],
    "#": [[(0.35, 0.0), (0.25, 1.0)], [(0.75, 0.0), (0.65, 1.0)], [(0.0, 0.33), (1.0, 0.33)],
          [(0.0, 0.67), (1.0, 0.67)]],
    "&": [[(1.0, 1.0), (0.25, 0.35), *_arc(0.45, 0.2, 0.2, 0.2, 180, 360), (0.2, 0.6),
           *_arc(0.4, 0.78, 0.3, 0.22, 180, 60), (0.95, 0.5)]],
    "+": [[(0.5, 0.1), (0.5, 0.9)], [(0.1, 0.5), (0.9, 0.5)]],
    "=": [[(0.0, 0.35), (1.0, 0.35)], [(0.0, 0.65), (1.0, 0.65)]],
    "%": [[(0.9, 0.0), (0.1, 1.0)], _arc(0.22, 0.18, 0.17, 0.17, 0, 360), _arc(0.78, 0.82, 0.17, 0.17, 0, 360)],
    "@": [[*_arc(0.55, 0.5, 0.2, 0.22, 0, 360), (0.75, 0.7), *_arc(0.5, 0.5, 0.48, 0.48, 20, 330)]],
    "*": [[(0.5, 0.0), (0.5, 1.0)], [(0.07, 0.25), (0.93, 0.75)], [(0.93, 0.25), (0.07, 0.75)]],
    "!": [[(0.5, 0.0), (0.5, 0.7)], [(0.5, 0.9), (0.5, 1.0)], [(0.3, 0.0), (0.5, 0.7)]],
    "<": [[(1.0, 0.0), (0.0, 0.5), (1.0, 1.0)]],
    ">": [[(0.0, 0.0), (1.0, 0.5), (0.0, 1.0)]],
    "star": [[(0.5, 0.0), (0.79, 0.95), (0.03, 0.36), (0.97, 0.36), (0.21, 0.95), (0.5, 0.0)]],
    "triangle": [[(0.5, 0.0), (1.0, 1.0), (0.0, 1.0), (0.5, 0.0)]],
    "arrow": [[(0.0, 0.5), (1.0, 0.5)], [(0.7, 0.2), (1.0, 0.5), (0.7, 0.8)]],
    "smiley": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 32), [(0.33, 0.33), (0.35, 0.37)], [(0.65, 0.33), (0.67, 0.37)],
               _arc(0.5, 0.5, 0.3, 0.3, 30, 150)],
    "heart": [[*_arc(0.28, 0.3, 0.23, 0.23, 150, 360), (0.5, 1.0)],
              [*_arc(0.72, 0.3, 0.23, 0.23, 30, -180)[::-1], (0.5, 1.0)]],
}  # fmt: skip

LETTERS = tuple(GLYPHS)
ONE_PAIRS = 0.4  # share of the pairs with a 1 on one side
NARROW = 0.5  # a piece narrower than this share of its height looks like a "1" and is not used
KINDS = {"glyph": 0.34, "typed": 0.1, "scribble": 0.1, "box": 0.12, "shape": 0.08, "text": 0.08, "texture": 0.06,
         "pair": 0.14, "piece": 0.08}  # fmt: skip
# Typed letters and signs: none that a font draws like a digit (O o D Q I l i j ! S s Z z B G b g q a y J L t).
TYPED = "ACEFHKMNPRTUVWXYehkmnruvwx?#&+=%@*<>"
FONT_FOLDER = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu; other families are left out
TYPED_STYLE = HandStyle(slant=(-0.15, 0.15), aspect=(0.8, 1.25), rotation=(-6.0, 6.0))  # print is upright


def non_digits(
    n: int,
    rng: np.random.Generator,
    digits: np.ndarray,
    style: HandStyle = HandStyle(),  # noqa: B008 (frozen)
    ones: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 (n, 28, 28) fields of things that are not one whole digit; ``digits`` (uint8 (M, 28, 28), MNIST
    training images) lend the pairs and pieces, ``ones`` (MNIST 1s, optional) the partner in ONE_PAIRS of the
    pairs: a 1 fused with its neighbour reads like that neighbour alone, the commonest bad merge."""
    kinds = list(KINDS)
    chosen = rng.choice(len(kinds), size=n, p=np.array(list(KINDS.values())) / sum(KINDS.values()))
    if not n:
        return np.zeros((0, 28, 28), np.uint8)
    return np.stack([_draw(kinds[k], rng, digits, style, ones) for k in chosen])


def _draw(
    kind: str, rng: np.random.Generator, digits: np.ndarray, style: HandStyle, ones: np.ndarray | None = None
) -> np.ndarray:
    if kind == "pair":
        if ones is not None and len(ones) and rng.random() < ONE_PAIRS:
            pair = [ones[rng.integers(len(ones))], digits[rng.integers(len(digits))]]
            ink = _pair(np.stack(pair[:: 1 if rng.random() < 0.5 else -1]), rng, style, in_order=True)
        else:
            ink = _pair(digits, rng, style)
    elif kind == "piece":
        ink = _piece(digits[rng.integers(len(digits))], rng, style)
    elif kind == "texture":
        ink = _texture(rng)
    elif kind == "typed" and typed_fonts():
        ink = _affine(_typed(rng), rng, TYPED_STYLE)
    else:
        ink = _canvas(_strokes(kind, rng), rng)
    ys, xs = np.nonzero(ink > 0.2)
    if ys.size < 3:
        ink = _canvas(_strokes("scribble", rng), rng)
        ys, xs = np.nonzero(ink > 0.2)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return as_read(crop / crop.max(), rng, style)  # the page cleaning makes a stroke's core full strength


def _strokes(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Strokes in a unit box (x right, y down), each float (k, 2); distorted like a hand would write them."""
    if kind in ("glyph", "typed"):  # typed, when no font is found: drawn by hand instead
        strokes = [np.array(s, np.float64) for s in GLYPHS[LETTERS[rng.integers(len(LETTERS))]]]
    elif kind == "scribble":
        points = rng.uniform(0, 1, (int(rng.integers(5, 14)), 2))
        strokes = [_smooth(points)]
    elif kind == "box":
        strokes = _box(rng)
    elif kind == "shape":
        strokes = _shape(rng)
    else:  # text: a row of small glyphs
        strokes = []
        count = int(rng.integers(3, 9))
        for i in range(count):
            for s in GLYPHS[LETTERS[rng.integers(len(LETTERS))]]:
                g = np.array(s, np.float64) * [0.8, 1.0]
                strokes.append(g + [i * 1.0, 0.0])
    strokes = [s + rng.normal(0, 0.02, s.shape) for s in strokes]  # a hand is never exact
    slant, aspect = rng.uniform(-0.35, 0.35), float(np.exp(rng.uniform(-0.4, 0.4)))
    theta = np.deg2rad(rng.uniform(-15, 15))
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    m = rotate @ np.array([[aspect, -slant], [0, 1]])
    return [s @ m.T for s in strokes]


@functools.cache
def typed_fonts() -> tuple[str, ...]:
    """The font files typed signs are set in (sorted paths; empty when FONT_FOLDER is missing)."""
    return tuple(sorted(str(p) for p in FONT_FOLDER.glob("*.ttf"))) if FONT_FOLDER.is_dir() else ()


@functools.cache
def _face(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, round(0.7 * WORK))


def _typed(rng: np.random.Generator) -> np.ndarray:
    """One sign of TYPED in one of the fonts, centred on a WORK x WORK canvas: float32 in 0..1."""
    fonts = typed_fonts()
    face = _face(fonts[rng.integers(len(fonts))])
    sign = TYPED[rng.integers(len(TYPED))]
    image = Image.new("L", (WORK, WORK), 0)
    ImageDraw.Draw(image).text((WORK / 2, WORK / 2), sign, fill=255, font=face, anchor="mm")
    return np.asarray(image, np.float32) / 255.0


def _smooth(points: np.ndarray, per: int = 8) -> np.ndarray:
    """A Catmull-Rom curve through the points: float (per * (k - 1) + 1, 2)."""
    p = np.vstack([points[0], points, points[-1]])
    t = np.linspace(0, 1, per, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(
            0.5
            * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    out.append(points[-1][None])
    return np.vstack(out)


def _box(rng: np.random.Generator) -> list[np.ndarray]:
    """A sheet's or frame's outline (sometimes with a mark inside), or a page corner."""
    w, h = float(np.exp(rng.uniform(-0.5, 0.5))), 1.0
    if rng.random() < 0.3:  # a corner: two edges meeting
        return [np.array([[w, 0.0], [0.0, 0.0], [0.0, h]])]
    outline = np.array([[0, 0], [w, 0], [w, h], [0, h], [0, 0]], np.float64)
    outline += rng.normal(0, 0.03, outline.shape)
    outline[-1] = outline[0]
    strokes = [outline]
    if rng.random() < 0.6:  # the real mark, small inside the outline
        c = rng.uniform(0.3, 0.7, 2) * [w, h]
        r = rng.uniform(0.03, 0.12)
        strokes.append(_smooth(c + rng.uniform(-r, r, (int(rng.integers(2, 5)), 2))))
    return strokes


def _shape(rng: np.random.Generator) -> list[np.ndarray]:
    which = rng.integers(4)
    if which == 0:  # a wavy line
        x = np.linspace(0, 1, 40)
        return [np.stack([x, 0.5 + 0.15 * np.sin(x * rng.uniform(8, 20))], 1)]
    if which == 1:  # hatching
        k = int(rng.integers(3, 8))
        return [np.array([[i / k, 1.0], [i / k + 0.3, 0.0]]) for i in range(k)]
    if which == 2:  # a grid
        k = int(rng.integers(2, 5))
        return [np.array([[i / k, 0.0], [i / k, 1.0]]) for i in range(k + 1)] + [
            np.array([[0.0, i / k], [1.0, i / k]]) for i in range(k + 1)
        ]
    name = ("star", "triangle", "arrow", "smiley", "heart", "#", "*")[rng.integers(7)]
    return [np.array(s, np.float64) for s in GLYPHS[name]]


def _canvas(strokes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Strokes fitted into a WORK x WORK canvas and drawn with a pen of random width: float32 in 0..1."""
    points = np.vstack(strokes)
    lo, hi = points.min(0), points.max(0)
    span = max(float((hi - lo).max()), 1e-6)
    margin = 6
    scale = (WORK - 2 * margin) / span
    canvas = np.zeros((WORK, WORK), np.float32)
    width = int(rng.integers(2, 8))
    shift = 4  # sub-pixel precision of cv2.polylines
    for s in strokes:
        xy = np.round(((s - lo) * scale + margin) * (1 << shift)).astype(np.int32)
        cv2.polylines(canvas, [xy.reshape(-1, 1, 2)], False, 1.0, width, cv2.LINE_AA, shift)
    return canvas


def _pair(digits: np.ndarray, rng: np.random.Generator, style: HandStyle, in_order: bool = False) -> np.ndarray:
    """Two digits side by side (``in_order``: digits[0] then digits[1], else two drawn at random), from a gap
    of a tenth of a digit to an overlap of a third."""
    first, second = (0, 1) if in_order else rng.integers(len(digits), size=2)
    a = _affine(_redraw(digits[first], rng, style), rng, style)
    b = _affine(_redraw(digits[second], rng, style), rng, style)
    cols_a, cols_b = np.flatnonzero(a.max(0) > 0.2), np.flatnonzero(b.max(0) > 0.2)
    if cols_a.size == 0 or cols_b.size == 0:
        return a
    width = cols_a[-1] - cols_a[0] + 1
    dx = int(cols_a[-1] - cols_b[0] - rng.uniform(-0.1, 0.35) * width)
    canvas = np.zeros((a.shape[0], a.shape[1] * 2), np.float32)
    canvas[:, : a.shape[1]] = a
    lo = max(0, dx)
    hi = min(canvas.shape[1], dx + b.shape[1])
    canvas[:, lo:hi] = np.maximum(canvas[:, lo:hi], b[:, lo - dx : hi - dx])
    return canvas


def _piece(digit: np.ndarray, rng: np.random.Generator, style: HandStyle) -> np.ndarray:
    """Part of a digit: cut vertically or across, keeping one side of 30-60% of it."""
    ink = _affine(_redraw(digit, rng, style), rng, style)
    ys, xs = np.nonzero(ink > 0.2)
    if ys.size == 0:
        return ink
    keep = rng.uniform(0.3, 0.6)
    if rng.random() < 0.7:
        cut = int(xs.min() + keep * (xs.max() - xs.min()))
        if rng.random() < 0.5:
            ink[:, cut:] = 0
        else:
            ink[:, : xs.max() - (cut - xs.min())] = 0
    else:
        cut = int(ys.min() + keep * (ys.max() - ys.min()))
        if rng.random() < 0.5:
            ink[cut:] = 0
        else:
            ink[: ys.max() - (cut - ys.min())] = 0
    ys, xs = np.nonzero(ink > 0.2)
    if ys.size == 0 or xs.max() - xs.min() + 1 < NARROW * (ys.max() - ys.min() + 1):
        return _pair(np.asarray(digit)[None], rng, style)  # a narrow piece is a "1": not for this set
    return ink


def _texture(rng: np.random.Generator) -> np.ndarray:
    """Blotches of smooth noise above a threshold: grain or shade the page cleaning left."""
    cell = rng.uniform(3, 10)
    small = rng.random((max(2, int(WORK / cell)),) * 2).astype(np.float32)
    noise = cv2.resize(small, (WORK, WORK), interpolation=cv2.INTER_CUBIC)
    return np.clip((noise - rng.uniform(0.55, 0.8)) * 4, 0, 1).astype(np.float32)
