"""Clean a photo or scan of a page until only the ink is left: the first half of reading a person's digits.

A phone photo is not MNIST: the light falls unevenly, the paper may be ruled or squared, the sheet may lie on a
table, and the border of the picture says little about the background. The steps (OpenCV, see README):

1. polarity: is the ink darker than its background (paper) or lighter (a drawing on black, chalk)?
   Light ink is inverted, so that everything below sees dark ink on a light background;
2. the sheet: when the picture shows a light sheet on a darker table (a sharp two-level split of a
   blurred thumbnail, the dark level reaching the picture's border), only the sheet is kept;
3. illumination: the paper's local brightness is estimated (a grey closing wider than the strokes, on a
   reduced copy, lightly smoothed; one level for a clean two-level image) and divided out, so ink strength =
   1 - pixel / paper in 0..1, the same in shade and light;
4. a threshold that adapts to the image: ink is what stands out from the paper's own noise (robust
   spread), with hysteresis so that faint anti-aliased edges stay attached to strong strokes;
5. ruled and squared lines: long thin runs along the rows or the columns (a morphological opening with a
   long kernel), removed where the ink is no thicker than a line (strokes that cross a line stay whole).

Large dark objects on the page (far darker than the paper, wider than any stroke) are no ink: their
outline is ignored. The result keeps grey levels (``strength``) next to the binary ``mask``: MNIST digits are
anti-aliased.
All work happens on a copy at most WORK_SIDE pixels long; ``scale`` maps back to the original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The working copies: sizes that bound the work, not fitted to any data
WORK_SIDE = 1024  # the longer side of the working copy (a 12 MP photo is reduced about 4x)
THUMB_SIDE = 256  # the longer side of the thumbnail used for polarity, the sheet and the paper's brightness

# Small pictures and enlarged grids: chosen for MNIST's own 28x28 digits, digits cropped to their ink and 8x8
# optical-digit scans blown up by repeating pixels (tests/grid_digits.py)
MARGIN_BELOW = 640  # a picture no longer than this (working pixels) gets a margin of paper around it
SMALL_SIDE = 256  # ... after being enlarged to at least this long (a 28x28 digit, an 8x8 grid enlarged a little)
NATIVE_CELLS = 64  # an enlarged grid has at most this many cells each way (old optical-digit scans: 8 to 32)
MIN_GRID_CELLS = 4  # ... and at least this many
MIN_CELL = 2  # ... each at least this many pixels across (a photo changes from one pixel to the next)
CELL_SLACK = 0.05  # a run may miss a whole number of cells by a pixel and this share of a cell (factors not whole)
MARGIN_SHARE = 0.2  # the margin, as a share of the longer side
EDGE_INK = 0.3  # a border pixel this far from the border's median brightness is ink running into the edge
EDGE_SHARE = 0.02  # ... and a picture with at least this share of such border pixels gets the margin

# Polarity and the sheet: chosen on the tuning scenes (tests/photo_scenes.py, seed 100) and their failures
INK_MINORITY = 0.5  # ink covers less than this share of a picture (light ink's class; the marks a black-hat shows)
SHEET_MIN_THUMB = 32  # a thumbnail with a shorter side under this (pixels) is too small to hold a sheet: a digit
SHEET_AREA = 0.2  # a light class covering this share of the thumbnail, ...
SHEET_FILL = 0.85  # ... and more than this share of its convex hull, is a sheet of paper, not light ink
SHEET_BLUR = 0.012  # the sheet is looked for in the thumbnail blurred by this share of its longer side (sigma)
SHEET_GAP = 0.12  # a sheet is at least this much brighter (0..1) than the table
SHEET_MIDDLE = 0.25  # a level more than this share of that gap away from both lies between table and sheet
SHEET_BETWEEN = 0.12  # more pixels than this share between them: a gradual change of light, not a sheet's edge
SHEET_MIN_SHARE = 0.15  # the sheet covers at least this share of the thumbnail
TABLE_ON_BORDER = 0.3  # the table shows along at least this share of the picture's border
SHEET_INSET = 2  # the sheet is kept this many blur sigmas inside its edge (off the edge and its shading)

# Paper and threshold: chosen on the tuning scenes (tests/photo_scenes.py, seed 100) and their failures
PAPER_MIN_SIDE = 48  # a picture with a shorter side under this (working pixels) has one paper level, ...
PAPER_PERCENTILE = 95  # ... this percentile of its brightness (also the one level of a clean picture)
CLOSING_STROKES = 3.0  # the paper's closing is this many stroke widths wide, ...
CLOSING_MIN = 0.05  # ... but at least this share ...
CLOSING_MAX = 0.2  # ... and at most this share of the thumbnail's shorter side
PAPER_SMOOTHING = 4  # the closed paper is blurred with a sigma of the closing's size over this
BLACKHAT_SHARE = 0.08  # the black-hat that measures the stroke width: this share of the thumbnail's shorter side
CLEAN_PERCENTILES = (1, 99)  # the paper and ink levels of a clean picture: these percentiles of its thumbnail, ...
CLEAN_GAP = 0.5  # ... more than this far apart (0..1)
CLEAN_MIDDLE = 0.2  # a level more than this share of their gap away from both lies between paper and ink
CLEAN_BETWEEN = 0.03  # a clean image has fewer pixels than this between its paper and ink levels
MIN_CONTRAST = 0.08  # the strongest ink must be 8% darker than its paper, else the page is blank
NOISE_SIGMAS = 4.0  # ink must stand this many robust standard deviations above the paper's noise
STRONG_SIGMAS = 2 * NOISE_SIGMAS  # a stroke's core (hysteresis's high threshold) stands this many above it, ...
STRONG_SHARE = 0.45  # ... and is at least this share of the strongest ink
WEAK_SHARE = 0.2  # the faint rim kept with a core is at least this share of the strongest ink (and NOISE_SIGMAS)
INK_GAP = 0.5  # ink cropped tight: the paper is measured alone when ink and paper levels are this far apart
PEAK_PIXELS = 40  # the strongest ink is the 40th strongest pixel (fewer in small images): a digit has that many
PEAK_PER = 1000  # ... and in a small image one in this many pixels
LEVEL_PERCENTILE = 75  # the strength of a typical stroke's core: this percentile of the ink's strength

# Objects on the page: chosen on the tuning scenes (tests/photo_scenes.py, seed 100) and their failures
OBJECT_MIN_THUMB = 100  # a thumbnail with a shorter side under this (pixels) is not searched for objects
OBJECT_DARK = 0.45  # an object is darker than this share of the paper (a hand's shadow is not that dark), ...
OBJECT_PAPER_PERCENTILE = 90  # ... the paper here being this percentile of the thumbnail's brightness
OBJECT_AREA = 0.05  # ... and covers at least this share of the picture
OBJECT_SIDE = 0.3  # a dark thing at least this share of the picture's shorter side wide is an object, not ink
OBJECT_CLOSINGS = 4  # ... or at least this many times the paper's closing wide
OBJECT_NEAR = 5  # a mark within this square (2 pixels each side) of an object touches it (its outline, a handle)

# Ruled lines: chosen on the tuning scenes' ruled and squared pages (tests/photo_scenes.py, seed 100)
LINES_MIN_SIDE = 64  # a picture with a shorter side under this (working pixels) is not searched for lines
LINE_RUN = 0.12  # a line runs straight for at least this share of the picture, ...
LINE_RUN_MIN = 40  # ... and at least this many working pixels
LINE_JOIN = 5  # faint marks are thickened across to this (pixels), so a tilted or bent line stays in one piece
LINE_LONG = 0.25  # a line this share of the picture long counts towards LINE_MIN_COUNT
LINE_MIN_COUNT = 3  # ruled / squared paper shows at least this many long parallel lines
LINE_ACROSS = 0.85  # on a page that is not ruled, only a mark across this share of the picture is a line, ...
WRITING_ACROSS = 0.5  # ... nor one beside ink that runs this share of the picture the same way (digits as tall)
CROP_EDGE = 0.03  # ... nor any where the marks come this close to all four edges (a picture cropped to them)
LINE_FIT_PIXELS = 20  # a line is fitted to at least this many thin pixels, else it is left alone
MAX_LINES = 200  # at most this many lines each way are drawn (squared paper at 5 mm has about 40)
LINE_WIDTH = 7  # ruled lines are thinner than this (working pixels); strokes that cross them are longer across
LINE_BAND = 7  # each fitted line is drawn this wide (working pixels) across the page: its faint gaps go too

cv2.setNumThreads(1)  # one image is small work; the service prepares several images in parallel threads


@dataclass
class Ink:
    """What is left of a page: ink strength and mask at work scale."""

    strength: np.ndarray  # float32 (H, W) in 0..1: 0 = paper, 1 = ink as dark as can be
    mask: np.ndarray  # uint8 (H, W) 0/1: pixels judged to be ink, lines removed
    level: float  # the strength of a typical stroke's core (the field's white)
    scale: float  # original pixels per working pixel
    problem: str | None = None  # why there is no ink (a blank page), else None
    margin: int = 0  # working pixels of paper added around the picture (``_with_margin``)


def find_ink(gray: np.ndarray, scale: float = 1.0) -> Ink:
    """float32 (H, W) in 0..1, any polarity and lighting -> the ink, lines and table removed."""
    g, factor = _work_copy(gray)
    scale *= factor
    g, factor = _native_grid(g)
    scale *= factor
    g, up, margin = _with_margin(g)
    scale /= up
    t = _thumb(g)  # the small copy the page-wide decisions look at
    if _light_ink(t):
        g, t = 1.0 - g, 1.0 - t
    clean = _two_levels(t)  # paper and ink only (or a sheet on a dark table): one paper level, no shade
    sheet = _sheet(g, t)
    paper, k = _paper_brightness(g, t, clean)
    strength = np.clip(1.0 - g / np.maximum(paper, 1e-3), 0.0, 1.0)
    if sheet is not None:
        strength[~sheet] = 0.0
    objects = _solid_objects(g, t, k)
    strength[objects] = 0.0
    mask, faint, level, problem = _threshold(strength)
    if problem is None:
        mask = _remove_lines(mask, faint, margin)  # a clean scan of ruled paper is two-level too: always looked for
        mask = _apart_from(mask, objects)
        if not mask.any():
            problem = "no digit found (only ruled lines, edges or objects)"
    return Ink(strength=strength, mask=mask, level=level, scale=scale, problem=problem, margin=margin)


# ---------------------------------------------------------------------------------------------- steps
def _work_copy(g: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrink (area average) so that the longer side is at most WORK_SIDE; returns the copy and the factor."""
    g = np.ascontiguousarray(g, dtype=np.float32)
    h, w = g.shape
    factor = max(h, w) / WORK_SIDE
    if factor <= 1.0:
        return g, 1.0
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1]


def _native_grid(g: np.ndarray) -> tuple[np.ndarray, float]:
    """A small grid enlarged by repeating its cells (nearest neighbour: an 8x8 scan blown up to 256x256) is
    read as what it is: the grid itself, enlarged smoothly, as an eye sees it. Cut into blocks, a picture of
    big flat squares looks to the paper's estimate like paper inside the strokes. A picture is such a grid when
    its runs of equal rows and of equal columns are all whole numbers of one cell size of at least MIN_CELL pixels (a
    photo or an anti-aliased drawing changes from one row to the next; flat rectangles drawn by hand have runs
    of any length), it has MIN_GRID_CELLS to NATIVE_CELLS cells each way, and more than two grey levels (in two
    colours, flat rectangles drawn by hand look the same; they need no help: a two-level picture has one paper
    level). Returns the picture and the original pixels per returned pixel (1.0 when nothing was done)."""
    h, w = g.shape
    rows = _cells(np.flatnonzero(np.any(g[1:] != g[:-1], axis=1)) + 1, h)
    cols = _cells(np.flatnonzero(np.any(g[:, 1:] != g[:, :-1], axis=0)) + 1, w)
    if rows is None or cols is None:
        return g, 1.0
    grid = g[np.ix_(rows, cols)]  # the centre pixel of every cell: (rows, columns)
    if min(grid.shape) < MIN_GRID_CELLS or np.unique(grid).size <= 2:  # flat shapes drawn in two colours
        return g, 1.0
    up = max(1, int(np.ceil(SMALL_SIDE / max(grid.shape))))
    smooth = cv2.resize(grid, (grid.shape[1] * up, grid.shape[0] * up), interpolation=cv2.INTER_LINEAR)
    return smooth, w / smooth.shape[1]


def _cells(changes: np.ndarray, n: int) -> np.ndarray | None:
    """The index of each cell's centre pixel along an axis of n pixels whose values change at ``changes``, if
    every run between changes is a whole number of cells of one size (to a pixel, for enlargements by a
    factor that is not whole), else None."""
    runs = np.diff(np.concatenate([[0], changes, [n]]))
    if runs.size < 2 or runs.min() < MIN_CELL:
        return None
    counts = np.maximum(1, np.round(runs / runs.min()))
    size = n / counts.sum()
    if counts.sum() > NATIVE_CELLS or np.any(np.abs(runs - counts * size) > 1 + CELL_SLACK * size):
        return None
    return np.minimum(n - 1, ((np.arange(int(counts.sum())) + 0.5) * size).astype(np.int64))


def _with_margin(g: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A small picture whose strokes run into its edge (a digit cropped to its ink, an enlarged scan of a few
    pixels) gets a margin of its border's colour, MARGIN_SHARE of its longer side, and is enlarged (nearest
    neighbour) to at least SMALL_SIDE pixels: the paper's brightness is then estimated around the digit, not
    inside its loops. A picture with a clear border (MNIST's own digits, most photos) is left as it is. Returns
    the picture, the enlargement and the margin (in the returned picture's pixels)."""
    h, w = g.shape
    if max(h, w) > MARGIN_BELOW:
        return g, 1, 0
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    level = float(np.median(border))
    if np.mean(np.abs(border - level) > EDGE_INK) < EDGE_SHARE:
        return g, 1, 0
    up = max(1, int(np.ceil(SMALL_SIDE / max(h, w))))
    if up > 1:
        g = cv2.resize(g, (w * up, h * up), interpolation=cv2.INTER_NEAREST)
    margin = max(2, round(MARGIN_SHARE * max(g.shape)))
    framed = cv2.copyMakeBorder(g, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=level)
    return framed, up, margin


def _thumb(g: np.ndarray) -> np.ndarray:
    h, w = g.shape
    factor = max(h, w) / THUMB_SIDE
    if factor <= 1.0:
        return g
    return cv2.resize(g, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)


def _light_ink(t: np.ndarray) -> bool:
    """Ink is the minority: light ink when the light class is small and not one solid region (a sheet).
    ``t``: the picture's thumbnail (``_thumb``)."""
    if float(t.max() - t.min()) < MIN_CONTRAST:
        return False
    level = _otsu(t)
    light = t > level
    if light.mean() >= INK_MINORITY:
        return False
    if min(t.shape) < SHEET_MIN_THUMB:  # too small to hold a sheet: a digit
        return True
    sheet = _largest_region(light)
    return not (sheet is not None and sheet.sum() >= SHEET_AREA * t.size and _fill_ratio(sheet) > SHEET_FILL)


def _sheet(g: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """bool (H, W) of a light sheet on a darker table, or None when the picture shows only paper; ``t`` is
    ``g``'s thumbnail."""
    if min(t.shape) < SHEET_MIN_THUMB:
        return None
    sigma = SHEET_BLUR * max(t.shape)
    blurred = cv2.GaussianBlur(t, (0, 0), sigma)
    level = _otsu(blurred)
    dark, light = blurred[blurred <= level], blurred[blurred > level]
    if dark.size == 0 or light.size == 0:
        return None
    lo, hi = float(dark.mean()), float(light.mean())
    gap = hi - lo
    if gap < SHEET_GAP:
        return None
    between = np.mean((blurred > lo + SHEET_MIDDLE * gap) & (blurred < hi - SHEET_MIDDLE * gap))
    if between > SHEET_BETWEEN:  # a gradual change of light, not the sharp edge of a sheet
        return None
    region = _largest_region(blurred > level)
    if region is None or region.mean() < SHEET_MIN_SHARE:
        return None
    ring = np.concatenate([blurred[0], blurred[-1], blurred[:, 0], blurred[:, -1]])
    if np.mean(ring <= level) < TABLE_ON_BORDER:  # the table must show along the picture's border
        return None
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    filled = np.zeros(t.shape, np.uint8)
    cv2.fillPoly(filled, [hull], 1)
    margin = max(1, round(SHEET_INSET * sigma))  # stay off the sheet's edge and its shading
    filled = cv2.erode(filled, _square(2 * margin + 1))
    full = cv2.resize(filled, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST)
    return full.astype(bool)


def _paper_brightness(g: np.ndarray, t: np.ndarray, clean: bool) -> tuple[np.ndarray, int]:
    """float32 (H, W): the paper's local brightness, a grey closing wider than any stroke, then smoothed;
    and the closing's size (thumbnail pixels, 0 for a small image). ``t``: ``g``'s thumbnail; ``clean``: paper
    and ink only (_two_levels)."""
    h, w = g.shape
    if min(h, w) < PAPER_MIN_SIDE or clean:  # a small or clean image (a drawing, a scan): one paper level
        return np.full_like(g, max(_percentile(g, PAPER_PERCENTILE), 1e-3)), 0
    side = min(t.shape)
    k = round(float(np.clip(CLOSING_STROKES * _stroke_width(t), CLOSING_MIN * side, CLOSING_MAX * side)))
    k = max(3, k | 1)  # an odd size, wider than the strokes, as narrow as they allow (shadows stay out)
    paper = cv2.morphologyEx(
        t, cv2.MORPH_CLOSE, _square(k), borderType=cv2.BORDER_REFLECT
    )  # the picture's edge is no brighter than inside
    paper = cv2.GaussianBlur(paper, (0, 0), k / PAPER_SMOOTHING)
    return cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR), k


def _two_levels(t: np.ndarray) -> bool:
    """A clean image: paper and ink far apart, and almost nothing in between (anti-aliased edges only); ``t``:
    the picture's thumbnail."""
    lo, hi = (_percentile(t, q) for q in CLEAN_PERCENTILES)
    gap = hi - lo
    between = np.mean((t > lo + CLEAN_MIDDLE * gap) & (t < hi - CLEAN_MIDDLE * gap))
    return bool(gap > CLEAN_GAP and between < CLEAN_BETWEEN)


def _solid_objects(g: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """bool (H, W): large dark things that are not strokes (a cup, a phone, a pen lying on the page), with a
    margin: far darker than the paper and still there after an opening wider than any stroke. The closing
    that estimates the paper follows their inside, so only their outline would look like ink. ``t``: ``g``'s
    thumbnail, ``k``: the paper closing's size (0: one paper level)."""
    if k == 0:  # one paper level (a clean or small picture): nothing to look for
        return np.zeros(g.shape, bool)
    if min(t.shape) < OBJECT_MIN_THUMB:
        return np.zeros(g.shape, bool)
    dark = (t < OBJECT_DARK * float(np.percentile(t, OBJECT_PAPER_PERCENTILE))).astype(np.uint8)
    wide = max(OBJECT_CLOSINGS * k, round(OBJECT_SIDE * min(t.shape))) | 1
    solid = cv2.morphologyEx(dark, cv2.MORPH_OPEN, _square(wide))
    n, labels, stats = components_with_stats(solid)
    large = np.concatenate([[False], stats[1:, cv2.CC_STAT_AREA] >= OBJECT_AREA * t.size])
    solid = large[labels].astype(np.uint8)  # a filled loop of a bold digit is dark and solid, but small
    if not solid.any():
        return np.zeros(g.shape, bool)
    solid = cv2.dilate(solid, _square(k))  # the outline, a handle
    return cv2.resize(solid, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def _apart_from(mask: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """The mask without the marks that touch an object (its outline, a cup's handle)."""
    if not objects.any():
        return mask
    near = cv2.dilate(objects.astype(np.uint8), _square(OBJECT_NEAR))
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    touching = np.unique(labels[(near > 0) & (mask > 0)])
    keep = np.ones(n, bool)
    keep[touching] = False
    keep[0] = False
    return keep[labels].astype(np.uint8)


def _stroke_width(t: np.ndarray) -> float:
    """A rough stroke width (thumbnail pixels): 2 * area / rim of what a black-hat (a grey closing minus the
    image, wide enough for bold strokes, too narrow for shadows and light gradients) shows as dark marks."""
    kb = max(3, round(BLACKHAT_SHARE * min(t.shape)) | 1)
    marks = cv2.morphologyEx(t, cv2.MORPH_BLACKHAT, _square(kb), borderType=cv2.BORDER_REFLECT)
    top = float(marks.max())
    if top < MIN_CONTRAST:
        return 1.0
    dark = (marks > _otsu(marks / top) * top).astype(np.uint8)
    if dark.mean() > INK_MINORITY:
        return 1.0
    rim = float((dark & (1 - cv2.erode(dark, np.ones((3, 3), np.uint8)))).sum())
    return 2.0 * float(dark.sum()) / max(rim, 1.0)


def _threshold(strength: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, str | None]:
    """Hysteresis threshold from the paper's noise and the strongest ink: (mask, every faint mark, the
    level of a stroke's core, problem)."""
    t = _thumb(strength)
    median = _median_of_nonnegative(t)
    noise = 1.4826 * _median_of_nonnegative(np.abs(t - median)) + 1e-3  # the paper's robust standard deviation (MAD)
    flat = strength.ravel()
    top = max(1, min(PEAK_PIXELS, flat.size // PEAK_PER))
    candidates = flat[flat > 0.5 * float(flat.max())]  # the top-th strongest is among these when they are enough
    peak = float(np.partition(candidates if candidates.size >= top else flat, -top)[-top])
    if peak >= MIN_CONTRAST and peak <= median + STRONG_SIGMAS * noise:
        median, noise = _paper_noise(t, median, noise)
    if peak < MIN_CONTRAST or peak < median + NOISE_SIGMAS * noise:
        blank = np.zeros(strength.shape, np.uint8)
        return blank, blank, 1.0, "no digit found (the image is blank: one colour, no ink)"
    high = max(median + STRONG_SIGMAS * noise, STRONG_SHARE * peak)
    low = max(median + NOISE_SIGMAS * noise, WEAK_SHARE * peak)
    strong = (strength > high).astype(np.uint8)
    weak = (strength > low).astype(np.uint8)
    n, labels = cv2.connectedComponents(weak, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[strong > 0])] = True
    keep[0] = False
    mask = keep[labels].astype(np.uint8)
    level = _percentile(strength[mask > 0], LEVEL_PERCENTILE) if mask.any() else 1.0
    return mask, weak, max(level, MIN_CONTRAST), None


def _paper_noise(t: np.ndarray, median: float, noise: float) -> tuple[float, float]:
    """The paper's level and noise from the paper alone, when ink covers so much of a picture (bold digits
    cropped tight) that the whole picture's median and spread leave no room above them for the ink: the
    strength below Otsu's split of a clear two-level picture (INK_GAP apart). Else (median, noise) unchanged."""
    level = _otsu(t / max(float(t.max()), 1e-6)) * float(t.max())
    paper, ink = t[t <= level], t[t > level]
    if paper.size == 0 or ink.size == 0 or float(ink.mean()) - float(paper.mean()) < INK_GAP:
        return median, noise
    median = _median_of_nonnegative(paper)
    return median, 1.4826 * _median_of_nonnegative(np.abs(paper - median)) + 1e-3


def _remove_lines(mask: np.ndarray, faint: np.ndarray, margin: int = 0) -> np.ndarray:
    """Remove ruled / squared lines from mask, where no stroke crosses them.

    Lines are found among all faint marks (whole, not only where they touch a digit), thickened a little
    across so that a slightly tilted or bent line stays in one piece, then opened with a long kernel along
    the line. A page is ruled when it shows at
    least LINE_MIN_COUNT long lines; otherwise only marks running across nearly the whole picture count.
    Many upright lines make squared paper only on a page ruled across as well: paper ruled only upright is
    rare, and the upright strokes of a number that fills the picture are long and stand in a row. In a
    picture cropped to its ink (its marks reach all four edges, inside the ``margin`` find_ink added), a lone
    mark across it is a digit's bar (a 7's, a 4's), not a line: only ruled paper's lines go there (and the
    margin line of a page ruled across, whose lines reach the edges as well).
    Only the pixels that are as thin across as a line go: where a stroke crosses or follows a line, the ink
    is thicker than LINE_WIDTH across and stays.
    """
    h, w = mask.shape
    if min(h, w) < LINES_MIN_SIDE:
        return mask
    cropped = _cropped_to_ink(mask, margin)
    writing = mask > 0
    rows, ruled = _lines_along(faint, horizontal=True, writing=writing, lone=not cropped)
    # many upright lines are squared paper only where lying ones are ruled too; else they are more likely the
    # 1s, 4s and 7s of a number that fills the picture
    cols, _ = _lines_along(
        faint, horizontal=False, writing=writing & (rows == 0), may_be_ruled=ruled, lone=ruled or not cropped
    )
    if not rows.any() and not cols.any():
        return mask
    # a stroke that crosses or follows a line is thicker across it than a line (the other way's lines aside)
    tall = cv2.morphologyEx(
        faint & (1 - cols), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, LINE_WIDTH))
    )
    wide = cv2.morphologyEx(
        faint & (1 - rows), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (LINE_WIDTH, 1))
    )
    lines = (rows & (1 - tall)) | (cols & (1 - wide))
    return mask & (1 - lines)


def _lines_along(
    marks: np.ndarray, horizontal: bool, writing: np.ndarray | None = None, may_be_ruled: bool = True, lone: bool = True
) -> tuple[np.ndarray, bool]:
    """uint8 (H, W): the pixels of ``marks`` on the long lines running one way (each line fitted and drawn
    across the whole picture, LINE_BAND pixels wide, so that its faint gaps go too), and whether the page is
    ruled that way. ``may_be_ruled`` False: only a line across the whole picture counts, however many long
    marks there are (upright ones on a page ruled only across are a number's strokes, not squares); ``lone``
    False: only the lines of ruled paper count, never one line alone. A lone line is not one where the rest
    of the ``writing`` (the ink mask) runs across WRITING_ACROSS of the picture the same way: it stands among
    digits as tall as it, a 1 of a number that fills the picture."""
    h, w = marks.shape
    extent = w if horizontal else h
    run = max(LINE_RUN_MIN, round(LINE_RUN * extent))
    across = (1, LINE_JOIN) if horizontal else (LINE_JOIN, 1)  # (width, height) of OpenCV kernels
    along = (run, 1) if horizontal else (1, run)
    joined = cv2.dilate(marks, cv2.getStructuringElement(cv2.MORPH_RECT, across))
    runs = cv2.morphologyEx(joined, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, along))
    n, labels, stats = components_with_stats(runs)
    length = stats[1:, cv2.CC_STAT_WIDTH if horizontal else cv2.CC_STAT_HEIGHT]
    ruled = may_be_ruled and int((length >= LINE_LONG * extent).sum()) >= LINE_MIN_COUNT
    across = length >= LINE_ACROSS * extent if lone else np.zeros_like(length, dtype=bool)
    chosen = 1 + np.flatnonzero(length > 0 if ruled else across)  # ruled: every piece of a line
    if not ruled and writing is not None:
        chosen = [
            label for label in chosen[:MAX_LINES] if not _beside_tall_writing(writing, labels == label, horizontal)
        ]
    across_line = (1, LINE_WIDTH) if horizontal else (LINE_WIDTH, 1)
    thin = marks & (1 - cv2.morphologyEx(marks, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, across_line)))
    band = np.zeros_like(marks)
    for label in chosen[:MAX_LINES]:  # a ruled line crosses the whole page: draw it across, gaps included
        ys, xs = np.nonzero((labels == label) & (thin > 0))  # fitted to its thin pixels: never to a bold stroke
        if len(xs) < LINE_FIT_PIXELS:
            continue
        along_px, across_px = (xs, ys) if horizontal else (ys, xs)
        slope, offset = np.polyfit(along_px.astype(np.float64), across_px.astype(np.float64), 1)
        ends = [(0, offset), (extent - 1, offset + slope * (extent - 1))]
        (a0, c0), (a1, c1) = ends
        p0, p1 = ((a0, c0), (a1, c1)) if horizontal else ((c0, a0), (c1, a1))
        cv2.line(band, (int(round(p0[0])), int(round(p0[1]))), (int(round(p1[0])), int(round(p1[1]))), 1, LINE_BAND)
    return band & marks, ruled


def _beside_tall_writing(writing: np.ndarray, line: np.ndarray, horizontal: bool) -> bool:
    """The ink other than ``line`` runs along the line's way across WRITING_ACROSS of the picture (between
    its 2nd and 98th percentile pixels, so that specks do not count)."""
    ys, xs = np.nonzero(writing & ~line)
    along = xs if horizontal else ys
    if along.size == 0:
        return False
    lo, hi = _percentile(along, 2), _percentile(along, 98)
    return hi - lo >= WRITING_ACROSS * (writing.shape[1] if horizontal else writing.shape[0])


def _cropped_to_ink(mask: np.ndarray, margin: int) -> bool:
    """The marks reach all four edges of the picture (inside the margin find_ink added), to CROP_EDGE of its
    side: a picture cropped to its writing."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if ys.size == 0:
        return False
    h, w = mask.shape
    near_y, near_x = max(2.0, CROP_EDGE * (h - 2 * margin)), max(2.0, CROP_EDGE * (w - 2 * margin))
    return bool(
        ys[0] - margin <= near_y
        and h - margin - 1 - ys[-1] <= near_y
        and xs[0] - margin <= near_x
        and w - margin - 1 - xs[-1] <= near_x
    )


# ---------------------------------------------------------------------------------------------- helpers
def _square(k: int) -> np.ndarray:
    """A k x k structuring element: OpenCV runs a rectangle as two fast 1-D passes, a disc costs k times more."""
    return cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))


def _percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) (linear interpolation), without sorting when the answer is the lowest or the
    highest value, held by enough pixels: the paper or the ink of a clean picture."""
    flat = values.ravel()
    n = flat.size
    below = int(np.floor(q / 100.0 * (n - 1)))  # the answer lies between the sorted values at below, below + 1
    lowest, highest = flat.min(), flat.max()
    if np.count_nonzero(flat == lowest) >= below + 2:
        return float(lowest)
    if np.count_nonzero(flat == highest) >= n - below:
        return float(highest)
    return float(np.percentile(flat, q))


def _median_of_nonnegative(values: np.ndarray) -> float:
    """np.median of values >= 0, without sorting when most are 0 (the paper of a clean picture)."""
    if np.count_nonzero(values == 0) >= values.size // 2 + 1:
        return 0.0
    return float(np.median(values))


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of float values in 0..1."""
    u8 = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(level) / 255.0


def components_with_stats(binary: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected regions of a uint8 0/1 image: (count with the background, int32 labels, stats). Grana's
    algorithm: with statistics it is 3x faster than OpenCV's default here (0.3 ms against 0.9 ms for a 280x280
    drawing, 3 ms against 10 ms for a photo's working copy), the same labels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)
    return n, labels, stats


def _largest_region(binary: np.ndarray) -> np.ndarray | None:
    n, labels, stats = components_with_stats(binary.astype(np.uint8))
    if n <= 1:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def _fill_ratio(region: np.ndarray) -> float:
    """Pixels of a region / pixels of its convex hull: near 1 for a sheet, low for strokes."""
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    return float(region.sum()) / max(1.0, cv2.contourArea(hull))
