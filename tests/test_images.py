"""Preparing a person's image like MNIST: real MNIST test digits in awkward forms must still be read right."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from lenet5.data import images
from lenet5.data.images import digits_from_array, prepare_bytes, prepare_file, prepare_gray
from lenet5.errors import ImageError
from lenet5.predict import Predictor

N_DIGITS = 40


@pytest.fixture(scope="module")
def predictor(trained_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(trained_checkpoint)


@pytest.fixture(scope="module")
def digits(mnist, predictor):
    """The first N_DIGITS test digits (uint8 28x28) that the network reads right in MNIST's own form."""
    x, y = mnist.test_images[:200], mnist.test_labels[:200].astype(int)
    ok = predictor.probabilities(x).argmax(1) == y
    return x[ok][:N_DIGITS], y[ok][:N_DIGITS]


def encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def accuracy(predictor: Predictor, digits, make_bytes) -> float:
    x, y = digits
    prepared = np.stack([prepare_bytes(make_bytes(a), "test") for a in x])
    return float((predictor.probabilities(prepared).argmax(1) == y).mean())


def black_on_white(a: np.ndarray) -> Image.Image:
    return Image.fromarray(255 - a)


def big(a: np.ndarray, side: int) -> Image.Image:
    return Image.fromarray(a).resize((side, side), Image.Resampling.LANCZOS)


FORMS = {
    "black_on_white_png": (lambda a: encode(black_on_white(a)), 0.95),
    "rgba_black_ink_on_transparent": (
        lambda a: encode(Image.merge("RGBA", [Image.new("L", (28, 28), 0)] * 3 + [Image.fromarray(a)])),
        0.95,
    ),
    "rgba_white_ink_on_transparent": (
        lambda a: encode(Image.merge("RGBA", [Image.new("L", (28, 28), 255)] * 3 + [Image.fromarray(a)])),
        0.95,
    ),
    "off_centre_on_large_canvas": (lambda a: encode(_paste(black_on_white(a), (400, 300), (20, 230), 255)), 0.95),
    "very_large_1000px_jpeg": (
        lambda a: encode(ImageOps.invert(big(a, 1000)).convert("RGB"), "JPEG", quality=90),
        0.95,
    ),
    "very_small_14px": (lambda a: encode(Image.fromarray(a).resize((14, 14), Image.Resampling.BOX)), 0.9),
    "palette_gif": (lambda a: encode(black_on_white(a).convert("P"), "GIF"), 0.95),
    "grayscale_16bit_png": (lambda a: encode(Image.fromarray(a.astype(np.uint16) * 257)), 0.95),
    "blue_ink_on_yellow_paper_webp": (lambda a: encode(_coloured(a), "WEBP", lossless=True), 0.95),
    "bmp": (lambda a: encode(Image.fromarray(a).convert("RGB"), "BMP"), 0.95),
    "tiff": (lambda a: encode(black_on_white(a), "TIFF"), 0.95),
}


def _paste(img: Image.Image, size: tuple[int, int], at: tuple[int, int], fill: int) -> Image.Image:
    canvas = Image.new("L", size, fill)
    canvas.paste(img.resize((84, 84), Image.Resampling.LANCZOS), at)
    return canvas


def _coloured(a: np.ndarray) -> Image.Image:
    ink = a[..., None].astype(np.float32) / 255.0
    paper, blue = np.array([250, 240, 150], np.float32), np.array([20, 30, 160], np.float32)
    return Image.fromarray(np.round(paper * (1 - ink) + blue * ink).astype(np.uint8), mode="RGB")


@pytest.mark.parametrize("form", sorted(FORMS))
def test_awkward_forms_of_real_digits_are_read_right(form, predictor, digits):
    make_bytes, minimum = FORMS[form]
    assert accuracy(predictor, digits, make_bytes) >= minimum


def test_sixteen_bit_png_decodes_as_sixteen_bit(digits):
    data = encode(Image.fromarray(digits[0][0].astype(np.uint16) * 257))
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")


def test_preparing_an_mnist_digit_gives_back_nearly_the_same_digit(mnist):
    x = mnist.test_images[:300]
    diffs = np.array([np.abs(prepare_bytes(encode(Image.fromarray(a)), "d").astype(int) - a).mean() for a in x])
    assert np.median(diffs) < 1.0  # most come back pixel for pixel
    assert np.mean(diffs < 10) > 0.95


def test_prepared_digit_is_centred_and_fits_20_pixels():
    g = np.zeros((300, 500), np.float32)
    g[40:200, 30:90] = 1.0  # a tall bar near the top-left corner
    out = prepare_gray(g)
    assert out.dtype == np.uint8 and out.shape == (28, 28)
    rows, cols = np.nonzero(out > 0)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    com = (np.array(np.nonzero(out)).T * out[out > 0][:, None]).sum(0) / out.sum()
    assert np.all(np.abs(com - 14.0) <= 0.5)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(8, 120),
    w=st.integers(8, 120),
    box=st.tuples(st.floats(0, 0.7), st.floats(0, 0.7), st.floats(0.1, 0.3), st.floats(0.1, 0.3)),
    light=st.booleans(),
)
def test_any_blob_becomes_a_centred_28x28_digit(h, w, box, light):
    g = np.zeros((h, w), np.float32)
    y0, x0 = int(box[0] * h), int(box[1] * w)
    g[y0 : y0 + max(1, int(box[2] * h)), x0 : x0 + max(1, int(box[3] * w))] = 1.0
    out = prepare_gray(1.0 - g if light else g)
    assert out.shape == (28, 28) and out.dtype == np.uint8 and out.max() > 200
    ys, xs = np.nonzero(out)
    assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 21  # LANCZOS may ring one pixel wider
    assert out[0].max() == 0 or out[:, 0].max() == 0 or out[-1].max() == 0  # border stays dark


# ------------------------------------------------------------------------------------------------ errors
def test_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        prepare_file(tmp_path / "empty.png")


def test_text_file_named_png_is_refused(tmp_path):
    (tmp_path / "note.png").write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="not an image"):
        prepare_file(tmp_path / "note.png")


def test_truncated_png_is_refused(tmp_path, digits):
    data = encode(big(digits[0][0], 200))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        prepare_file(tmp_path / "cut.png")


def test_one_pixel_image_is_refused():
    with pytest.raises(ImageError, match="only 1x1 pixels"):
        prepare_bytes(encode(Image.new("L", (1, 1), 255)), "dot.png")


@pytest.mark.parametrize("colour", [0, 255, 128])
def test_blank_image_is_refused(colour):
    with pytest.raises(ImageError, match="no digit found"):
        prepare_bytes(encode(Image.new("L", (100, 80), colour)), "blank.png")


def test_nearly_blank_jpeg_noise_is_refused():
    rng = np.random.default_rng(0)
    noise = (250 + rng.integers(0, 6, (64, 64))).astype(np.uint8)
    with pytest.raises(ImageError, match="no digit found"):
        prepare_bytes(encode(Image.fromarray(noise), "JPEG"), "paper.jpg")


@pytest.mark.parametrize("side", [7000, 10000])  # 49 MP: Pillow's warning; 100 MP: Pillow's error
def test_decompression_bomb_beyond_the_limit_is_refused(side):
    data = encode(Image.new("1", (side, side), 0))  # tiny file, huge image
    assert len(data) < 100_000
    with pytest.raises(ImageError, match="megapixel limit"):
        prepare_bytes(data, "bomb.png")


def test_limits_are_what_the_docs_say():
    assert images.MAX_PIXELS == 40_000_000 and Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS
    assert "40 megapixels" in images.__doc__


# ------------------------------------------------------------------------------------------------ .npy
def test_npy_accepts_uint8_and_float_digits(tmp_path, digits):
    x = digits[0][:3]
    np.save(tmp_path / "u8.npy", x)
    np.save(tmp_path / "f.npy", x.astype(np.float32) / 255.0)
    np.save(tmp_path / "one.npy", x[0])
    assert np.array_equal(prepare_file(tmp_path / "u8.npy"), x)
    assert np.array_equal(prepare_file(tmp_path / "f.npy"), x)
    assert prepare_file(tmp_path / "one.npy").shape == (1, 28, 28)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((28, 28), np.nan, np.float32), "NaN or infinite"),
        (np.full((2, 28, 28), np.inf), "NaN or infinite"),
        (np.zeros((32, 32), np.uint8), "expected a \\(28, 28\\) digit"),
        (np.full((28, 28), 3.0), "float pixels must be in 0..1"),
        (np.full((28, 28), 300, np.int32), "integer pixels must be in 0..255"),
        (np.zeros((28, 28), np.complex64), "unsupported array dtype"),
    ],
)
def test_npy_rejects_bad_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        digits_from_array(array, "bad.npy")


def test_npy_that_is_not_an_array_is_refused(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ImageError, match="not a readable .npy"):
        prepare_file(tmp_path / "x.npy")


@pytest.mark.parametrize(
    "descr, shape, message",
    [
        ("|u1", (30_000_000, 28, 28), "more than 100000 digits"),  # 23 GB claimed by a tiny file
        ("<f8", (100, 28, 28), "but the file holds"),  # a header that lies about how much data follows
    ],
)
def test_npy_whose_header_lies_is_refused_before_allocating(tmp_path, descr, shape, message):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    buf.write(bytes(2 * 784))
    (tmp_path / "lie.npy").write_bytes(buf.getvalue())
    with pytest.raises(ImageError, match=message):
        prepare_file(tmp_path / "lie.npy")


def test_an_image_mode_pillow_cannot_convert_is_one_error_for_that_file(tmp_path, trained_checkpoint):
    buf = io.BytesIO()
    Image.new("LAB", (60, 60)).save(buf, format="TIFF")  # Pillow opens it, but cannot turn LAB into grey
    (tmp_path / "lab.tif").write_bytes(buf.getvalue())
    Image.new("L", (60, 60), 255).save(tmp_path / "white.png")
    results = Predictor.from_checkpoint(trained_checkpoint).classify_files([str(tmp_path)])
    assert [r["file"].rsplit("/", 1)[-1] for r in results] == ["lab.tif", "white.png"]  # the other file still read
    assert "cannot read a LAB image" in results[0]["error"] and results[1]["unsure"] is True


def test_a_fifo_named_npy_is_refused_without_waiting(tmp_path, trained_checkpoint):
    import os

    os.mkfifo(tmp_path / "pipe.npy")  # opening it for reading would block until a writer comes
    [result] = Predictor.from_checkpoint(trained_checkpoint).classify_files([str(tmp_path / "pipe.npy")])
    assert result["error"].endswith("not a file")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    with open(tmp_path / "huge.png", "wb") as f:  # sparse: 300 MB on paper, nothing on disk
        f.truncate(300_000_000)
    with pytest.raises(ImageError, match="limit 256 MB"):
        prepare_file(tmp_path / "huge.png")
