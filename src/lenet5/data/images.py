"""Read a person's image of digits: decode it safely, then find the digits as MNIST-style 28x28 fields.

MNIST was made like this, and so is every digit here: grayscale (alpha composited onto the background) ->
the ink found on the page (``page.py``: polarity, the sheet, uneven light, ruled lines) -> the digits found
in the ink (``digits.py``: components, left to right, touching digits cut) -> each cropped to its box, the
longer side scaled to 20 px with anti-aliasing, pasted into 28x28, shifted so its centre of mass sits at (14, 14).

Limits (each breach is an ImageError with one line saying what is wrong):
- formats: PNG, JPEG (also MPO from phone cameras), BMP, GIF, TIFF, WebP; the first frame of an animation.
  Every mode Pillow decodes (PIL.Image.MODES: 1, L, P (with transparency), RGB, RGBA, RGBX, RGBa, LA, La, PA,
  CMYK, YCbCr, HSV, I, I;16/I;16L/I;16B/I;16N, F) is turned into grey levels; LAB, and any mode Pillow cannot
  turn into grey, is refused for that file with one line.
- memory: a 2 MB file may decode to 40 megapixels of 4-byte pixels (160 MB). Nothing bigger than the decoded
  image is ever made of it: the grey levels are made BAND_PIXELS at a time and box-averaged on the way down to
  the working size (at most 2 * WORK_SIDE - 1 pixels long: the page needs no more), in float32; the EXIF
  orientation is applied to that small copy, never to the full image.
- at most MAX_PIXELS = 40 megapixels (Pillow's decompression-bomb guard is set to the same limit) and
  MAX_FILE_BYTES = 256 MB per file; a WebP at most MAX_WEBP_PIXELS, judged from its header before Pillow
  sees it (Pillow cannot decode a WebP at reduced size, and holds ~15 bytes a pixel while it decodes one);
  at least MIN_SIDE = 4 pixels on each side, and at most MAX_ASPECT times as long as wide (a strip of
  40 x 1,000,000 pixels holds no digit a person drew, and would be box-averaged into a few pixels); an empty,
  truncated or unreadable file, and an image with no ink (uniform, or contrast below MIN_CONTRAST) holds no
  digit: ``prepare_*`` refuse it, ``read_*`` say why.
- ``.npy`` arrays hold digits that are already MNIST-style: one (28, 28) or a stack (N, 28, 28), uint8 or
  integers in 0..255, or floats in 0..1; NaN/inf are refused; at most MAX_NPY_DIGITS digits per file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image

from lenet5.data.digits import SIZE, Digit, Score, find_digits
from lenet5.data.page import WORK_SIDE, find_ink
from lenet5.errors import ImageError, first_line

MAX_PIXELS = 40_000_000
MIN_SIDE = 4
MAX_ASPECT = 50  # longer side : shorter side
# Pillow decodes a WebP whole, through libwebp's canvas, a copy of it and the image: ~15 bytes a pixel
# measured (a 6300 x 6300 WebP of 11 KB cost 610 MB). 12.6 MP reads a 12-megapixel phone photo (4032 x 3024)
# for ~190 MB.
MAX_WEBP_PIXELS = 12_600_000
MAX_NPY_DIGITS = 100_000
MAX_FILE_BYTES = 256_000_000  # an uncompressed 40-megapixel 16-bit RGB TIFF is 240 MB; read no file larger
# The one list of image formats read (predict's file suffixes and serve's content types derive from it):
# Pillow's format name -> (file suffixes, HTTP content types). JPEG includes MPO (phone cameras).
FORMATS = {
    "PNG": ((".png",), ("image/png",)),
    "JPEG": ((".jpg", ".jpeg"), ("image/jpeg", "image/jpg", "image/pjpeg")),
    "BMP": ((".bmp",), ("image/bmp", "image/x-ms-bmp")),
    "GIF": ((".gif",), ("image/gif",)),
    "TIFF": ((".tif", ".tiff"), ("image/tiff",)),
    "WEBP": ((".webp",), ("image/webp",)),
}
IMAGE_SUFFIXES = tuple(suffix for suffixes, _ in FORMATS.values() for suffix in suffixes)
CONTENT_TYPES = tuple(kind for _, kinds in FORMATS.values() for kind in kinds)
SCALE = "lenet5.scale"  # img.info key: original pixels per decoded pixel (JPEG decoded at reduced size)
ORIENTATION = "lenet5.orientation"  # img.info key: the EXIF orientation (1..8), applied to the grey levels
BAND_PIXELS = 1 << 20  # grey levels are made this many pixels at a time (a few MB), never the whole image at once
NUMERIC = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # numbers, not 8-bit levels: scaled by their range
ALPHA = ("RGBA", "LA", "PA")  # transparency, not premultiplied
PREMULTIPLIED = ("RGBa", "La")  # colour already multiplied by alpha
REFUSED = {"LAB": "a CIE L*a*b* image"}  # modes refused for a whole file, with why (tests/test_images.py pins LAB)

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


# ------------------------------------------------------------------------------------------ reading
def open_image(data: bytes, name: str = "image") -> Image.Image:
    """Decode image bytes (fully, so truncation shows here) within the limits; ImageError otherwise."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    _check_webp(data, name)  # before Image.open: opening a WebP already allocates its whole canvas
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on damaged files ("Corrupt EXIF data"...) are not ours
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=tuple(FORMATS))
            _check_size(img, name)
            img.seek(0)
            width = img.size[0]
            if img.format == "JPEG" and max(img.size) > 2 * WORK_SIDE:
                img.draft(None, (WORK_SIDE, WORK_SIDE))  # decode a phone photo at 1/2..1/8 scale: much faster
            img.load()
            img.info[SCALE] = width / img.size[0]
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(
                f"{name}: image is larger than the {MAX_PIXELS // 1_000_000}-megapixel limit (a decompression bomb?)"
            ) from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"{name}: not an image this tool reads (supported: {', '.join(FORMATS)})") from None
        except Exception as exc:  # noqa: BLE001 - damaged files make Pillow raise TypeError, struct.error, ...
            raise ImageError(f"{name}: truncated or corrupt image ({first_line(exc, 160)})") from None
    img.info[ORIENTATION] = exif_orientation(img)
    return img


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1..8; 1 when there is none or it is damaged). Phone photos are stored sideways
    with 6 or 8 and every viewer turns them; ``to_gray`` does the same, on the small grey copy. Pillow's
    warnings about a damaged EXIF block are not shown: the digit is read all the same."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            orientation = int(img.getexif().get(ExifTags.Base.Orientation, 1))
        except Exception:  # noqa: BLE001 - a damaged EXIF block must not stop the digit
            return 1
    return orientation if 1 <= orientation <= 8 else 1


def _check_size(img: Image.Image, name: str) -> None:
    _check_dimensions(*img.size, name)


def _check_dimensions(w: int, h: int, name: str, max_pixels: int = MAX_PIXELS, what: str = "image") -> None:
    if w * h > max_pixels:
        limit = f"{max_pixels / 1_000_000:g}"
        raise ImageError(
            f"{name}: {what} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the {limit}-megapixel limit"
            + ("" if max_pixels == MAX_PIXELS else "; save it as PNG or JPEG, or smaller")
        )
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image is only {w}x{h} pixels; a digit needs at least {MIN_SIDE}x{MIN_SIDE}")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(
            f"{name}: image is {w}x{h} pixels, more than {MAX_ASPECT} times as long as it is wide; "
            "crop it to the digits"
        )


def webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas size a WebP file's header declares (what libwebp allocates), or None if it is not a WebP.
    ImageError for a WebP whose first chunk declares no size."""
    if len(data) < 16 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: the canvas, 24 bits each, minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return 0, 0  # a WebP whose size cannot be told: refused as too small rather than handed to the decoder


def _check_webp(data: bytes, name: str) -> None:
    size = webp_size(data)
    if size is None:
        return
    if size == (0, 0):
        raise ImageError(f"{name}: truncated or corrupt image (a WebP header without its size)")
    _check_dimensions(*size, name, MAX_WEBP_PIXELS, "WebP image")


def to_gray(img: Image.Image, name: str = "image", factor: int = 1) -> np.ndarray:
    """Any mode Pillow decodes -> float32 (H/factor, W/factor) in 0..1 (each pixel the mean of a factor x factor
    block), transparency composited onto the background, the EXIF orientation (from ``open_image``) applied;
    ImageError, one line, for a mode it cannot turn into grey or NaN/infinite pixels.

    Made BAND_PIXELS pixels at a time: the memory beyond the decoded image is a few MB plus the result."""
    factor = max(1, int(factor))
    try:
        g = _to_gray(img, name, factor)
    except ImageError:
        raise
    except (ValueError, OSError, TypeError, KeyError) as exc:
        raise ImageError(
            f"{name}: cannot read a {img.mode} image as grey levels ({first_line(exc, 120)}); save it as RGB"
        ) from None
    return _orient(g, img.info.get(ORIENTATION, 1))


def _to_gray(img: Image.Image, name: str, factor: int) -> np.ndarray:
    mode = img.mode
    if mode in REFUSED:
        raise ImageError(f"{name}: cannot read a {mode} image as grey levels ({REFUSED[mode]}); save it as RGB")
    w, h = img.size
    numeric = mode in NUMERIC
    kind = (
        "numeric"
        if numeric
        else "premultiplied"
        if mode in PREMULTIPLIED
        else ("alpha" if mode in ALPHA or "transparency" in img.info else "plain")
    )
    out_shape = (-(-h // factor), -(-w // factor))
    lum = np.empty(out_shape, np.float32)  # premultiplied by alpha when there is alpha
    alpha = np.empty(out_shape, np.float32) if kind in ("alpha", "premultiplied") else None
    rows = factor * max(1, BAND_PIXELS // (w * factor))  # a whole number of blocks per band
    peak = 0.0
    for top in range(0, h, rows):
        band = img if top == 0 and rows >= h else img.crop((0, top, w, min(h, top + rows)))
        planes = _band_planes(band, kind)
        if numeric:
            if not np.all(np.isfinite(planes[0])):  # a floating-point TIFF can hold NaN pixels
                raise ImageError(f"{name}: holds NaN or infinite pixel values")
            peak = max(peak, float(planes[0].max(initial=0.0)))
        at = top // factor
        for out, plane in zip((lum, alpha), planes):
            small = _box_mean(plane, factor)
            out[at : at + small.shape[0]] = small
        del band, planes
    if numeric:
        if mode.startswith("I;16") or peak > 255:
            scale = 65535.0  # 16-bit grayscale (Pillow opens some 16-bit PNGs as mode I)
        else:
            scale = 1.0 if mode == "F" and peak <= 1 else 255.0
        return np.clip(lum / np.float32(scale), 0.0, 1.0, out=lum)
    if alpha is None or alpha.min() >= 1.0:
        return lum
    return lum + np.float32(_alpha_background(lum, alpha)) * (1.0 - alpha)


def _band_planes(band: Image.Image, kind: str) -> tuple[np.ndarray, ...]:
    """A few rows of the image -> float32 planes: (raw numbers,) for numeric modes, (grey,) in 0..1, or
    (grey * alpha, alpha) for a mode with transparency."""
    if kind == "numeric":
        return (np.asarray(band, dtype=np.float32),)
    if kind == "premultiplied":  # La, RGBa: the colour is already grey * alpha; the grey of a sum is the sum of greys
        a = np.asarray(band, dtype=np.float32) / 255.0
        if band.mode == "La":
            return a[..., 0], a[..., 1]
        return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114, a[..., 3]
    if kind == "alpha":
        la = np.asarray(band.convert("RGBA").convert("LA"), dtype=np.float32) / 255.0
        return la[..., 0] * la[..., 1], la[..., 1]
    return (np.asarray(band.convert("L"), dtype=np.float32) / 255.0,)


def _box_mean(plane: np.ndarray, factor: int) -> np.ndarray:
    """float32 (h, w) -> (ceil(h/f), ceil(w/f)), each the mean of an f x f block (edge blocks padded with
    their edge pixels).

    The work is bounded by the plane's pixels: where padding the plane to whole blocks would more than double
    it (a band fewer than f rows high, as in a thin strip), the columns are averaged first and only that narrow
    result is padded in height; padding with edge pixels commutes with averaging the other axis, so the block
    means are the same."""
    if factor == 1:
        return np.ascontiguousarray(plane, dtype=np.float32)
    h, w = plane.shape
    oh, ow = -(-h // factor), -(-w // factor)
    if oh * factor * ow * factor <= 2 * h * w:
        if (oh * factor, ow * factor) != (h, w):
            plane = np.pad(plane, ((0, oh * factor - h), (0, ow * factor - w)), mode="edge")
        return cv2.resize(plane, (ow, oh), interpolation=cv2.INTER_AREA)  # an exact block mean for a whole factor
    if ow * factor != w:
        plane = np.pad(plane, ((0, 0), (0, ow * factor - w)), mode="edge")
    columns = cv2.resize(plane, (ow, h), interpolation=cv2.INTER_AREA)  # (h, ow)
    if oh * factor != h:
        columns = np.pad(columns, ((0, oh * factor - h), (0, 0)), mode="edge")
    return cv2.resize(columns, (ow, oh), interpolation=cv2.INTER_AREA)


def _orient(g: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (what ImageOps.exif_transpose does) to an array."""
    turn = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.T,
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].T,
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return g if turn is None else np.ascontiguousarray(turn(g))


def _alpha_background(lum: np.ndarray, alpha: np.ndarray) -> float:
    """What transparent pixels stand for: the paper colour if the opaque part has paper, else the
    opposite of the ink (strokes drawn on a transparent layer). ``lum`` is premultiplied by ``alpha``."""
    solid = alpha > 0.5
    opaque = lum[solid] / alpha[solid]
    if opaque.size == 0:
        return 0.0
    lo, mid, hi = np.percentile(opaque, [5, 50, 95])
    if hi - lo > 0.25:  # paper and ink both opaque: transparency is more paper
        return float(mid)
    return 1.0 if mid < 0.5 else 0.0


def work_factor(img: Image.Image) -> int:
    """The whole factor to shrink an image by before anything else: the page works at WORK_SIDE at most
    (page.find_ink), so a copy at most 2 * WORK_SIDE - 1 pixels long holds everything it needs."""
    return max(1, max(img.size) // WORK_SIDE)


# ------------------------------------------------------------------------------------ preparation
def read_image(img: Image.Image, name: str = "image", score: Score | None = None) -> tuple[list[Digit], str | None]:
    """A decoded image -> its digits left to right (fields and boxes in the original's pixels), and why
    there are none. ``score`` (uint8 (N, 28, 28) -> how well each reads as a digit) lets touching digits be cut."""
    _check_size(img, name)
    factor = work_factor(img)  # box-averaged while the grey levels are made: a huge image costs no more
    return find_digits(
        find_ink(_finite(to_gray(img, name, factor), name), float(img.info.get(SCALE, 1.0)) * factor), score
    )


def read_gray(g: np.ndarray, name: str = "pixels", score: Score | None = None) -> tuple[list[Digit], str | None]:
    """float (H, W) in 0..1, any polarity -> its digits left to right, and why there are none."""
    return find_digits(find_ink(_finite(g, name)), score)


def prepare_image(img: Image.Image, name: str = "image") -> np.ndarray:
    """A decoded image of one digit -> uint8 (28, 28), white digit on black, centred like MNIST."""
    _check_size(img, name)
    return prepare_gray(to_gray(img, name, work_factor(img)), name)


def prepare_gray(g: np.ndarray, name: str = "image") -> np.ndarray:
    """float (H, W) in 0..1, any polarity, holding one digit -> uint8 (28, 28) MNIST-style."""
    digits, problem = find_digits(find_ink(_finite(g, name)), one=True)
    if problem:
        raise ImageError(f"{name}: {problem}")
    return digits[0].field


def _finite(g: np.ndarray, name: str) -> np.ndarray:
    g = np.asarray(g, dtype=np.float32)
    if not np.all(np.isfinite(g)):  # a floating-point TIFF can hold NaN pixels
        raise ImageError(f"{name}: holds NaN or infinite pixel values")
    return g


# -------------------------------------------------------------------------------------- arrays
def digits_from_array(arr: np.ndarray, name: str = "array") -> np.ndarray:
    """MNIST-style digits as numbers -> uint8 (N, 28, 28). Accepts (28, 28) or (N, 28, 28); uint8 or
    integers in 0..255, or floats in 0..1 (refuses NaN/inf and values out of range)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (SIZE, SIZE) or arr.shape[0] == 0:
        raise ImageError(f"{name}: expected a (28, 28) digit or a stack (N, 28, 28), got shape {tuple(arr.shape)}")
    if arr.shape[0] > MAX_NPY_DIGITS:
        raise ImageError(f"{name}: {arr.shape[0]} digits in one file, more than the limit of {MAX_NPY_DIGITS}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind in "iu":
        if arr.min() < 0 or arr.max() > 255:
            raise ImageError(f"{name}: integer pixels must be in 0..255, got {arr.min()}..{arr.max()}")
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ImageError(f"{name}: holds NaN or infinite values")
        if arr.min() < -1e-6 or arr.max() > 1.0 + 1e-6:
            raise ImageError(f"{name}: float pixels must be in 0..1, got {arr.min():.4g}..{arr.max():.4g}")
        return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageError(f"{name}: unsupported array dtype {arr.dtype} (use uint8 0..255 or float 0..1)")


def load_npy(path: Path) -> np.ndarray:
    """A .npy file of MNIST-style digits -> uint8 (N, 28, 28). The header's shape is checked against the file's
    size and the limits before anything is allocated (a 250 KB file may claim to hold 73 GiB)."""
    _check_file(path)  # a FIFO or a device named *.npy would hang or never end
    try:
        _check_npy_header(path)
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ImageError(f"{path}: not a readable .npy array ({first_line(exc, 160)})") from None
    return digits_from_array(arr, str(path))


def _check_npy_header(path: Path) -> None:
    """ValueError unless the header describes an array that fits the file and MAX_NPY_DIGITS digits."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        data_bytes = path.stat().st_size - f.tell()
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count > MAX_NPY_DIGITS * SIZE * SIZE:
        raise ValueError(f"its header claims shape {shape}, more than {MAX_NPY_DIGITS} digits")
    if dtype.hasobject or count * dtype.itemsize > data_bytes:
        raise ValueError(
            f"its header claims shape {shape} of {dtype}, {count * dtype.itemsize} bytes, "
            f"but the file holds {data_bytes}"
        )


# -------------------------------------------------------------------------------------- files
def prepare_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """Image file contents holding one digit -> uint8 (28, 28)."""
    return prepare_image(open_image(data, name), name)


def read_bytes(data: bytes, name: str = "image", score: Score | None = None) -> tuple[list[Digit], str | None]:
    """Image file contents -> its digits left to right, and why there are none."""
    return read_image(open_image(data, name), name, score)


def prepare_file(path: str | Path) -> np.ndarray:
    """An image file of one digit -> uint8 (1, 28, 28), or a .npy file -> uint8 (N, 28, 28)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return load_npy(path)
    return prepare_bytes(read_file_bytes(path), str(path))[None]


def read_file_bytes(path: Path) -> bytes:
    """A file's bytes, or an ImageError saying in one line why it cannot be read."""
    _check_file(path)
    size = path.stat().st_size
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise ImageError(
            f"{path}: {size / 1e6:.0f} MB is more than an image of at most "
            f"{MAX_PIXELS // 1_000_000} megapixels needs (limit {MAX_FILE_BYTES // 1_000_000} MB)"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")


def save_png(digit: np.ndarray, path: str | Path) -> None:
    """Write a uint8 (28, 28) digit as a grayscale PNG."""
    Image.fromarray(np.asarray(digit, dtype=np.uint8), mode="L").save(path, format="PNG")
