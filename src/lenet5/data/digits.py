"""Find the digits in a page's ink and make each an MNIST-style 28x28 field: the second half of reading.

1. connected components of the ink (a small closing first joins broken strokes);
2. what is not a digit is dropped: specks, components that run along the picture's border (page
   edges, the table) when something else is there, long thin leftovers of lines, solid blobs (shadows);
3. the digits are the components in the row of the largest one, read left to right; parts of one
   digit that lie above each other (a 5's bar, a broken 4) are merged;
4. neighbours that read far better together are joined (a digit written in two strokes that do not meet),
   and a component too wide for one digit (digits that touch) is cut where the network reads the pieces
   best, as LeCun's cheque readers did; ``score`` is that network (this module knows no engine);
5. each digit keeps its grey levels, its strokes are brought to MNIST's thickness when much thinner,
   then MNIST's recipe: the longer side scaled to 20 px, pasted into 28x28, centre of mass at (14, 14).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from lenet5.data.page import Ink

BOX = 20  # the longer side of the digit inside the 28x28 field
SIZE = 28
CENTRE = 14.0  # MNIST's mean centre of mass, in pixel-index coordinates (measured: 13.99, 14.01)
MNIST_STROKE = 2.2  # MNIST's median stroke width in the field, 2*area/perimeter of pixels > 100
MAX_DIGITS = 12  # more "digits" than this in one row is text or scribble, not a number
SPECK = 0.04  # a component under this share of the heaviest one's ink (mass) is a speck
FAINT = 0.3  # a component whose mean strength is under this share of a stroke's is a leftover (lines, shade)
ROW_HEIGHT = 0.4  # a digit is at least this share of the row's height
WIDE = 0.6  # a part this many times wider than tall may be digits that touch
CUT_COST = 1.0  # log-probability each cut must gain over reading the part in fewer pieces
DIGIT_ASPECT = 0.8  # a handwritten digit is rarely wider than this share of its height
MIN_PIECE = 0.15  # a piece cut off is at least this share of the height wide (a 1)
JOIN_GAP = 0.1  # marks closer than this share of the row's height may be pieces of one digit
WIDE_PENALTY = 1.0  # log-probability a piece pays per unit of width/height beyond DIGIT_ASPECT

# uint8 (N, 28, 28) -> (N,) how well each reads as a digit, in log units; an optional attribute ``ceiling``
# (the most a field can score) lets a digit that already reads as well as a cut could skip the cuts
Score = Callable[[np.ndarray], np.ndarray]


@dataclass
class Digit:
    field: np.ndarray  # uint8 (28, 28): white digit on black, centred like MNIST
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original picture's pixels (x1, y1 exclusive)


@dataclass
class Part:
    """A group of ink pixels at work scale: its mask (cropped to its box) and the box."""

    mask: np.ndarray  # uint8 (h, w)
    x0: int
    y0: int
    mass: float = 0.0  # its ink: pixels weighted by strength (a faint leftover of a line weighs little)

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def find_digits(ink: Ink, score: Score | None = None, one: bool = False) -> tuple[list[Digit], str | None]:
    """The digits of a page, left to right, and why there are none (or None).

    ``one=True`` treats all the digit-like ink as a single digit (no row, no cuts).
    """
    if ink.problem:
        return [], ink.problem
    found = _components(ink)
    parts = _drop_non_digits(found, ink.mask.shape)
    if one and found and not parts:  # told there is one digit: a blob or a bar is that digit
        parts = [max(found, key=lambda p: p.mass)]
    if not parts:
        return [], "no digit-like ink found (only specks, lines or edges)"
    if one:
        groups = [_merge(parts)]
    else:
        groups = _merge_stacked(_row(parts))
        if len(groups) > MAX_DIGITS:
            return [], f"no number found ({len(groups)} marks in a row: text or a scribble?)"
        if score is not None:
            groups = _join_broken(groups, ink, score)
            groups = [piece for g in groups for piece in _split_touching(g, ink, score)]
    return [_digit(g, ink) for g in groups], None


# ---------------------------------------------------------------------------------------------- parts
def _components(ink: Ink) -> list[Part]:
    mask = ink.mask
    joined = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # bridge one-pixel breaks
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    parts = []
    for i in range(1, n):
        x, y, w, h, _area = stats[i]
        crop = (labels[y : y + h, x : x + w] == i) & (mask[y : y + h, x : x + w] > 0)
        if crop.any():
            mass = float(ink.strength[y : y + h, x : x + w][crop].sum()) / ink.level
            parts.append(Part(crop.astype(np.uint8), int(x), int(y), mass))
    return parts


def _drop_non_digits(parts: list[Part], shape: tuple[int, int]) -> list[Part]:
    """Drop specks, border-running edges, thin line leftovers and solid blobs."""
    if not parts:
        return parts
    h, w = shape

    def on_border(p: Part) -> bool:
        return p.x0 == 0 or p.y0 == 0 or p.x1 >= w or p.y1 >= h

    def line_like(p: Part) -> bool:  # a leftover of a ruled line or an edge; a "1" may be long and thin, upright
        flat = p.width > 6 * max(p.height, 1)
        return flat or (p.height > 12 * max(p.width, 1) and p.height > 0.3 * max(h, w))

    def blob_like(p: Part) -> bool:  # a shadow or a smudge: solid, large and not elongated, never a stroke
        long, short = max(p.width, p.height), min(p.width, p.height)
        return p.area > 0.7 * p.width * p.height and short > 0.15 * min(h, w) and long < 2.5 * short

    kept = [p for p in parts if not line_like(p) and not blob_like(p)]
    inside = [p for p in kept if not on_border(p)]
    if inside and max(p.mass for p in inside) >= 0.05 * max(p.mass for p in kept):
        kept = inside  # edges and the table along the border go when a real mark lies inside
    if not kept:
        return []
    heaviest = max(p.mass for p in kept)
    return [p for p in kept if p.mass >= SPECK * heaviest and p.mass >= FAINT * p.area]


def _row(parts: list[Part]) -> list[Part]:
    """The parts in the row of the largest part: overlapping its height band, tall enough to be digits."""
    anchor = max(parts, key=lambda p: p.mass)
    top, bottom = anchor.y0, anchor.y1
    for _ in range(2):  # grow the band by what is in it (digits of a number differ in height)
        row = [p for p in parts if _overlap(p.y0, p.y1, top, bottom) >= 0.5 * min(p.height, bottom - top)]
        top, bottom = min(p.y0 for p in row), max(p.y1 for p in row)
    tall = max(p.height for p in row)
    digits = [p for p in row if p.height >= ROW_HEIGHT * tall]
    # another part counts only when it sits right above or below a digit (a 5's detached bar, a broken 4)
    others = [p for p in parts if not any(p is d for d in digits)]
    digits += [s for s in others if any(_overlap(s.x0, s.x1, d.x0, d.x1) >= 0.5 * min(s.width, d.width)
                                         and _gap(s.y0, s.y1, d.y0, d.y1) <= 0.25 * tall for d in digits)]
    return sorted(digits, key=lambda p: p.x0)


def _merge_stacked(parts: list[Part]) -> list[Part]:
    """Merge parts that overlap horizontally by half the narrower one: pieces of one digit."""
    groups: list[Part] = []
    for p in sorted(parts, key=lambda q: q.x0):
        if groups and _overlap(p.x0, p.x1, groups[-1].x0, groups[-1].x1) >= 0.5 * min(p.width, groups[-1].width):
            groups[-1] = _merge([groups[-1], p])
        else:
            groups.append(p)
    return groups


def _merge(parts: list[Part]) -> Part:
    x0, y0 = min(p.x0 for p in parts), min(p.y0 for p in parts)
    x1, y1 = max(p.x1 for p in parts), max(p.y1 for p in parts)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for p in parts:
        mask[p.y0 - y0 : p.y1 - y0, p.x0 - x0 : p.x1 - x0] |= p.mask
    return Part(mask, x0, y0, sum(p.mass for p in parts))


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _gap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, max(a0, b0) - min(a1, b1))


# ---------------------------------------------------------------------------------------- touching digits
def _split_touching(part: Part, ink: Ink, score: Score) -> list[Part]:
    """Cut a part that is too wide for one digit where the network reads the pieces best.

    Every candidate (no cut, and cuts into 2..5 pieces at the lowest points of the ink's column profile) is read
    by the network in one batch; the one whose pieces read best on average (``score``) wins,
    a piece wider than a digit is (DIGIT_ASPECT) pays for it, and so does every cut (CUT_COST).
    """
    if part.width < WIDE * part.height:
        return [part]
    whole = float(np.asarray(score(_field(part, ink)[None]), np.float64)[0]) - _wide(part)
    if whole >= getattr(score, "ceiling", np.inf) - CUT_COST:  # no cut can read better than this: skip them all
        return [part]
    candidates = [[part]]
    max_pieces = min(5, max(2, round(part.width / (0.5 * part.height))))
    columns = _cut_columns(part)
    for pieces in range(2, max_pieces + 1):
        # one cut: every 5% of the width (a 1 beside a 9 meets it where the profile shows nothing);
        # more cuts: combinations of the profile's low points
        tries = [[c] for c in range(1, part.width, max(1, part.width // 20))] if pieces == 2 \
            else itertools.combinations(columns, pieces - 1)
        for cuts in tries:
            split = _cut(part, list(cuts))
            if len(split) == pieces and min(p.width for p in split) >= MIN_PIECE * part.height:
                candidates.append(split)
    pieces = [p for c in candidates for p in c]
    fields = np.stack([_field(p, ink) for p in pieces])
    fit = np.asarray(score(fields), np.float64)  # (pieces in all candidates,)
    fit -= np.array([_wide(p) for p in pieces])
    at, scores = 0, []
    for c in candidates:
        scores.append(float(fit[at : at + len(c)].mean()) - CUT_COST * (len(c) - 1))  # each cut must pay
        at += len(c)
    return candidates[int(np.argmax(scores))]


def _join_broken(groups: list[Part], ink: Ink, score: Score) -> list[Part]:
    """Join neighbours that are pieces of one digit (a 4 or a 0 written in two strokes that do not meet): two
    marks close together whose union reads clearly better as one digit than they read apart (the mirror
    image of cutting: joining saves a cut, so it wins by CUT_COST)."""
    if len(groups) < 2:
        return groups
    tall = max(g.height for g in groups)
    pairs = [i for i in range(len(groups) - 1)
             if _gap(groups[i].x0, groups[i].x1, groups[i + 1].x0, groups[i + 1].x1) <= JOIN_GAP * tall]
    if not pairs:
        return groups
    joined = {i: _merge([groups[i], groups[i + 1]]) for i in pairs}
    fields = [_field(groups[i], ink) for i in range(len(groups))] + [_field(joined[i], ink) for i in pairs]
    fit = np.asarray(score(np.stack(fields)), np.float64)
    alone, together = fit[: len(groups)], dict(zip(pairs, fit[len(groups) :]))
    out, i = [], 0
    while i < len(groups):
        if i in together and together[i] - _wide(joined[i]) > (alone[i] + alone[i + 1]) / 2 + CUT_COST:
            out.append(joined[i])
            i += 2
        else:
            out.append(groups[i])
            i += 1
    return out


def _wide(part: Part) -> float:
    """What a piece pays for being wider than a digit (log units)."""
    return WIDE_PENALTY * max(0.0, part.width / part.height - DIGIT_ASPECT)


def _cut_columns(part: Part, most: int = 6) -> list[int]:
    """Where to try cutting: the columns where the ink's column profile is lowest among its neighbours (a
    touching pair is thinnest where the digits meet; for a 1 that is far from the middle), at most ``most``,
    at least a fifth of the height apart, left to right."""
    profile = np.convolve(part.mask.sum(axis=0).astype(np.float64), np.ones(3) / 3, mode="same")
    w, apart = part.width, max(2, round(0.2 * part.height))
    inner = np.arange(max(1, round(0.1 * w)), min(w - 1, round(0.9 * w)))
    if inner.size == 0:
        return []
    lowest = [int(c) for c in inner[np.argsort(profile[inner], kind="stable")]
              if profile[c] <= profile[c - 1] and profile[c] <= profile[c + 1]]  # local minima, lowest first
    chosen: list[int] = []
    for c in lowest:
        if all(abs(c - d) >= apart for d in chosen):
            chosen.append(c)
        if len(chosen) == most:
            break
    return sorted(chosen)


def _cut(part: Part, cuts: list[int]) -> list[Part]:
    edges = [0, *sorted(cuts), part.width]
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        piece = part.mask[:, a:b]
        rows = np.flatnonzero(piece.any(axis=1))
        cols = np.flatnonzero(piece.any(axis=0))
        if rows.size == 0 or piece.sum() < 0.05 * part.area:
            continue
        out.append(Part(piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy(), part.x0 + a + int(cols[0]),
                        part.y0 + int(rows[0])))
    return out


# ------------------------------------------------------------------------------------------------ fields
def _digit(part: Part, ink: Ink) -> Digit:
    s = ink.scale
    box = (int(part.x0 * s), int(part.y0 * s), int(np.ceil(part.x1 * s)), int(np.ceil(part.y1 * s)))
    return Digit(_field(part, ink), box)


def _field(part: Part, ink: Ink) -> np.ndarray:
    """A part's grey levels -> uint8 (28, 28) MNIST-style."""
    pad = 2
    y0, x0 = max(0, part.y0 - pad), max(0, part.x0 - pad)
    y1, x1 = min(ink.mask.shape[0], part.y1 + pad), min(ink.mask.shape[1], part.x1 + pad)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    mask[part.y0 - y0 : part.y1 - y0, part.x0 - x0 : part.x1 - x0] = part.mask
    near = cv2.dilate(mask, np.ones((3, 3), np.uint8))  # keep the anti-aliased rim of the strokes
    grey = np.clip(ink.strength[y0:y1, x0:x1] / ink.level, 0.0, 1.0) * near
    grey = _thicken(grey, mask, max(part.height, part.width))
    return mnist_field(grey)


def _thicken(grey: np.ndarray, mask: np.ndarray, longer: int) -> np.ndarray:
    """Strokes much thinner than MNIST's (a fine pen, a large digit) are widened by a grey dilation."""
    area = float(mask.sum())
    rim = float((mask & (1 - cv2.erode(mask, np.ones((3, 3), np.uint8)))).sum())
    if area == 0 or rim == 0:
        return grey
    width = 2.0 * area / rim  # stroke width in working pixels
    wanted = MNIST_STROKE * longer / BOX
    if width >= 0.7 * wanted:
        return grey
    k = int(round(wanted - width)) | 1
    grey = np.pad(grey, k)  # room for the wider strokes
    return cv2.dilate(grey, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


NUDGES = ((-12, 1.0, 0, 0), (12, 1.0, 0, 0), (0, 0.85, 0, 0), (0, 1.1, 0, 0),
          (0, 1.0, 2, 0), (0, 1.0, -2, 0), (0, 1.0, 0, 2), (0, 1.0, 0, -2))  # degrees, zoom, dx, dy


def nudged(field: np.ndarray) -> np.ndarray:
    """uint8 (28, 28) -> uint8 (1 + len(NUDGES), 28, 28): the field and small rotations, zooms and shifts of it.
    A digit reads the same in all of them; a letter or a scribble that happened to read as a digit often not."""
    out = [field]
    for degrees, zoom, dx, dy in NUDGES:
        m = cv2.getRotationMatrix2D((CENTRE, CENTRE), degrees, zoom)
        m[:, 2] += (dx, dy)
        out.append(cv2.warpAffine(field, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR))
    return np.stack(out)


def mnist_field(grey: np.ndarray) -> np.ndarray:
    """float (h, w) ink in 0..1 (0 = background) -> uint8 (28, 28): cropped to the ink, longer side scaled to
    20 px with anti-aliasing, pasted into 28x28, shifted by whole pixels so the centre of mass is at (14, 14)."""
    ys, xs = np.nonzero(grey > 0.2)
    if ys.size == 0:
        ys, xs = np.nonzero(grey > 0)
    crop = np.ascontiguousarray(grey[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], dtype=np.float32)
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    small = np.clip(cv2.resize(crop, (nw, nh), interpolation=interpolation), 0.0, 1.0)
    field = np.zeros((SIZE, SIZE), np.float32)
    top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
    field[top : top + nh, left : left + nw] = small
    field = _centre_of_mass_shift(field, (top, left, nh, nw))
    return np.round(field * 255.0).astype(np.uint8)


def _centre_of_mass_shift(field: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Shift by whole pixels so the centre of mass is at (14, 14), never pushing ink out of the field."""
    top, left, nh, nw = box
    total = float(field.sum())
    if total <= 0:
        return field
    idx = np.arange(SIZE, dtype=np.float64)
    cy = float(field.sum(axis=1) @ idx) / total
    cx = float(field.sum(axis=0) @ idx) / total
    dy = int(np.clip(round(CENTRE - cy), -top, SIZE - top - nh))
    dx = int(np.clip(round(CENTRE - cx), -left, SIZE - left - nw))
    out = np.zeros_like(field)
    out[top + dy : top + dy + nh, left + dx : left + dx + nw] = field[top : top + nh, left : left + nw]
    return out
