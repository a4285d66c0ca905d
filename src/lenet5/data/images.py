"""Read a person's image of digits: decode it safely, then find the digits as MNIST-style 28x28 fields.

MNIST was made like this, and so is every digit here: grayscale (alpha composited onto the background) ->
the ink found on the page (``page.py``: polarity, the sheet, uneven light, ruled lines) -> the digits found
in the ink (``digits.py``: components, left to right, touching digits cut) -> each cropped to its box, the
longer side scaled to 20 px with anti-aliasing, pasted into 28x28, shifted so its centre of mass sits at (14, 14).

Limits (each breach is an ImageError with one line saying what is wrong):
- formats: PNG, JPEG (also MPO from phone cameras), BMP, GIF, TIFF, WebP; the first frame of an animation.
  Any mode: 1, L, P, RGB, RGBA, LA, PA, CMYK, I, I;16, F.
- at most MAX_PIXELS = 40 megapixels (Pillow's decompression-bomb guard is set to the same limit) and
  MAX_FILE_BYTES = 256 MB per file,
  at least MIN_SIDE = 4 pixels on each side; an empty, truncated or unreadable file, and an image with
  no ink (uniform, or contrast below MIN_CONTRAST) holds no digit: ``prepare_*`` refuse it, ``read_*`` say why.
- ``.npy`` arrays hold digits that are already MNIST-style: one (28, 28) or a stack (N, 28, 28), uint8 or
  integers in 0..255, or floats in 0..1; NaN/inf are refused; at most MAX_NPY_DIGITS digits per file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lenet5.data.digits import SIZE, Digit, Score, find_digits
from lenet5.data.page import WORK_SIDE, find_ink
from lenet5.errors import ImageError

MAX_PIXELS = 40_000_000
MIN_SIDE = 4
MAX_NPY_DIGITS = 100_000
MAX_FILE_BYTES = 256_000_000  # an uncompressed 40-megapixel 16-bit RGB TIFF is 240 MB; read no file larger
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # JPEG includes MPO (phone cameras)
SCALE = "lenet5.scale"  # img.info key: original pixels per decoded pixel (JPEG decoded at reduced size)
REDUCIBLE = ("L", "LA", "RGB", "RGBA", "I", "F")  # modes Pillow's reduce() box-averages

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


# ------------------------------------------------------------------------------------------ reading
def open_image(data: bytes, name: str = "image") -> Image.Image:
    """Decode image bytes (fully, so truncation shows here) within the limits; ImageError otherwise."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_size(img, name)
            img.seek(0)
            width = img.size[0]
            if img.format == "JPEG" and max(img.size) > 2 * WORK_SIDE:
                img.draft(None, (WORK_SIDE, WORK_SIDE))  # decode a phone photo at 1/2..1/8 scale: much faster
            img.load()
            img.info[SCALE] = width / img.size[0]
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(
                f"{name}: image is larger than the {MAX_PIXELS // 1_000_000}-megapixel limit (a decompression bomb?)"
            ) from None
        except Image.UnidentifiedImageError:
            raise ImageError(
                f"{name}: not an image this tool reads (supported: {', '.join(FORMATS)})"
            ) from None
        except Exception as exc:  # noqa: BLE001 - damaged files make Pillow raise TypeError, struct.error, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ImageError(f"{name}: truncated or corrupt image ({first})") from None
    try:
        img = ImageOps.exif_transpose(img)  # phone photos: honour the orientation tag
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not stop the digit
        pass
    return img


def _check_size(img: Image.Image, name: str) -> None:
    w, h = img.size
    if w * h > MAX_PIXELS:
        limit = MAX_PIXELS // 1_000_000
        raise ImageError(f"{name}: image is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the {limit}-megapixel limit")
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image is only {w}x{h} pixels; a digit needs at least {MIN_SIDE}x{MIN_SIDE}")


def to_gray(img: Image.Image, name: str = "image") -> np.ndarray:
    """Any mode Pillow can convert -> float32 (H, W) in 0..1, transparency composited onto the background;
    ImageError for a mode it cannot (LAB, premultiplied La, ...)."""
    try:
        return _to_gray(img)
    except (ValueError, OSError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ImageError(f"{name}: cannot read a {img.mode} image as grey levels ({first}); save it as RGB") from None


def _to_gray(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        g = np.asarray(img, dtype=np.float64)
        peak = g.max(initial=0)
        if mode.startswith("I;16") or peak > 255:
            top = 65535.0  # 16-bit grayscale (Pillow opens some 16-bit PNGs as mode I)
        else:
            top = 1.0 if mode == "F" and peak <= 1 else 255.0
        return np.clip(g / top, 0.0, 1.0).astype(np.float32)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    la = np.asarray(img.convert("RGBA").convert("LA"), dtype=np.float32) / 255.0
    lum, alpha = la[..., 0], la[..., 1]
    if alpha.min() >= 1.0:
        return lum
    return lum * alpha + _alpha_background(lum, alpha) * (1.0 - alpha)


def _alpha_background(lum: np.ndarray, alpha: np.ndarray) -> float:
    """What transparent pixels stand for: the paper colour if the opaque part has paper, else the
    opposite of the ink (strokes drawn on a transparent layer)."""
    opaque = lum[alpha > 0.5]
    if opaque.size == 0:
        return 0.0
    lo, mid, hi = np.percentile(opaque, [5, 50, 95])
    if hi - lo > 0.25:  # paper and ink both opaque: transparency is more paper
        return float(mid)
    return 1.0 if mid < 0.5 else 0.0


# ------------------------------------------------------------------------------------ preparation
def read_image(img: Image.Image, name: str = "image", score: Score | None = None) -> tuple[list[Digit], str | None]:
    """A decoded image -> its digits left to right (fields and boxes in the original's pixels), and why
    there are none. ``score`` (uint8 (N, 28, 28) -> how well each reads as a digit) lets touching digits be cut."""
    _check_size(img, name)
    scale = float(img.info.get(SCALE, 1.0))
    factor = max(img.size) // (2 * WORK_SIDE)
    if factor >= 2 and img.mode in REDUCIBLE:  # box-average a huge image before making floats of it
        img, scale = img.reduce(factor), scale * factor
    return find_digits(find_ink(_finite(to_gray(img, name), name), scale), score)


def read_gray(g: np.ndarray, name: str = "pixels", score: Score | None = None) -> tuple[list[Digit], str | None]:
    """float (H, W) in 0..1, any polarity -> its digits left to right, and why there are none."""
    return find_digits(find_ink(_finite(g, name)), score)


def prepare_image(img: Image.Image, name: str = "image") -> np.ndarray:
    """A decoded image of one digit -> uint8 (28, 28), white digit on black, centred like MNIST."""
    _check_size(img, name)
    return prepare_gray(to_gray(img, name), name)


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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ImageError(f"{path}: not a readable .npy array ({first})") from None
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
        raise ValueError(f"its header claims shape {shape} of {dtype}, {count * dtype.itemsize} bytes, "
                         f"but the file holds {data_bytes}")


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
        raise ImageError(f"{path}: {size / 1e6:.0f} MB is more than an image of at most "
                         f"{MAX_PIXELS // 1_000_000} megapixels needs (limit {MAX_FILE_BYTES // 1_000_000} MB)")
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
