"""Read and write the IDX format of MNIST (http-less spec: LeCun's "file formats" note).

An IDX file is: two zero bytes, one type byte, one byte with the number of dimensions D, then D
big-endian uint32 sizes, then the data in row-major order, big-endian. Every check names the file.
"""

from __future__ import annotations

import errno
import gzip
import io
import math
import os
import stat
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
# The most one IDX file may hold, uncompressed, unless the caller knows better (the MNIST files' real sizes):
# 256 MB is 340,000 images of 28 x 28, over five times MNIST's training set.
MAX_IDX_BYTES = 256 * 1024 * 1024
READ_CHUNK = 1024 * 1024  # inflate this much at a time


class NotARegularFile(OSError):
    """The path names a FIFO, a device, a directory or a socket: reading it could hang or never end."""


def describe_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: str | Path, flags: int = os.O_RDONLY, *, follow_symlinks: bool = True, mode: int = 0o666):
    """os.open a file that must be a regular file, without ever blocking (a FIFO opened for reading waits for
    a writer forever): O_NONBLOCK, then fstat; anything else raises NotARegularFile. With follow_symlinks
    False a symbolic link is refused too (O_NOFOLLOW). Returns the descriptor (O_NONBLOCK cleared)."""
    flags |= getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if not follow_symlinks and exc.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, "is a symbolic link, not a regular file", str(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(errno.EINVAL, f"is {describe_kind(info.st_mode)}, not a regular file", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str | Path, max_bytes: int = MAX_IDX_BYTES, what: str = "the limit for one IDX file") -> bytes:
    """The file's content; a name ending in .gz is decompressed, in a streaming way.

    At most ``max_bytes`` (of uncompressed content) are read: a larger file, or a .gz whose IDX header
    declares more, is refused before anything that size is allocated. ``what`` names the limit in the message
    (the real size of an MNIST file, or the most an IDX file for --dataset idx may hold). Only regular files
    are read (a FIFO or a device named like a dataset file would hang or never end)."""
    path = Path(path)
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise IDXError(f"{path}: file not found") from None
    except NotARegularFile as exc:
        raise IDXError(f"{path}: {exc.strerror}; remove it or put the real file there") from None
    except OSError as exc:
        raise IDXError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with open(fd, "rb") as f:
        try:
            size = os.fstat(fd).st_size
            if path.suffix == ".gz":
                if size > max_bytes + max_bytes // 256 + 1024:  # incompressible data grows a little
                    raise IDXError(
                        f"{path}: {size:,} bytes compressed, already larger than {what} "
                        f"({max_bytes:,} bytes uncompressed)"
                    )
                try:
                    return _gunzip_idx(f, path, max_bytes, what)
                except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    raise IDXError(f"{path}: not a valid gzip file ({exc})") from None
            if size > max_bytes:
                raise IDXError(f"{path}: {size:,} bytes, larger than {what} ({max_bytes:,} bytes)")
            data = f.read(max_bytes + 1)  # bounded even if the file grows meanwhile
        except OSError as exc:
            raise IDXError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise IDXError(f"{path}: larger than {what} ({max_bytes:,} bytes)")
    return data


def gunzip_bytes(
    raw: bytes, name: str, max_bytes: int = MAX_IDX_BYTES, what: str = "the limit for one IDX file"
) -> bytes:
    """Gzipped IDX bytes (a download) inflated the way read_bytes inflates a .gz file: bounded, streaming."""
    try:
        return _gunzip_idx(io.BytesIO(raw), Path(name), max_bytes, what)
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXError(f"{name}: not a valid gzip file ({exc})") from None


def _gunzip_idx(fileobj, path: Path, max_bytes: int, what: str) -> bytes:
    """Inflate, chunk by chunk, no more than the IDX header inside declares (plus one byte, to notice extra
    data) and never more than ``max_bytes``: a small file that would inflate to gigabytes (a gzip bomb, or an
    honest header declaring billions of elements) is refused without inflating it, and memory grows only with
    the data actually inflated, not with what the header claims. Content that is not a valid IDX header comes
    back as its first bytes, for parse_idx to say what is wrong."""
    with gzip.GzipFile(fileobj=fileobj, mode="rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in IDX_TYPES or not 1 <= head[3] <= MAX_DIMS:
            return head
        head += f.read(4 * head[3])
        if len(head) < 4 + 4 * head[3]:
            return head
        shape = struct.unpack(f">{head[3]}I", head[4:])
        total = len(head) + math.prod(shape) * IDX_TYPES[head[2]].itemsize
        if total > max_bytes:
            raise IDXError(
                f"{path}: its IDX header declares {shape} ({total:,} bytes), larger than {what} "
                f"({max_bytes:,} bytes); not inflated"
            )
        data = bytearray(head)
        while len(data) <= total:
            chunk = f.read(min(READ_CHUNK, total + 1 - len(data)))
            if not chunk:
                break
            data += chunk
        if len(data) > total:
            raise IDXError(f"{path}: inflates to more data than its IDX header declares {shape} (a gzip bomb?)")
        return bytes(data)


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
