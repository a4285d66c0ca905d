"""Hostile files: checkpoints, IDX files and images that are truncated, bit-flipped, lying about their sizes,
or carrying code. Each must give the project's own error with a clear message, never run code, never crash.

Fuzz budget: LENET5_FUZZ_EXAMPLES examples per fuzz test (default 200, derandomized so CI is repeatable).
A longer hunt, with fresh random examples each run:

    LENET5_FUZZ_EXAMPLES=100000 .venv/bin/pytest tests/test_faults_files.py -k fuzz
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from conftest import lenet5
from lenet5.checkpoint import MAX_HEADER_BYTES, load_checkpoint, save_checkpoint
from lenet5.data.idx import encode_idx, parse_idx, read_idx
from lenet5.data.images import MAX_PIXELS, load_npy, prepare_bytes
from lenet5.errors import CheckpointError, IDXError, ImageError
from lying_headers import png_declaring

FUZZ_EXAMPLES = int(os.environ.get("LENET5_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    derandomize="LENET5_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WORK = Path(tempfile.mkdtemp(prefix="lenet5-faults-"))


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.engines import create_engine

    return create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=seed).state_dict()


WEIGHTS = _weights()
GOOD_PATH = save_checkpoint(
    WORK / "good.safetensors",
    WEIGHTS,
    engine="numpy",
    model="modern",
    config={"train": {"epochs": 1}},
    epoch=1,
    metrics={"val_accuracy": 0.5},
)
GOOD = GOOD_PATH.read_bytes()
HEADER_END = 8 + struct.unpack("<Q", GOOD[:8])[0]


def write(data: bytes, name: str = "model.safetensors") -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


def loads_or_refuses(data: bytes, name: str = "model.safetensors") -> bool:
    """True when the bytes load as a valid checkpoint; False when refused with a CheckpointError that names
    the file. Anything else (another exception type, a crash) fails the test."""
    path = write(data, name)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message and len(message) < 400, message
        return False
    for name_, value in ckpt.weights.items():
        assert value.shape == WEIGHTS[name_].shape and np.all(np.isfinite(value))
    return True


# ------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_truncated_at_every_header_cut_and_many_data_cuts():
    rng = np.random.default_rng(0)
    cuts = sorted(set(range(0, HEADER_END + 64)) | set(rng.integers(HEADER_END, len(GOOD), 300).tolist()))
    for cut in cuts:
        assert not loads_or_refuses(GOOD[:cut]), f"a file cut at {cut} of {len(GOOD)} bytes loaded"
    print(f"\n{len(cuts)} truncations of a {len(GOOD)}-byte checkpoint, all refused")


@FUZZ
@given(
    flips=st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 7)), min_size=1, max_size=8),
    in_header=st.booleans(),
)
def test_fuzz_checkpoint_bit_flips_load_or_refuse(flips, in_header):
    data = bytearray(GOOD)
    for pos, bit in flips:
        pos = pos % HEADER_END if in_header else pos  # half the examples aim at the JSON header
        data[pos] ^= 1 << bit
    if loads_or_refuses(bytes(data)):
        from lenet5.predict import Predictor

        try:
            probs = Predictor.from_checkpoint(WORK / "model.safetensors").probabilities(np.zeros((1, 28, 28), np.uint8))
        except CheckpointError:
            return
        assert np.all(np.isfinite(probs)) and abs(probs.sum() - 1) < 1e-6


def _save(tensors: dict[str, np.ndarray], metadata: dict | None = None) -> bytes:
    from safetensors.numpy import save

    meta = {"format": "lenet5-checkpoint", "format_version": "1", "model": "modern"}
    return save(tensors, metadata={**meta, **(metadata or {})} if metadata is not False else None)


def _with(name: str, value) -> dict[str, np.ndarray]:
    out = dict(WEIGHTS)
    if value is None:
        del out[name]
    else:
        out[name] = value
    return out


HOSTILE_CHECKPOINTS = {
    "wrong_shape": (lambda: _save(_with("conv1.weight", np.zeros((6, 1, 3, 3), np.float32))), "shape"),
    "transposed_fc": (lambda: _save(_with("fc1.weight", WEIGHTS["fc1.weight"].T.copy())), "shape"),
    "int_weights": (lambda: _save(_with("fc3.bias", np.zeros(10, np.int32))), "dtype"),
    "bool_weights": (lambda: _save(_with("fc3.bias", np.zeros(10, bool))), "dtype"),
    "missing_tensor": (lambda: _save(_with("fc2.bias", None)), "missing"),
    "extra_tensor": (lambda: _save(_with("backdoor.weight", np.zeros(3, np.float32))), "unexpected"),
    "renamed_tensors": (lambda: _save({"module." + k if k.startswith("fc") else k: v for k, v in WEIGHTS.items()}), ""),
    "nan_weights": (lambda: _save(_with("conv2.weight", np.full((16, 6, 5, 5), np.nan, np.float32))), "NaN"),
    "inf_bias": (lambda: _save(_with("fc1.bias", np.full(120, np.inf, np.float32))), "NaN or infinite"),
    "unknown_model": (lambda: _save(WEIGHTS, {"model": "transformer"}), "unknown model"),
    "classic_label_on_modern": (lambda: _save(WEIGHTS, {"model": "classic"}), "classic"),
    "future_version": (lambda: _save(WEIGHTS, {"format_version": "99"}), "newer"),
    "foreign_format": (lambda: _save(WEIGHTS, {"format": "pytorch"}), "not a lenet5 checkpoint"),
    "bad_json_config": (lambda: _save(WEIGHTS, {"config": "{not json"}), "metadata"),
    "bad_epoch": (lambda: _save(WEIGHTS, {"epoch": "one"}), "metadata"),
    "zero_std": (lambda: _save(WEIGHTS, {"normalization": json.dumps({"mean": 0.1, "std": 0.0})}), "normalization"),
    "nan_mean": (lambda: _save(WEIGHTS, {"normalization": '{"mean": NaN, "std": 0.3}'}), "normalization"),
    "text_std": (lambda: _save(WEIGHTS, {"normalization": json.dumps({"mean": 0.1, "std": "wide"})}), "normalization"),
    "list_normalization": (lambda: _save(WEIGHTS, {"normalization": "[1, 2]"}), "normalization"),
    "giant_header_u64": (lambda: struct.pack("<Q", 2**64 - 1) + GOOD[8:], "header"),
    "giant_header_2e63": (lambda: struct.pack("<Q", 2**63) + GOOD[8:], "header"),
    "header_just_over_limit": (lambda: struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" * 64, "header"),
    "header_longer_than_file": (lambda: struct.pack("<Q", len(GOOD)) + GOOD[8:], "truncated"),
    "header_not_json": (lambda: struct.pack("<Q", 16) + b"\xff" * 16, "corrupt"),
    "offsets_past_end": (lambda: _rewrite_header(lambda h: h["fc3.bias"].update(data_offsets=[0, 10**12])), "corrupt"),
    "overlapping_offsets": (lambda: _rewrite_header(lambda h: h["fc3.bias"].update(data_offsets=[0, 40])), "corrupt"),
    "dtype_lies": (lambda: _rewrite_header(lambda h: h["fc3.bias"].update(dtype="F64")), "corrupt"),
    "shape_lies": (lambda: _rewrite_header(lambda h: h["fc3.bias"].update(shape=[10**9, 10**9])), "corrupt"),
    "deep_json": (lambda: _raw_header(b"[" * 100000 + b"]" * 100000), "corrupt"),
    "empty_file": (lambda: b"", "too short"),
    "text_file": (lambda: b"hello, this is a text file\n" * 20, "header"),
    "zip_file": (lambda: _zip_bytes(), "header"),
}


def _raw_header(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def _rewrite_header(change) -> bytes:
    header = json.loads(GOOD[8:HEADER_END])
    change(header)
    text = json.dumps(header).encode()
    return _raw_header(text) + GOOD[HEADER_END:]


def _zip_bytes() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.pkl", b"x" * 100)
    return buf.getvalue()


@pytest.mark.parametrize("kind", sorted(HOSTILE_CHECKPOINTS))
def test_hostile_checkpoint_is_refused_with_a_clear_message(kind):
    make, words = HOSTILE_CHECKPOINTS[kind]
    path = write(make())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and words in message, message


class CodeRunner:
    """Unpickling this would create the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickled_payloads(marker: Path) -> dict[str, bytes]:
    import torch

    evil = {"conv1.weight": CodeRunner(marker), "conv1.bias": torch.zeros(6)}
    out = {
        "raw_pickle.pth": pickle.dumps(evil),
        "raw_pickle.pt": pickle.dumps(CodeRunner(marker), protocol=2),
        "raw_pickle.safetensors": pickle.dumps(evil),
    }
    for name, zipped in (("torch_zip.pth", True), ("torch_legacy.pth", False)):
        buf = io.BytesIO()
        torch.save(evil, buf, _use_new_zipfile_serialization=zipped)
        out[name] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"state_dict": {"fc1.weight": CodeRunner(marker)}}, buf)
    out["wrapped_state_dict.pth"] = buf.getvalue()
    return out


def test_pickles_with_code_are_refused_and_never_run(tmp_path):
    pytest.importorskip("torch")
    marker = tmp_path / "code-ran"
    payloads = _pickled_payloads(marker)
    pickle.loads(pickle.dumps(CodeRunner(marker)))  # the payload works: unpickling it does create the marker
    assert marker.exists()
    marker.unlink()
    for name, data in payloads.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert not marker.exists(), f"loading {name} ran code"
        message = str(info.value)
        assert str(path) in message and "\n" not in message, message
        if name.endswith((".pth", ".pt")):
            assert "refused" in message or "not a PyTorch" in message, message
    npy = tmp_path / "digits.npy"
    np.save(npy, np.array([CodeRunner(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ImageError, match="not a readable .npy"):
        load_npy(npy)
    assert not marker.exists()


@pytest.mark.parametrize(
    "kind",
    [
        "raw_pickle.pth",
        "torch_zip.pth",
        "giant_header_u64",
        "nan_weights",
        "offsets_past_end",
        "zero_std",
        "bit_flipped_header",
    ],
)
def test_cli_evaluate_refuses_hostile_checkpoints_in_one_line(tmp_path, kind):
    marker = tmp_path / "code-ran"
    if kind.endswith(".pth"):
        pytest.importorskip("torch")
        path = tmp_path / kind
        path.write_bytes(_pickled_payloads(marker)[kind])
    else:
        path = tmp_path / "model.safetensors"
        if kind == "bit_flipped_header":
            data = bytearray(GOOD)
            data[HEADER_END // 2] ^= 0x80  # a byte of the JSON header is no longer UTF-8
            path.write_bytes(bytes(data))
        else:
            path.write_bytes(HOSTILE_CHECKPOINTS[kind][0]())
    result = lenet5("evaluate", "--model", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


# --------------------------------------------------------------------------------------------- IDX
IDX_GOOD = encode_idx(np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28))


def test_idx_truncated_at_every_byte():
    for cut in range(len(IDX_GOOD)):
        with pytest.raises(IDXError):
            parse_idx(IDX_GOOD[:cut], "images")
    path = WORK / "images-idx3-ubyte.gz"
    packed = gzip.compress(IDX_GOOD)
    for cut in range(len(packed)):
        path.write_bytes(packed[:cut])
        with pytest.raises(IDXError, match=str(path)):
            read_idx(path)
    print(f"\n{len(IDX_GOOD)} raw and {len(packed)} gzip truncations of an IDX file, all refused")


@pytest.mark.parametrize(
    "header, words",
    [
        (b"\x00\x00\x08\x00", "dimensions"),
        (b"\x00\x00\x08\x09" + b"\x00\x00\x00\x01" * 9, "dimensions"),
        (b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3, "absurd"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 2**16, 2**15 + 1), "absurd"),  # just over 2**31 elements
        (b"\x00\x00\x0e\x01" + struct.pack(">I", 2**30), "truncated"),  # 8 GiB of float64 declared, 0 present
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "type"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "magic"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x00\x00", "unexpected bytes"),
    ],
)
def test_idx_headers_that_lie(header, words):
    with pytest.raises(IDXError, match=words):
        parse_idx(header, "x")


def test_idx_gzip_bomb_is_refused_without_inflating_it():
    member = gzip.compress(b"\x00" * (1 << 20), compresslevel=9)  # 1 MiB of zeros -> ~1 KiB
    bomb = gzip.compress(encode_idx(np.zeros(10, np.uint8))) + member * 4096  # inflates to 4 GiB
    path = WORK / "labels-idx1-ubyte.gz"
    path.write_bytes(bomb)
    tracemalloc.start()
    cpu = time.process_time()  # this process's CPU time: what other processes on the machine do does not count
    try:
        with pytest.raises(IDXError, match="gzip bomb"):
            read_idx(path)
        cpu = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB allocated"  # inflating it would allocate 4 GiB
    assert cpu < 2.0, f"{cpu:.1f} s of CPU"  # inflating 4 GiB, even chunk by chunk, takes ~10 s of CPU


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=600),
        st.lists(st.tuples(st.integers(0, len(IDX_GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=6),
    )
)
def test_fuzz_idx_reader(mutation):
    if isinstance(mutation, bytes):
        data = mutation
    else:
        buf = bytearray(IDX_GOOD)
        for pos, value in mutation:
            buf[pos % 40] = value  # aim at the header
        data = bytes(buf)
    for raw, name in (
        (data, "x-idx3-ubyte"),
        (gzip.compress(data, mtime=0), "x-idx3-ubyte.gz"),
        (data, "y-idx3-ubyte.gz"),
    ):
        path = WORK / name
        path.write_bytes(raw)
        try:
            array = read_idx(path)
        except IDXError as exc:
            assert str(path) in str(exc)
            continue
        assert array.size * array.dtype.itemsize + 4 + 4 * array.ndim == len(data)


# ------------------------------------------------------------------------------------------- images
def _bmp_declaring(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 0).save(buf, format="BMP")
    data = bytearray(buf.getvalue())
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def _gif_declaring(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 0).save(buf, format="GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    at = data.index(b"\x2c")  # image descriptor
    data[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def _jpeg_declaring(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (16, 16), 0).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    at = data.index(b"\xff\xc0")  # start of frame: length(2) precision(1) height(2) width(2)
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _real_png_bomb() -> bytes:
    side = int(MAX_PIXELS**0.5) + 1  # 6,325 x 6,325: just over the limit, ~40 KB as a PNG
    buf = io.BytesIO()
    Image.new("1", (side, side), 0).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda: png_declaring(6325, 6325),  # 40.0 MP: just over the 40-megapixel limit
        lambda: png_declaring(100_000, 100_000),
        lambda: png_declaring(2**31 - 1, 2**31 - 1),
        lambda: _bmp_declaring(50_000, 50_000),
        lambda: _gif_declaring(65535, 65535),
        lambda: _jpeg_declaring(65535, 65535),
        _real_png_bomb,
    ],
    ids=["png-just-over", "png-10gp", "png-max", "bmp", "gif", "jpeg", "png-real"],
)
def test_decompression_bombs_are_refused_before_decoding(make, monkeypatch):
    data = make()
    decoded = []  # every image Pillow decodes goes through ImageFile.load
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda img: decoded.append(img.size) or real_load(img))
    cpu = time.process_time()  # this process's CPU time: what other processes on the machine do does not count
    with pytest.raises(ImageError) as info:
        prepare_bytes(data, "bomb.img")
    cpu = time.process_time() - cpu
    assert not decoded, f"the image was decoded ({decoded}) before its size was judged"
    assert cpu < 1.0, f"{cpu:.1f} s of CPU"  # the README's "refused in under a second"
    message = str(info.value)
    assert message.startswith("bomb.img: ") and "\n" not in message
    if "megapixel" not in message:  # some formats fail on the lying header before the size check
        assert "corrupt" in message or "not an image" in message, message


def test_an_image_at_the_limit_is_read():
    img = Image.new("L", (8000, MAX_PIXELS // 8000), 255)  # exactly 40,000,000 pixels, white paper
    img.paste(0, (3800, 1000, 4200, 4000))  # a dark stroke: a 1
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    digit = prepare_bytes(buf.getvalue(), "big.png")
    assert digit.shape == (28, 28) and digit.max() == 255


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    digit = np.zeros((28, 28), np.uint8)
    digit[5:23, 12:17] = 255
    out = []
    for fmt, mode in (
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("JPEG", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "L"),
        ("WEBP", "RGB"),
        ("PNG", "I;16"),
    ):
        img = Image.fromarray(digit).convert(mode) if mode != "I;16" else Image.fromarray(digit.astype(np.uint16) * 257)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(digit.astype(np.float32) / 255, mode="F").save(buf, format="TIFF")  # float pixels: NaN possible
    out.append(buf.getvalue())
    out.append(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    return out


SEEDS = _seed_images()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on damaged TIFF tags and EXIF
@FUZZ
@given(
    seed=st.integers(0, len(SEEDS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_fuzz_image_loader(seed, edits, cut):
    data = bytearray(SEEDS[seed])
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    try:
        digit = prepare_bytes(bytes(data), "fuzz.img")
    except ImageError as exc:
        assert str(exc).startswith("fuzz.img: ") and "\n" not in str(exc)
        return
    assert digit.shape == (28, 28) and digit.dtype == np.uint8


@pytest.mark.parametrize("damage", ["truncated", "bomb", "wrong_dims"])
def test_cli_refuses_hostile_idx_files_in_one_line(tmp_path, damage):
    from lenet5.data.idx import write_idx
    from lenet5.data.sources import FILES, TRAIN_IMAGES

    rng = np.random.default_rng(0)
    for name in FILES:
        shape = (20, 28, 28) if "images" in name else (20,)
        write_idx(tmp_path / name, rng.integers(0, 10, shape, dtype=np.uint8))
    target = tmp_path / TRAIN_IMAGES
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    elif damage == "bomb":
        target.unlink()
        member = gzip.compress(b"\x00" * (1 << 20))
        (tmp_path / (TRAIN_IMAGES + ".gz")).write_bytes(
            gzip.compress(encode_idx(np.zeros((20, 28, 28), np.uint8))) + member * 1024
        )
    else:
        target.write_bytes(encode_idx(np.zeros((20, 32, 32), np.uint8)))
    result = lenet5("data", "--dataset", "idx", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and TRAIN_IMAGES in lines[0], result.stderr


@pytest.mark.parametrize("size", [(28, 32028), (32028, 28), (4, 9000), (5, 5000), (2100, 4)])
def test_long_thin_images_are_read_or_refused_cleanly(size):
    """Found by the atheris harness: a 28 x 32028 strip was shrunk to zero columns (ValueError)."""
    img = Image.new("L", size, 255)
    img.paste(0, (0, 0, max(1, size[0] // 3), max(1, size[1] // 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    try:
        digit = prepare_bytes(buf.getvalue(), "strip.png")
    except ImageError as exc:
        assert str(exc).startswith("strip.png: ")
        return
    assert digit.shape == (28, 28) and digit.dtype == np.uint8


REGRESSIONS = sorted((Path(__file__).parent / "fuzz" / "regressions").glob("images-*"))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_inputs_the_fuzzers_found_stay_fixed(path):
    """Crashes found by tests/fuzz/fuzz_images.py (a TypeError inside Pillow's TIFF reader; a strip shrunk
    to nothing): now a digit or one ImageError line."""
    try:
        digit = prepare_bytes(path.read_bytes(), path.name)
    except ImageError as exc:
        assert str(exc).startswith(path.name + ": ") and "\n" not in str(exc)
        return
    assert digit.shape == (28, 28)
