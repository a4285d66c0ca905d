"""Disks that fill up, files over the size limit, read-only run folders, and two processes filling one
data cache at once. Each must end in one clear line and a run folder that still holds its last good
checkpoint; never a traceback, never a half file.

The full disk and the read-only folder are real: a small tmpfs mounted for the test (needs root, as in
CI's containers; skipped where mounting is not allowed). The size limit uses RLIMIT_FSIZE, so writes
fail with EFBIG exactly as on a file system with a file-size cap; it works everywhere on Linux.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import http.server
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import LENET5, lenet5, write_mnist_subset
from lenet5.checkpoint import load_checkpoint
from lenet5.data.sources import FILES, MNIST_SHA256

EPOCHS = 6
pytestmark = pytest.mark.slow  # each test runs `lenet5` end to end in subprocesses (a few seconds to a minute)


@pytest.fixture(scope="module")
def tiny_idx(mnist, tmp_path_factory) -> Path:
    """2,000 real training digits and 200 test digits as IDX files."""
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("tiny-mnist"), 2000, 200)


def train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--name",
        "run",
        "--batch-size",
        "32",
        "--seed",
        "1",
        "--set",
        "data.val_size=200",
        "--set",
        "train.threads=1",
        *extra,
    ]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    return last


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """Mount a tmpfs of ``size`` at ``path`` for the block, or skip the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for block in (b"\0" * 65536, b"\0"):
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return ballast


def assert_no_half_files(run: Path) -> None:
    assert not list(run.glob(".*.tmp")), sorted(p.name for p in run.iterdir())
    for path in run.glob("*.safetensors"):
        load_checkpoint(path)


@pytest.mark.timeout(300)
def test_a_full_disk_during_training_keeps_the_last_good_checkpoint(tiny_idx, tmp_path):
    disk = tmp_path / "disk"
    with tmpfs(disk, "16m"):
        run = disk / "runs" / "run"
        proc = subprocess.Popen(
            [*LENET5, *train_args(tiny_idx, disk / "runs", "--epochs", str(EPOCHS))],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:  # the moment epoch 1's checkpoint exists: freeze the run, fill the disk, let it go on
            deadline = time.monotonic() + 120
            while not (run / "last.safetensors").exists():
                assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
                time.sleep(0.005)
            proc.send_signal(signal.SIGSTOP)
            kept = (run / "last.safetensors").read_bytes()
            ballast = fill(disk)
        finally:
            proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        line = one_error_line(result)
        print("\n" + line)
        assert "No space left on device" in line and "the last good checkpoint is kept" in line, line
        assert f"--resume {run}" in line
        assert (run / "last.safetensors").read_bytes() == kept  # untouched by the failed writes
        epoch = load_checkpoint(run / "last.safetensors").meta["epoch"]
        assert 1 <= epoch < EPOCHS
        assert_no_half_files(run)
        ballast.unlink()  # room again: the run continues from the checkpoint that was kept
        resumed = lenet5("train", "--resume", str(run), "--dataset", "idx", "--data-dir", str(tiny_idx), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resuming {run} at epoch {epoch + 1}" in resumed.stderr
        assert load_checkpoint(run / "last.safetensors").meta["epoch"] == EPOCHS
        assert_no_half_files(run)


def limit_file_size(max_bytes: int):
    def apply() -> None:  # in the child, before exec: writes past max_bytes fail with EFBIG, not a signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def test_a_file_size_limit_gives_one_line_and_keeps_the_checkpoint(tiny_idx, tmp_path):
    first = lenet5(*train_args(tiny_idx, tmp_path / "runs", "--epochs", "1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "run"
    kept = (run / "last.safetensors").read_bytes()
    # model.safetensors (~250 kB) still fits under 400 kB; last.safetensors (~500 kB, with Adam/momentum) does not
    result = lenet5(
        "train",
        "--resume",
        str(run),
        "--epochs",
        "3",
        "--dataset",
        "idx",
        "--data-dir",
        str(tiny_idx),
        cwd=tmp_path,
        preexec_fn=limit_file_size(400_000),
    )
    line = one_error_line(result)
    print("\n" + line)
    assert line.startswith(f"error: cannot write {run / 'last.safetensors'}: File too large"), line
    assert "the last good checkpoint is kept" in line
    assert (run / "last.safetensors").read_bytes() == kept
    assert_no_half_files(run)

    fresh = lenet5(
        *train_args(tiny_idx, tmp_path / "other", "--epochs", "1"), cwd=tmp_path, preexec_fn=limit_file_size(100_000)
    )
    line = one_error_line(fresh)
    assert "File too large" in line and "no checkpoint had been written yet" in line, line
    assert_no_half_files(tmp_path / "other" / "run")
    assert not (tmp_path / "other" / "run" / "model.safetensors").exists()


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` read-only even for root: a read-only remount of a tmpfs, else `chattr +i`, else skip."""
    if os.geteuid() == 0 and shutil.which("mount"):
        saved = folder.with_name(folder.name + "-saved")
        shutil.copytree(folder, saved)
        ok = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(folder)], capture_output=True).returncode == 0
        if ok:
            try:
                shutil.copytree(saved, folder, dirs_exist_ok=True)
                ro = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
                if ro.returncode == 0:
                    yield "read-only mount"
                    return
            finally:
                subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    if shutil.which("chattr"):
        targets = [folder, *folder.rglob("*")]
        if subprocess.run(["chattr", "+i", *map(str, targets)], capture_output=True).returncode == 0:
            try:
                yield "chattr +i"
                return
            finally:
                subprocess.run(["chattr", "-i", *map(str, targets)], capture_output=True)
    pytest.skip("cannot make a folder read-only for root here (no tmpfs mount, no chattr)")


def test_a_read_only_run_folder_gives_one_clear_line(tiny_idx, tmp_path):
    out = tmp_path / "runs"
    first = lenet5(*train_args(tiny_idx, out, "--epochs", "1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run = out / "run"
    with read_only(out) as how:
        kept = (run / "last.safetensors").read_bytes()
        resumed = lenet5(
            "train",
            "--resume",
            str(run),
            "--epochs",
            "2",
            "--dataset",
            "idx",
            "--data-dir",
            str(tiny_idx),
            cwd=tmp_path,
        )
        line = one_error_line(resumed)
        print("\n" + how + ": " + line)
        assert line.startswith(f"error: cannot write {run}"), (how, line)
        assert "Read-only file system" in line or "Operation not permitted" in line, (how, line)
        assert "the last good checkpoint is kept" in line
        assert (run / "last.safetensors").read_bytes() == kept
        new = lenet5(*train_args(tiny_idx, out / "sub", "--epochs", "1"), cwd=tmp_path)
        line = one_error_line(new)
        assert line.startswith(f"error: cannot write {out / 'sub'}"), (how, line)
        exported = lenet5("export", "--model", str(run / "model.safetensors"), cwd=tmp_path)
        line = one_error_line(exported)
        assert line.startswith(f"error: cannot write {run / 'model.onnx'}") or "onnx" in line, (how, line)


class _Mirror(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    served: list[str] = []
    delay = 0.3

    def do_GET(self):  # noqa: N802 - the http.server API
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.files:
            self.send_error(404)
            return
        self.served.append(name)
        time.sleep(self.delay)  # a slow mirror: the two processes overlap for sure
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.timeout(300)
def test_two_data_commands_filling_one_cache_at_once(mnist, tmp_path):
    from lenet5.data.idx import encode_idx

    arrays = (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)
    _Mirror.files = {f"{name}.gz": gzip.compress(encode_idx(a), compresslevel=1) for name, a in zip(FILES, arrays)}
    _Mirror.served = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    mirror = f"http://127.0.0.1:{server.server_address[1]}/"
    cache = tmp_path / "cache"  # empty: both processes must fetch
    code = (
        "import sys, lenet5.data.sources as s; s.MIRRORS = (sys.argv[1],); from lenet5.cli import main; "
        "sys.exit(main(['data', '--data-dir', sys.argv[2], '--json']))"
    )
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, mirror, str(cache)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        server.shutdown()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert report["counts"]["train_images"] == 60000 and report["counts"]["test_labels"] == 10000
    folder = cache / "mnist"
    for name in FILES:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == MNIST_SHA256[name]
    leftovers = [p.name for p in cache.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(_Mirror.served) == sorted(_Mirror.files), "the cache lock lets one process fetch, the other reuse"
