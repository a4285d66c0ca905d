"""The IDX reader/writer: round trips, and every malformed input raises IDXError naming the file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lenet5.data.idx import encode_idx, parse_idx, read_idx, write_idx
from lenet5.errors import IDXError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6))
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=arrays)
def test_idx_round_trips_random_arrays(array):
    back = parse_idx(encode_idx(array))
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_give_an_array_or_idx_error(data):
    try:
        out = parse_idx(data, "fuzz")
    except IDXError as exc:
        assert "fuzz" in str(exc)
    else:
        assert isinstance(out, np.ndarray)
        assert encode_idx(out) == data  # anything accepted is exactly what the header says


@settings(max_examples=200, deadline=None)
@given(array=arrays, data=st.data())
def test_corrupted_idx_bytes_never_raise_anything_else(array, data):
    raw = bytearray(encode_idx(array))
    action = data.draw(st.sampled_from(["truncate", "extend", "flip"]))
    if action == "truncate":
        raw = raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif action == "extend":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    try:
        out = parse_idx(bytes(raw), "corrupt")
    except IDXError:
        return
    assert isinstance(out, np.ndarray)


def test_write_then_read_file_raw_and_gz(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        write_idx(tmp_path / name, images)
        np.testing.assert_array_equal(read_idx(tmp_path / name), images)
    assert gzip.decompress((tmp_path / "x-idx3-ubyte.gz").read_bytes()) == encode_idx(images)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (b"PK\x03\x04 this is a zip file", "bad magic"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "unknown IDX element type"),
        (bytes([0, 0, 0x08, 0]), "dimensions"),
        (bytes([0, 0, 0x08, 3, 0, 0, 0, 2]), "truncated IDX header"),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 4, 1, 2]), "truncated"),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 1, 1, 2]), "unexpected bytes"),
        (bytes([0, 0, 0x08, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2]), "absurd"),
    ],
)
def test_malformed_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(IDXError) as info:
        read_idx(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_corrupt_gzip_and_missing_file(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(IDXError, match="gzip"):
        read_idx(tmp_path / "a.gz")
    with pytest.raises(IDXError, match="not found"):
        read_idx(tmp_path / "missing")
