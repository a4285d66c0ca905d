"""Find the digits in a page's ink and make each an MNIST-style 28x28 field: the second half of reading.

1. connected components of the ink (a small closing first joins broken strokes);
2. what is not a digit is dropped: specks, components that run along the picture's border (page
   edges, the table) when something else is there, long thin leftovers of lines, solid blobs (shadows),
   hollow frames around other marks (a sheet's outline, a box drawn around the digit);
3. the digits are the components in the row of the largest one, read left to right; parts of one
   digit that lie above each other (a 5's bar, a broken 4) are merged;
4. the row is read as a whole (``read_line``): marks wide enough for two digits are cut at candidate places,
   every run of neighbouring pieces that could be one digit is read by the network, and dynamic programming
   chooses the reading whose digits read best together, as LeCun's cheque readers did: touching digits are
   cut apart and a digit written in two strokes is joined; ``score`` is that network (this module knows no
   engine);
5. each digit keeps its grey levels, its strokes are brought to MNIST's thickness when much thinner,
   then MNIST's recipe: the longer side scaled to 20 px, pasted into 28x28, centre of mass at (14, 14).

The line reader's costs and limits below (the group "The line reader") were chosen on the tuning scenes
only (tests/photo_scenes.py, seed 100: MNIST test digits in photo-like scenes, 200 numbers and 100 digits,
read exactly), never on the pen-stroke set the benchmarks report on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from lenet5.data.page import Ink, components_with_stats

# MNIST's field: BOX to MNIST_STROKE follow MNIST itself (its recipe and its measured digits); the rest were chosen
# on the tuning scenes (tests/photo_scenes.py, seed 100)
BOX = 20  # the longer side of the digit inside the 28x28 field
SIZE = 28  # the field's side, MNIST's
CENTRE = 14.0  # MNIST's mean centre of mass, in pixel-index coordinates (measured: 13.99, 14.01)
MNIST_STROKE = 2.2  # MNIST's median stroke width in the field, 2*area/perimeter of pixels > 100
THIN_STROKE = 0.7  # strokes thinner than this share of MNIST's (at the field's scale) are thickened
CROP_INK = 0.2  # the field is cropped to the pixels stronger than this (0..1 of a stroke's core); fainter rim goes

# Marks and digits: chosen on the tuning scenes (tests/photo_scenes.py, seed 100) and their failures
MAX_DIGITS = 12  # more "digits" than this in one row is text or scribble, not a number
SPECK = 0.04  # a component under this share of the heaviest one's ink (mass) is a speck
FAINT = 0.3  # a component whose mean strength is under this share of a stroke's is a leftover (lines, shade)
LINE_FLAT = 6  # a mark this many times wider than tall is a leftover of a ruled line or an edge, ...
LINE_THIN = 12  # ... and so is one this many times taller than wide ...
LINE_TALL = 0.3  # ... that is at least this share of the picture's longer side, ...
ONE_TALL = 1.3  # ... unless it is alone or a mark in its row is this tall against it (a "1" is long and thin too)
BLOB_FILL = 0.7  # a blob (a shadow, a smudge) fills more than this share of its box, ...
BLOB_SIDE = 0.15  # ... its shorter side is more than this share of the picture's shorter side ...
BLOB_LONG = 2.5  # ... and its longer side less than this many times its shorter
INSIDE_MASS = 0.05  # marks along the border go when a mark inside is this heavy against the heaviest, ...
CROPPED_HEIGHT = (0.6, 1.6)  # ... except one this tall against the marks inside, in their row (a cropped number)
CROPPED_WIDE = 1.5  # ... and at most this many times as wide as they are tall (a page's edge is longer), ...
CROPPED_GAP = 1.0  # ... at most this many of their heights from the nearest of them or of such marks
HOLLOW = 0.25  # a frame (a sheet's outline, a box) covers less than this share of its box with ink
FRAMED_HEIGHT = 0.1  # ... and holds a mark at least this share of its height tall
STACK_OVERLAP = 0.25  # pieces of one digit above each other overlap across this share of the narrower
STACK_GAP = 0.25  # ... with a gap of at most this share of the taller
MAX_PARTS = 60  # more marks than this on a page: text or texture, not stacked pieces worth pairing up
ROW_OVERLAP = 0.5  # a mark is in a row when it overlaps the row's band across this share of the shorter of the two
ROW_PASSES = 2  # the row's band is grown this many times by what is in it (digits of a number differ in height)
ROW_HEIGHT = 0.4  # a digit is at least this share of the row's height
ATTACH_OVERLAP = 0.5  # a part outside the row counts when it overlaps a digit across this share of the narrower, ...
ATTACH_GAP = 0.25  # ... with a gap of at most this share of the row's height (a 5's detached bar, a broken 4)
MERGE_OVERLAP = 0.5  # marks of the row that overlap across this share of the narrower are pieces of one digit
LEFT_OUT = 0.4  # a mark left beside a reading counts when it is this heavy against the median digit, ...
LEFT_OUT_REACH = 1  # ... lies within this many row heights of the reading's ends ...
LEFT_OUT_WIDE = 3  # ... and is at most this many row heights wide (a longer mark is a line across the number)

# The line reader: chosen on the tuning scenes only (tests/photo_scenes.py, seed 100), never on the pen-stroke set
WIDE = 0.6  # a mark this many times wider than tall may be digits that touch: it is over-segmented
DIGIT_ASPECT = 0.8  # a handwritten digit is rarely wider than this share of its height
WIDE_PENALTY = 1.0  # log-probability a candidate pays per unit of width/height beyond DIGIT_ASPECT
WIDE_MIN_HEIGHT = 0.5  # ... its height taken as at least this share of the row's (a flat piece is no wider for it)
JOIN_GAP = 0.1  # marks closer than this share of the row's height may be pieces of one digit
MAX_ATOMS = 4  # a candidate digit joining marks is at most this many neighbouring atoms
MAX_WIDE = 1.3  # a candidate digit is at most this many times as wide as the row is tall (or a whole mark)
MAX_CUTS = 8  # cuts tried in one mark
CUTS_PER_WIDTH = 4.0  # ... and at most this many per unit of its width / height
CUT_EDGE = 0.1  # no cut within this share of the mark's width from either side
CUT_STEP = 0.12  # besides the profile's low points, a cut every this share of the mark's height
EVEN_CUT_COST = 0.5  # ink pixels a cut at an even step counts beyond those it crosses (low points go first)
CUT_APART = 0.2  # cuts are at least this share of the mark's height apart
SLOPES = (0.0, -0.3, 0.3)  # cut lines tried: upright, and leaning (dx per dy) either way
PIECE_MIN = 0.02  # a piece cut off with less than this share of the mark's pixels is dropped
SEGMENT_COST = 0.7  # log-probability every digit of a reading pays: a split must read clearly better
JOIN_COST = 1.5  # ... and every join of separate marks into one digit: most marks apart are digits apart
BEAM = 4  # readings kept at every atom, each with other digits (the runner-up gives the margin)

# uint8 (N, 28, 28) -> (N, 10) calibrated log-probabilities of the ten digits; the network is trained to spread
# them evenly over a field that is not one whole digit
Score = Callable[[np.ndarray], np.ndarray]


@dataclass
class Digit:
    field: np.ndarray  # uint8 (28, 28): white digit on black, centred like MNIST
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original picture's pixels (x1, y1 exclusive)
    margin: float = float("inf")  # the line's: how much better its reading scored than the runner-up (Line)
    rival: str | None = None  # the line's: the runner-up reading's digits
    left_out: int = 0  # the line's: marks beside the reading, heavy enough for a digit, that were not read
    mark: int = 0  # the mark (connected ink) this digit was read from: digits cut from one mark share it


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
    parts = _drop_non_digits(found, ink.mask.shape, ink.margin)
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
            line = read_line(groups, ink, score)
            left_out = _left_out(found, line.parts)
            marks = line.marks or list(range(len(line.parts)))
            return [_digit(g, ink, line.margin, line.rival, left_out, k) for g, k in zip(line.parts, marks)], None
    return [_digit(g, ink, mark=k) for k, g in enumerate(groups)], None  # no network: each mark one digit


def _left_out(found: list[Part], read: list[Part]) -> int:
    """How many marks beside the reading, as heavy as a good share of a digit, were not read: a digit dropped
    for looking like an edge or a line, or a mark across the number. A reading that leaves one is unsure."""
    top, bottom = min(p.y0 for p in read), max(p.y1 for p in read)
    tall = bottom - top
    reach = LEFT_OUT_REACH * tall
    x0, x1 = min(p.x0 for p in read) - reach, max(p.x1 for p in read) + reach
    heavy = LEFT_OUT * float(np.median([p.mass for p in read]))

    def used(c: Part) -> bool:  # its pixels are part of a digit read
        return any(
            _overlap(c.x0, c.x1, p.x0, p.x1)
            and _overlap(c.y0, c.y1, p.y0, p.y1)
            and p.mask[max(0, c.y0 - p.y0) : c.y1 - p.y0, max(0, c.x0 - p.x0) : c.x1 - p.x0].any()
            for p in read
        )

    return sum(
        1
        for c in found
        if c.mass >= heavy
        and _overlap(c.y0, c.y1, top, bottom) >= ROW_OVERLAP * min(c.height, tall)
        and _overlap(c.x0, c.x1, x0, x1) > 0
        and c.width <= LEFT_OUT_WIDE * tall
        and not used(c)
    )


# ---------------------------------------------------------------------------------------------- parts
def _components(ink: Ink) -> list[Part]:
    mask = ink.mask
    joined = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # bridge one-pixel breaks
    n, labels, stats = components_with_stats(joined)
    parts = []
    for i in range(1, n):
        x, y, w, h, _area = stats[i]
        crop = (labels[y : y + h, x : x + w] == i) & (mask[y : y + h, x : x + w] > 0)
        if crop.any():
            mass = float(ink.strength[y : y + h, x : x + w][crop].sum()) / ink.level
            parts.append(Part(crop.astype(np.uint8), int(x), int(y), mass))
    return parts


def _drop_non_digits(parts: list[Part], shape: tuple[int, int], margin: int = 0) -> list[Part]:
    """Drop specks, border-running edges, thin line leftovers and solid blobs (the picture's border lies
    ``margin`` pixels inside the mask's, see page.find_ink)."""
    if not parts:
        return parts
    h, w = shape

    def on_border(p: Part) -> bool:
        return p.x0 <= margin or p.y0 <= margin or p.x1 >= w - margin or p.y1 >= h - margin

    def flat(p: Part) -> bool:  # a leftover of a ruled line or an edge
        return p.width > LINE_FLAT * max(p.height, 1)

    def upright(p: Part) -> bool:  # the same standing up, or a "1" written with a thin pen
        return p.height > LINE_THIN * max(p.width, 1) and p.height > LINE_TALL * max(h, w)

    def blob_like(p: Part) -> bool:  # a shadow or a smudge: solid, large and not elongated, never a stroke
        long, short = max(p.width, p.height), min(p.width, p.height)
        return p.area > BLOB_FILL * p.width * p.height and short > BLOB_SIDE * min(h, w) and long < BLOB_LONG * short

    marks = [p for p in parts if not flat(p) and not blob_like(p)]
    others = [p for p in marks if not upright(p)]
    kept = [p for p in marks if not upright(p) or _a_one(p, others)]
    kept = [p for p in kept if not _frames_others(p, kept)]
    inside = [p for p in kept if not on_border(p)]
    if inside and max(p.mass for p in inside) >= INSIDE_MASS * max(p.mass for p in kept):
        # edges and the table along the border go when a real mark lies inside, but not a digit of the line
        # that a tight crop cut into (a number cropped to its ink touches the picture's edge on both sides)
        kept = inside + _in_reach([p for p in kept if on_border(p) and _beside(p, inside)], inside)
    if not kept:
        return []
    heaviest = max(p.mass for p in kept)
    return [p for p in kept if p.mass >= SPECK * heaviest and p.mass >= FAINT * p.area]


def _a_one(p: Part, others: list[Part]) -> bool:
    """A thin upright mark is a "1" when it is the only mark, or when a digit-sized mark stands in its row
    nearly as tall as it (ONE_TALL): a line or an edge is the only mark of its kind and runs past the writing."""
    heavy = [q for q in others if q.mass >= SPECK * p.mass]
    if not heavy:
        return True
    return any(
        _overlap(q.y0, q.y1, p.y0, p.y1) >= ROW_OVERLAP * min(q.height, p.height) and ONE_TALL * q.height >= p.height
        for q in heavy
    )


def _beside(p: Part, inside: list[Part]) -> bool:
    """A mark on the picture's border that sits in the row of the marks inside like one more digit: as tall as
    they are (CROPPED_HEIGHT), in their band (ROW_OVERLAP of its height), no wider than a digit (CROPPED_WIDE)."""
    heavy = [q for q in inside if q.mass >= SPECK * max(r.mass for r in inside)]
    top = float(np.median([q.y0 for q in heavy]))
    bottom = float(np.median([q.y1 for q in heavy]))
    tall = bottom - top
    overlap = min(p.y1, bottom) - max(p.y0, top)
    return (
        tall > 0
        and CROPPED_HEIGHT[0] * tall <= p.height <= CROPPED_HEIGHT[1] * tall
        and overlap >= ROW_OVERLAP * p.height
        and p.width <= CROPPED_WIDE * tall
    )


def _in_reach(found: list[Part], inside: list[Part]) -> list[Part]:
    """Of the border marks ``found`` beside the marks inside (_beside), those as close to the row as digits of
    a number are: within CROPPED_GAP of its height of an inside mark or of a border mark already in reach (a
    number cropped to its ink touches the edges with several digits; a table's edge across the picture from
    the writing is out of reach)."""
    heavy = [q for q in inside if q.mass >= SPECK * max(r.mass for r in inside)]
    reach = CROPPED_GAP * (float(np.median([q.y1 for q in heavy])) - float(np.median([q.y0 for q in heavy])))
    row, rest = list(heavy), list(found)  # parts hold arrays: told apart by identity, never compared
    while True:
        near = [p for p in rest if min(_gap(p.x0, p.x1, q.x0, q.x1) for q in row) <= reach]
        if not near:
            return [p for p in found if all(p is not q for q in rest)]
        row += near
        rest = [p for p in rest if all(p is not q for q in near)]


def _frames_others(p: Part, parts: list[Part]) -> bool:
    """A hollow mark whose box holds another sizeable mark: a frame around the writing, not a digit (a digit's
    loops hold nothing but specks)."""
    if p.area >= HOLLOW * p.width * p.height:
        return False
    return any(
        q is not p
        and q.x0 > p.x0
        and q.x1 < p.x1
        and q.y0 > p.y0
        and q.y1 < p.y1
        and q.mass >= SPECK * p.mass
        and q.height >= FRAMED_HEIGHT * p.height
        and _surrounds(p, q)
        for q in parts
    )


def _surrounds(p: Part, q: Part) -> bool:
    """p has ink on all four sides of q (left and right in q's rows, above and below in q's columns): q lies
    inside p, not just inside p's box (a piece of a digit beside a wide pair of touching digits)."""
    rows, cols = slice(q.y0 - p.y0, q.y1 - p.y0), slice(q.x0 - p.x0, q.x1 - p.x0)
    return bool(
        p.mask[rows, : cols.start].any()
        and p.mask[rows, cols.stop :].any()
        and p.mask[: rows.start, cols].any()
        and p.mask[rows.stop :, cols].any()
    )


def _stacked(parts: list[Part]) -> list[Part]:
    """Parts that lie above each other (overlapping across STACK_OVERLAP of the narrower, a gap under STACK_GAP of
    the tallest part's height) merged: pieces of one digit the pen did not join (a 6's stem over its loop)."""
    groups = list(parts)
    tall = max(p.height for p in parts)
    merged = True
    while merged:
        merged = False
        for i, j in itertools.combinations(range(len(groups)), 2):
            a, b = groups[i], groups[j]
            if (
                _overlap(a.x0, a.x1, b.x0, b.x1) >= STACK_OVERLAP * min(a.width, b.width)
                and _gap(a.y0, a.y1, b.y0, b.y1) <= STACK_GAP * tall
                and _gap(a.y0, a.y1, b.y0, b.y1) > 0
                or _inside(a, b)
                or _inside(b, a)
            ):
                groups[i] = _merge([a, b])
                del groups[j]
                merged = True
                break
    return groups


def _inside(a: Part, b: Part) -> bool:
    """a's box lies within b's columns and overlaps its rows (a dot inside a loop, a crossing bar)."""
    return a.x0 >= b.x0 and a.x1 <= b.x1 and _overlap(a.y0, a.y1, b.y0, b.y1) > 0


def _row(parts: list[Part]) -> list[Part]:
    """The marks in the row of the largest one: overlapping its height band, tall enough to be digits (the pieces
    of a digit stacked above each other count as one mark)."""
    parts = _stacked(parts) if len(parts) <= MAX_PARTS else parts
    anchor = max(parts, key=lambda p: p.mass)
    top, bottom = anchor.y0, anchor.y1
    for _ in range(ROW_PASSES):  # grow the band by what is in it (digits of a number differ in height)
        row = [p for p in parts if _overlap(p.y0, p.y1, top, bottom) >= ROW_OVERLAP * min(p.height, bottom - top)]
        top, bottom = min(p.y0 for p in row), max(p.y1 for p in row)
    tall = max(p.height for p in row)
    digits = [p for p in row if p.height >= ROW_HEIGHT * tall]
    # another part counts only when it sits right above or below a digit (a 5's detached bar, a broken 4)
    others = [p for p in parts if not any(p is d for d in digits)]
    digits += [
        s
        for s in others
        if any(
            _overlap(s.x0, s.x1, d.x0, d.x1) >= ATTACH_OVERLAP * min(s.width, d.width)
            and _gap(s.y0, s.y1, d.y0, d.y1) <= ATTACH_GAP * tall
            for d in digits
        )
    ]
    return sorted(digits, key=lambda p: p.x0)


def _merge_stacked(parts: list[Part]) -> list[Part]:
    """Merge parts that overlap horizontally across MERGE_OVERLAP of the narrower one: pieces of one digit."""
    groups: list[Part] = []
    for p in sorted(parts, key=lambda q: q.x0):
        last = groups[-1] if groups else None
        if last is not None and _overlap(p.x0, p.x1, last.x0, last.x1) >= MERGE_OVERLAP * min(p.width, last.width):
            groups[-1] = _merge([last, p])
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


# ---------------------------------------------------------------------------------------- the whole line
@dataclass
class Line:
    """The best reading of a line: its digits' parts, and how sure its segmentation is: how much better (log
    units) it read than the best reading with other digits (``rival``), or inf when there was no other."""

    parts: list[Part]
    margin: float = float("inf")
    rival: str | None = None
    marks: list[int] | None = None  # which mark (connected ink, before cutting) each part comes from


def read_line(groups: list[Part], ink: Ink, score: Score) -> Line:
    """The best reading of a row of marks as digits (LeCun et al. 1998, sections V-VI).

    1. over-segment: each mark wide enough to hold two digits is cut at candidate places (the low points
       of its column profile, each cut vertical or slanted, whichever crosses the least ink), into atoms;
    2. every run of up to MAX_ATOMS neighbouring atoms that could be one digit (no wider than MAX_WIDE of the
       row's height; across marks only when they nearly touch) is a candidate digit, read by the network in
       one batch: ``score`` gives their log-probabilities, and the top one says how well each reads as a whole
       digit (the network is trained to be unsure of pieces, pairs and non-digits);
    3. dynamic programming finds the path through the atoms whose candidates read best together, each digit
       paying SEGMENT_COST, so a digit cut in two pays twice and must read clearly better in pieces. It keeps
       the best few readings with different digits at every atom, so the margin to the runner-up says how
       sure the segmentation is.
    """
    tall = max(g.height for g in groups)
    atoms: list[Part] = []
    mark: list[int] = []  # which group each atom comes from
    for k, g in enumerate(groups):
        pieces = _oversegment(g, tall)
        atoms += pieces
        mark += [k] * len(pieces)
    n = len(atoms)
    candidates: list[tuple[int, int, Part]] = []
    for i in range(n):
        for j in range(i + 1, n + 1):
            if mark[j - 1] != mark[i]:  # across marks: only a few atoms, and only marks that nearly touch
                if (
                    j - i > MAX_ATOMS
                    or _gap(atoms[j - 2].x0, atoms[j - 2].x1, atoms[j - 1].x0, atoms[j - 1].x1) > JOIN_GAP * tall
                ):
                    break
            part = atoms[i] if j == i + 1 else _merge(atoms[i:j])
            whole_mark = (
                mark[i] == mark[j - 1] and (i == 0 or mark[i - 1] != mark[i]) and (j == n or mark[j] != mark[j - 1])
            )
            if j > i + 1 and part.width > MAX_WIDE * tall and not whole_mark:
                if mark[j - 1] != mark[i]:
                    break
                continue  # a run too wide for a digit; the whole mark is still tried
            candidates.append((i, j, part))
    logp = np.asarray(score(np.stack([_field(p, ink) for _, _, p in candidates])), np.float64)  # (C, 10)
    fit = logp.max(axis=1) - np.array([_wide(p, tall) + JOIN_COST * (mark[j - 1] - mark[i]) for i, j, p in candidates])
    read_as = logp.argmax(axis=1)
    # readings of the atoms 0..j: the best few with different digits, as (score, digits, parts)
    beams: list[list[tuple[float, str, list[tuple[Part, int]]]]] = [[(0.0, "", [])]]
    for j in range(1, n + 1):
        beams.append(
            _best_distinct(
                [
                    (total + fit[c] - SEGMENT_COST, text + str(read_as[c]), parts + [(part, mark[i])])
                    for c, (i, end, part) in enumerate(candidates)
                    if end == j
                    for total, text, parts in beams[i]
                ]
            )
        )
    (total, _text, chosen), *rivals = beams[n]
    parts, marks = [p for p, _ in chosen], [k for _, k in chosen]
    if not rivals:
        return Line(parts, marks=marks)
    return Line(parts, total - rivals[0][0], rivals[0][1], marks)


def _best_distinct(readings: list[tuple[float, str, list]], keep: int = BEAM) -> list[tuple[float, str, list]]:
    """The ``keep`` best readings whose digits differ (of readings with the same digits, the best)."""
    out, seen = [], set()
    for r in sorted(readings, key=lambda r: -r[0]):
        if r[1] not in seen:
            seen.add(r[1])
            out.append(r)
            if len(out) == keep:
                break
    return out


def _wide(part: Part, tall: int) -> float:
    """What a candidate pays for being wider than a digit is (log units)."""
    return WIDE_PENALTY * max(0.0, part.width / max(part.height, WIDE_MIN_HEIGHT * tall) - DIGIT_ASPECT)


def _oversegment(part: Part, tall: int) -> list[Part]:
    """A mark cut at every candidate place into atoms, left to right (the mark itself when it is narrow)."""
    if part.width < WIDE * part.height:
        return [part]
    cuts = _cut_lines(part, int(np.clip(round(CUTS_PER_WIDTH * part.width / part.height), 1, MAX_CUTS)))
    return _cut(part, cuts) if cuts else [part]


def _cut_lines(part: Part, most: int) -> list[tuple[float, float]]:
    """Where to cut a wide mark: (column at mid-height, slope dx/dy) of up to ``most`` lines, left to right.
    Candidates are the columns where the ink's column profile is lowest among its neighbours (a touching pair
    is thinnest where the digits meet), and every CUT_STEP of the height (a 1 beside a 9 meets it where the
    profile shows nothing); each is tried upright and slanted both ways, and keeps the slant that crosses
    the least ink. Cuts are at least CUT_APART of the height apart and never cross inside the mark."""
    mask = part.mask.astype(np.float32)
    h, w = mask.shape
    profile = np.convolve(mask.sum(axis=0), np.ones(3) / 3, mode="same")
    lo, hi = max(1, round(CUT_EDGE * w)), min(w - 1, round((1 - CUT_EDGE) * w))
    inner = np.arange(lo, hi)
    if inner.size == 0:
        return []
    minima = [
        int(c)
        for c in inner[np.argsort(profile[inner], kind="stable")]
        if profile[c] <= profile[c - 1] and profile[c] <= profile[c + 1]
    ]
    even = list(range(lo, hi, max(1, round(CUT_STEP * h))))
    columns = np.array(minima + even, np.float64)  # (C,)
    rows = np.arange(h) - (h - 1) / 2.0
    padded = np.pad(mask, ((0, 0), (0, 1)))  # column w: no ink, where a slanted line leaves the mark
    crossed = np.empty((len(SLOPES), len(columns)))  # ink under each line
    for k, slope in enumerate(SLOPES):
        xs = np.round(columns[:, None] + slope * rows[None, :]).astype(np.int64)  # (C, h)
        xs[(xs < 0) | (xs >= w)] = w
        crossed[k] = padded[np.arange(h)[None, :], xs].sum(axis=1)
    best = crossed.argmin(axis=0)  # the first slope (upright) wins ties
    tried = [
        (float(crossed[b, i]) + (0.0 if i < len(minima) else EVEN_CUT_COST), float(c), SLOPES[b])
        for i, (c, b) in enumerate(zip(columns, best))
    ]  # (ink crossed, column, slope)
    apart = max(2.0, CUT_APART * h)
    chosen: list[tuple[float, float]] = []
    for _ink, c, slope in sorted(tried):
        if all(abs(c - d) >= apart and _no_cross(c, slope, d, e, h) for d, e in chosen):
            chosen.append((c, slope))
        if len(chosen) == most:
            break
    return sorted(chosen)


def _no_cross(c0: float, s0: float, c1: float, s1: float, h: int) -> bool:
    """Two cut lines x = c + s * (y - mid) do not meet between the mark's top and bottom."""
    half = h / 2.0
    return (c0 - c1 + (s0 - s1) * half) * (c0 - c1 - (s0 - s1) * half) > 0


def _cut(part: Part, cuts: list[tuple[float, float]]) -> list[Part]:
    """Cut a mark along lines x = column + slope * (y - mid) into pieces, left to right (empty ones dropped)."""
    h, w = part.mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    piece_of = np.zeros((h, w), np.int32)
    for c, slope in cuts:
        piece_of += xs >= c + slope * (ys - (h - 1) / 2.0)
    out = []
    for k in range(len(cuts) + 1):
        piece = part.mask * (piece_of == k)
        rows = np.flatnonzero(piece.any(axis=1))
        cols = np.flatnonzero(piece.any(axis=0))
        if rows.size == 0 or piece.sum() < PIECE_MIN * part.area:
            continue
        crop = piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.uint8)
        out.append(Part(crop, part.x0 + int(cols[0]), part.y0 + int(rows[0]), part.mass * crop.sum() / part.area))
    return out


# ------------------------------------------------------------------------------------------------ fields
def _digit(
    part: Part, ink: Ink, margin: float = float("inf"), rival: str | None = None, left_out: int = 0, mark: int = 0
) -> Digit:
    s, m = ink.scale, ink.margin
    box = (
        max(0, int((part.x0 - m) * s)),
        max(0, int((part.y0 - m) * s)),
        int(np.ceil((part.x1 - m) * s)),
        int(np.ceil((part.y1 - m) * s)),
    )
    return Digit(_field(part, ink), box, margin, rival, left_out, mark)


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
    if width >= THIN_STROKE * wanted:
        return grey
    k = int(round(wanted - width)) | 1
    grey = np.pad(grey, k)  # room for the wider strokes
    return cv2.dilate(grey, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))


def mnist_field(grey: np.ndarray) -> np.ndarray:
    """float (h, w) ink in 0..1 (0 = background) -> uint8 (28, 28): cropped to the ink, longer side scaled to
    20 px with anti-aliasing, pasted into 28x28, shifted by whole pixels so the centre of mass is at (14, 14)."""
    ys, xs = np.nonzero(grey > CROP_INK)
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
