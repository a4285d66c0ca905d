"""Hostile images: every pixel mode Pillow has, and small files that decode to nearly 40 megapixels.

Each mode is turned into grey levels or refused for that file with one ImageError line (never another
exception); `predict` reads the other files on. A 40-megapixel image costs about its decoded size, not
several float64 copies of it (before: 1 GB for a 100 KB 16-bit PNG): checked with tracemalloc (NumPy's
allocations) and with the peak resident memory of a fresh process (everything, Pillow's buffers included).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageOps

from conftest import lenet5
from lenet5.data import images
from lenet5.data.images import open_image, read_bytes, read_image, to_gray
from lenet5.errors import ImageError
from lenet5.predict import Predictor

SIDE = 120
STROKE = (50, 20, 70, 100)  # x0, y0, x1, y1 of a thick vertical bar: a "1"
EXTRA_MODES = ["I;16B", "I;16L", "I;16N", "La", "PA", "RGBa", "HSV", "LAB", "CMYK", "YCbCr", "F", "I", "1", "P", "RGBX"]
MODES = sorted(set(Image.MODES) | set(EXTRA_MODES)) + ["P+transparency", "L+transparency", "RGB+transparency"]
REFUSED = {"LAB"}  # turned away in one line (tests/test_images.py pins it); every other mode is read


def page() -> np.ndarray:
    """uint8 (SIDE, SIDE): a black bar on white paper."""
    g = np.full((SIDE, SIDE), 255, np.uint8)
    x0, y0, x1, y1 = STROKE
    g[y0:y1, x0:x1] = 0
    return g


def in_mode(mode: str) -> Image.Image:
    """The page in ``mode``, built from its bytes so that every channel means what the mode says."""
    g = page()
    opaque = np.full_like(g, 255)
    if mode in ("I;16", "I;16L", "I;16N", "I;16B"):
        dtype = ">u2" if mode == "I;16B" else "<u2"
        return Image.frombytes(mode, (SIDE, SIDE), (g.astype(np.uint32) * 257).astype(dtype).tobytes())
    if mode == "I":
        return Image.fromarray(g.astype(np.int32) * 257, mode="I")
    if mode == "F":
        return Image.fromarray(g.astype(np.float32) / 255.0, mode="F")
    if mode == "La":  # premultiplied: a transparent margin, opaque paper and ink inside
        alpha = np.zeros_like(g)
        alpha[10:-10, 10:-10] = 255
        return Image.frombytes("La", (SIDE, SIDE), np.dstack([g * (alpha // 255), alpha]).tobytes())
    if mode == "RGBa":
        alpha = np.zeros_like(g)
        alpha[10:-10, 10:-10] = 255
        pre = g * (alpha // 255)
        return Image.frombytes("RGBa", (SIDE, SIDE), np.dstack([pre, pre, pre, alpha]).tobytes())
    if mode == "LAB":
        lab = np.dstack([g, np.full_like(g, 128), np.full_like(g, 128)])
        return Image.frombytes("LAB", (SIDE, SIDE), lab.tobytes())
    if mode == "HSV":
        return Image.frombytes("HSV", (SIDE, SIDE), np.dstack([0 * g, 0 * g, g]).tobytes())
    if mode == "PA":
        return Image.fromarray(np.dstack([g, g, g, opaque])).convert("PA")
    if mode == "P+transparency":
        img = Image.fromarray(g).convert("P")
        img.info["transparency"] = 7  # a palette entry no pixel uses
        return img
    if mode == "L+transparency":
        img = Image.fromarray(g)
        img.info["transparency"] = 128  # a grey no pixel has
        return img
    if mode == "RGB+transparency":
        img = Image.fromarray(np.dstack([g, g, g]))
        img.info["transparency"] = (1, 2, 3)
        return img
    return Image.fromarray(g).convert("RGB").convert(mode)


def associated_alpha_tiff(img: Image.Image) -> bytes:
    """A premultiplied La / RGBa image as a TIFF whose ExtraSamples tag says so (1, associated alpha): Pillow
    opens it as La / (RGBA decoded from RGBa). Pillow writes only unassociated alpha (2): the tag is patched."""
    buf = io.BytesIO()
    Image.frombytes({"La": "LA", "RGBa": "RGBA"}[img.mode], img.size, img.tobytes()).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    assert data[:2] == b"II"
    ifd = int.from_bytes(data[4:8], "little")
    for i in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(data[entry : entry + 2], "little") == 338:  # ExtraSamples: one SHORT, in place
            data[entry + 8 : entry + 10] = (1).to_bytes(2, "little")
            return bytes(data)
    raise AssertionError("no ExtraSamples tag")


def encoded(mode: str) -> tuple[bytes, str] | None:
    """The page in ``mode`` as a file Pillow writes (TIFF, else PNG), and the mode it opens as; None when no
    format this tool reads keeps the mode."""
    img = in_mode(mode)
    if mode in ("La", "RGBa"):
        data = associated_alpha_tiff(img)
        return data, Image.open(io.BytesIO(data)).mode
    for fmt in ("TIFF", "PNG"):
        buf = io.BytesIO()
        try:
            img.save(
                buf,
                format=fmt,
                **({"transparency": img.info["transparency"]} if "transparency" in img.info and fmt == "PNG" else {}),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return buf.getvalue(), Image.open(io.BytesIO(buf.getvalue())).mode
    return None


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_read_or_refused_in_one_line(mode):
    img = in_mode(mode)
    if mode.split("+")[0] in REFUSED:
        with pytest.raises(ImageError) as err:
            read_image(img, f"page.{mode}")
        assert str(err.value) == (
            f"page.{mode}: cannot read a {mode} image as grey levels (a CIE L*a*b* image); save it as RGB"
        )
        return
    digits, problem = read_image(img, f"page.{mode}")
    assert problem is None and len(digits) == 1, (mode, problem)
    x0, y0, x1, y1 = digits[0].box
    assert (
        abs(x0 - STROKE[0]) <= 2 and abs(x1 - STROKE[2]) <= 2 and abs(y0 - STROKE[1]) <= 2 and abs(y1 - STROKE[3]) <= 2
    )


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_the_same_grey_levels(mode):
    """Where a mode is read, the page comes out as the same grey levels (to 1/255), transparency aside."""
    if mode.split("+")[0] in REFUSED:
        return
    g = to_gray(in_mode(mode), mode)
    assert g.dtype == np.float32 and g.shape == (SIDE, SIDE)
    want = page() / 255.0
    inside = (slice(10, -10), slice(10, -10))  # La, RGBa: the margin is transparent
    assert np.abs(g[inside] - want[inside]).max() <= 1.5 / 255, mode


def test_every_mode_pillow_writes_is_one_result_per_file_in_predict(tmp_path, untrained):
    written = {}
    for mode in MODES:
        made = encoded(mode)
        if made is not None:
            name = f"{mode.replace(';', '_').replace('+', '_')}.{'tif' if made[0][:2] in (b'II', b'MM') else 'png'}"
            (tmp_path / name).write_bytes(made[0])
            written[name] = made[1]
    assert {"LAB", "La", "CMYK", "I;16", "I;16B", "F", "I", "1", "P", "RGBA", "LA", "YCbCr"} <= set(written.values()), (
        written
    )  # the modes of issue 13 reach predict as files (PA is written as RGBA, RGBa opens as RGBA)
    results = Predictor.from_checkpoint(untrained).classify_files([str(tmp_path)])
    assert len(results) == len(written)
    for r in results:
        name = Path(r["file"]).name
        if written[name] in REFUSED:
            assert r["error"] == (
                f"{r['file']}: cannot read a {written[name]} image as grey levels (a CIE L*a*b* image); save it as RGB"
            )
        else:
            assert "error" not in r and r["number"] is not None and len(r["digits"]) == 1, (name, written[name], r)


def test_predict_prints_one_line_for_the_refused_file_and_reads_the_rest(tmp_path, untrained):
    (tmp_path / "lab.tif").write_bytes(encoded("LAB")[0])
    (tmp_path / "la.tif").write_bytes(encoded("La")[0])
    (tmp_path / "rgba.tif").write_bytes(encoded("RGBa")[0])
    proc = lenet5("predict", "--model", untrained, "--json", tmp_path, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    results = {Path(r["file"]).name: r for r in json.loads(proc.stdout)}
    assert set(results) == {"la.tif", "lab.tif", "rgba.tif"}
    assert "cannot read a LAB image" in results["lab.tif"]["error"]
    assert results["la.tif"]["number"] and results["rgba.tif"]["number"]
    assert proc.stderr.strip().splitlines()[-1] == "1 of 3 file(s) could not be classified"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_exif_orientation_is_applied_like_pillow_does(orientation):
    img = Image.fromarray(np.arange(40 * 30, dtype=np.uint8).reshape(30, 40) % 251)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif)
    ours = to_gray(open_image(buf.getvalue()))
    pillows = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))), np.float32) / 255
    assert np.array_equal(ours, pillows)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_float_tiff_with_nan_or_infinity_is_refused(value):
    g = np.ones((200, 3000), np.float32)
    g[150, 2900] = value  # in the last band
    buf = io.BytesIO()
    Image.fromarray(g, mode="F").save(buf, format="TIFF")
    with pytest.raises(ImageError, match="NaN or infinite"):
        read_bytes(buf.getvalue(), "nan.tif")


# ------------------------------------------------------------------------------------------ memory
BIG = 6320  # 39.9 megapixels, under the 40-megapixel limit


def big_page(mode: str, fmt: str) -> bytes:
    """A BIG x BIG page with one thick stroke, deflate-compressed: 25..300 KB."""
    img = Image.new("L", (BIG, BIG), 255)
    ImageDraw.Draw(img).line([(2000, 1500), (4200, 1500), (3000, 4800)], fill=0, width=300)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img, np.uint16) * 257)
    else:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def big_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("big")
    out = {}
    for mode, fmt in (("I;16", "PNG"), ("F", "TIFF"), ("RGBA", "PNG")):
        path = folder / f"{mode.replace(';', '')}.{fmt.lower()}"
        path.write_bytes(big_page(mode, fmt))
        out[mode] = path
    return out


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA"])
def test_a_40_megapixel_image_makes_no_big_arrays(mode, big_files):
    """NumPy's allocations (tracemalloc sees them) while reading a 40-megapixel page stay far below one
    float32 copy of it (160 MB): the grey levels are made a band at a time at the working size."""
    data = big_files[mode].read_bytes()
    assert len(data) < 400_000  # a small file: fits the service's 2 MiB body limit many times
    tracemalloc.start()
    try:
        digits, problem = read_bytes(data, "big")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problem is None and len(digits) >= 1
    assert peak < 80 * 2**20, f"{peak / 2**20:.0f} MiB of Python and NumPy allocations"
    x0, y0, x1, y1 = digits[0].box  # boxes are in the original's pixels
    assert 1700 <= x0 <= 2100 and 1200 <= y0 <= 1500 and 4100 <= x1 <= 4500 and 4700 <= y1 <= 5100, digits[0].box


PEAK_SCRIPT = """
import sys
from lenet5.data.images import read_bytes

def status(key):  # kB; VmHWM is this process's own peak (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

data = open(sys.argv[1], "rb").read()
before = status("VmRSS")
digits, problem = read_bytes(data, "big")
print(before, status("VmHWM"), len(digits))
"""


@pytest.mark.parametrize("mode, decoded_mib", [("I;16", 80), ("F", 160), ("RGBA", 160)])
def test_a_40_megapixel_image_costs_about_its_decoded_size(mode, decoded_mib, big_files):
    """All memory, Pillow's too, in a fresh process: the decoded image plus at most 96 MiB (before: 990 MiB
    for the 16-bit PNG, 310 MiB for the float TIFF, 320 MiB for the RGBA PNG)."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(big_files[mode])], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    before, peak, found = map(int, proc.stdout.split())
    assert found >= 1
    grew = (peak - before) / 1024
    assert grew < decoded_mib + 96, f"reading a {mode} page grew the process by {grew:.0f} MiB"


@pytest.fixture(scope="module")
def untrained(untrained_checkpoint) -> Path:
    """Reading and refusing files does not depend on the weights: an untrained model will do."""
    return untrained_checkpoint


def test_band_size_is_what_the_docs_say():
    assert images.BAND_PIXELS == 1 << 20 and images.MAX_PIXELS == 40_000_000


# ------------------------------------------------------------------------------ thin strips, WebP, EXIF
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "size",
    [(1_000_000, 40), (40, 1_000_000), (4_990_000, 8), (51 * 20, 20)],
    ids=["40-high", "40-wide", "8-high", "51-to-1"],
)
def test_a_thin_strip_is_refused_before_decoding(size, monkeypatch):
    """A 40 KB PNG of 40 x 1,000,000 pixels made predict peak at 4 GB (each band padded to a whole block of
    1,000,000 // 1024 rows); 8 x 4,990,000 asked for 90 GiB. Past 50:1 there is no digit to read."""
    data = _png(Image.new("1", size, 1))
    assert len(data) < 1_000_000
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda img: decoded.append(img.size) or real_load(img))
    with pytest.raises(ImageError) as info:
        read_bytes(data, "strip.png")
    assert not decoded
    assert str(info.value) == (
        f"strip.png: image is {size[0]}x{size[1]} pixels, more than {images.MAX_ASPECT} "
        "times as long as it is wide; crop it to the digits"
    )


def test_the_box_mean_of_a_band_thinner_than_a_block_pads_no_more_than_its_pixels():
    """The thin-band path (columns first) gives the block means of the padded plane, without making it."""
    import cv2

    rng = np.random.default_rng(0)
    for h, w, f in ((3, 1000, 17), (40, 5000, 97), (1, 33, 5)):
        plane = rng.random((h, w), dtype=np.float32)
        oh, ow = -(-h // f), -(-w // f)
        padded = np.pad(plane, ((0, oh * f - h), (0, ow * f - w)), mode="edge")
        expected = cv2.resize(padded, (ow, oh), interpolation=cv2.INTER_AREA)
        got = images._box_mean(plane, f)
        assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-5)


def test_a_49_to_1_strip_costs_about_its_decoded_size(tmp_path):
    img = Image.new("L", (44_000, 898), 255)  # 39.5 megapixels, 49:1
    ImageDraw.Draw(img).line([(100, 100), (400, 800)], fill=0, width=40)
    path = tmp_path / "strip.png"
    path.write_bytes(_png(img))
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, peak, found = map(int, proc.stdout.split())
    assert found == 1
    assert (peak - before) / 1024 < 38 + 96  # 38 MiB decoded (mode L)


def _webp(side: int, **options) -> bytes:
    img = Image.new("L", (side, side), 255)
    ImageDraw.Draw(img).ellipse((side // 3, side // 3, 2 * side // 3, 3 * side // 4), outline=0, width=side // 40)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", **options)
    return buf.getvalue()


@pytest.mark.parametrize("options", [{"lossless": True}, {"quality": 5}], ids=["lossless", "lossy"])
def test_a_big_webp_is_refused_before_pillow_opens_it(options, monkeypatch):
    """An 11 KB 6300 x 6300 WebP cost predict 671 MB: Pillow cannot decode a WebP at reduced size and
    allocates its whole canvas as soon as it opens the file."""
    from PIL import WebPImagePlugin

    data = _webp(6300, **options)
    opened = []
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "_open", lambda img: opened.append(1))
    with pytest.raises(
        ImageError,
        match=r"^big.webp: WebP image is 6300x6300 = 39.7 megapixels, over the "
        r"12.6-megapixel limit; save it as PNG or JPEG, or smaller$",
    ):
        read_bytes(data, "big.webp")
    assert not opened


def test_a_webp_header_that_lies_about_its_canvas_is_judged_by_it():
    data = bytearray(_webp(64, lossless=True))
    assert data[12:16] == b"VP8L"
    # VP8X header declaring a 16384 x 16384 canvas in front of the same bitstream
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + bytes(4) + (16383).to_bytes(3, "little") * 2
    forged = bytes(data[:12]) + vp8x + bytes(data[12:])
    with pytest.raises(ImageError, match="16384x16384"):
        read_bytes(forged, "forged.webp")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        read_bytes(bytes(data[:12]) + b"VP8X" + bytes(4), "short.webp")


def test_a_12_megapixel_webp_photo_is_read_within_300_mb(tmp_path):
    path = tmp_path / "photo.webp"
    path.write_bytes(_webp(3500, lossless=True))  # 12.25 megapixels
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, peak, found = map(int, proc.stdout.split())
    assert found >= 1
    assert (peak - before) / 1024 < 220  # ~15 bytes a pixel while Pillow decodes it (190 MiB measured)


CORRUPT_EXIF = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00" + b"\xff" * 10


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_corrupt_exif_block_warns_nothing(fmt, recwarn):
    buf = io.BytesIO()
    Image.fromarray(page()).save(buf, format=fmt, exif=CORRUPT_EXIF)
    import warnings

    warnings.simplefilter("always")
    digits, problem = read_bytes(buf.getvalue(), "photo")
    assert problem is None and digits
    assert not [w for w in recwarn if "EXIF" in str(w.message)], [str(w.message) for w in recwarn]


def test_predict_prints_no_pillow_warning_for_a_corrupt_exif_block(untrained, tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(page()).save(path, format="JPEG", exif=CORRUPT_EXIF)
    proc = lenet5("predict", "--model", untrained, path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "EXIF" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a_sideways_photo_is_turned_like_every_viewer_does(fmt, orientation):
    img = Image.fromarray(page()).transpose(
        Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif, quality=95)
    ours = to_gray(open_image(buf.getvalue()))
    pillows = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("L"), np.float32) / 255
    assert ours.shape == pillows.shape == (SIDE, SIDE)
    assert np.abs(ours - pillows).max() < 0.02
    assert np.abs(ours - page() / 255).mean() < 0.02  # upright again: the bar is where it was drawn
