"""Read and write the IDX format of MNIST (http-less spec: LeCun's "file formats" note).

An IDX file is: two zero bytes, one type byte, one byte with the number of dimensions D, then D
big-endian uint32 sizes, then the data in row-major order, big-endian. Every check names the file.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from lenet5.atomic import atomic_write_bytes
from lenet5.errors import IDXError

# type byte -> big-endian dtype
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_OF = {dt.newbyteorder("=").str: code for code, dt in IDX_TYPES.items()}
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 31  # refuse absurd headers before allocating anything


def read_bytes(path: str | Path) -> bytes:
    """The file's content; a name ending in .gz is decompressed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IDXError(f"{path}: file not found") from None
    except OSError as exc:
        raise IDXError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.suffix == ".gz":
        try:
            return _gunzip_idx(raw, path)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(f"{path}: not a valid gzip file ({exc})") from None
    return raw


def _gunzip_idx(raw: bytes, path: Path) -> bytes:
    """Inflate no more than the IDX header inside declares (plus one byte, to notice extra data), so a small
    file that would inflate to gigabytes (a gzip bomb) is refused without inflating it. Content that is not
    a valid IDX header comes back as its first bytes, for parse_idx to say what is wrong."""
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES or not 1 <= head[3] <= MAX_DIMS:
            return head
        head += f.read(4 * head[3])
        if len(head) < 4 + 4 * head[3]:
            return head
        shape = struct.unpack(f">{head[3]}I", head[4:])
        if math.prod(shape) > MAX_ELEMENTS:
            return head
        expected = math.prod(shape) * IDX_TYPES[head[2]].itemsize
        body = f.read(expected + 1)
        if len(body) > expected:
            raise IDXError(f"{path}: inflates to more data than its IDX header declares {shape} (a gzip bomb?)")
        return head + body


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a native-endian array, validating header and size."""
    if len(data) < 4:
        raise IDXError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(f"{name}: not an IDX file (bad magic number {data[:4].hex()})")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES:
        raise IDXError(f"{name}: unknown IDX element type 0x{type_code:02x}")
    if not 1 <= ndim <= MAX_DIMS:
        raise IDXError(f"{name}: IDX header declares {ndim} dimensions (1..{MAX_DIMS} allowed)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = math.prod(shape)  # Python ints: no overflow on absurd headers
    if count > MAX_ELEMENTS:
        raise IDXError(f"{name}: IDX header declares an absurd size {shape}")
    dtype = IDX_TYPES[type_code]
    expected = header + count * dtype.itemsize
    if len(data) < expected:
        raise IDXError(f"{name}: truncated: header says {shape} ({expected} bytes) but the file has {len(data)} bytes")
    if len(data) > expected:
        raise IDXError(f"{name}: {len(data) - expected} unexpected bytes after the data declared by the header {shape}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a native-endian array."""
    return parse_idx(read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of an array (uint8, int8, int16, int32, float32 or float64; 1..8 dimensions)."""
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=").str
    if key not in _TYPE_OF:
        raise IDXError(f"cannot write dtype {array.dtype} as IDX (use uint8, int8, int16, int32, float32, float64)")
    if not 1 <= array.ndim <= MAX_DIMS:
        raise IDXError(f"cannot write a {array.ndim}-dimensional array as IDX (1..{MAX_DIMS})")
    code = _TYPE_OF[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write an array as IDX (gzip-compressed when the name ends in .gz), atomically."""
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
    return path
