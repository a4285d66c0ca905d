"""Getting MNIST: files already there, verification, re-fetch of bad files, and the all-sources-failed message."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import lenet5
from lenet5.data import sources
from lenet5.data.datasets import load_mnist
from lenet5.data.idx import write_idx
from lenet5.data.sources import FILES, MNIST_SHA256, ensure_mnist, find_idx_dataset
from lenet5.errors import DataError


@pytest.fixture(scope="module")
def cached_folder(mnist) -> Path:
    return mnist.files.folder


@pytest.fixture()
def offline(monkeypatch):
    """No mirror answers (a closed port on 127.0.0.1) and npm is not found."""
    monkeypatch.setattr(sources, "MIRRORS", ("http://127.0.0.1:9/",))
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)


def test_uses_torchvision_layout_with_gz_files_without_fetching(tmp_path, cached_folder, offline):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:
        (raw / f"{name}.gz").write_bytes(gzip.compress((cached_folder / name).read_bytes(), compresslevel=1))
    files = ensure_mnist(tmp_path)
    assert files.paths == {name: raw / f"{name}.gz" for name in FILES}
    assert all(source.startswith("local file") for source in files.sources.values())
    assert files.sha256 == MNIST_SHA256


def test_corrupt_file_is_never_used_and_all_failed_message_lists_attempts(tmp_path, cached_folder, offline):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in FILES:
        shutil.copy(cached_folder / name, folder / name)
    data = bytearray((folder / FILES[1]).read_bytes())
    data[100] ^= 0xFF  # one flipped byte: still a valid IDX file, wrong checksum
    (folder / FILES[1]).write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert FILES[1] in message and "checksum mismatch" in message
    assert "127.0.0.1:9" in message and "npm is not installed" in message
    assert "by hand" in message and str(folder) in message
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_cli_reports_failure_in_one_line_without_traceback(tmp_path):
    env = {"PATH": str(tmp_path), "LENET5_DATA": str(tmp_path / "cache")}  # no npm on PATH
    code = (
        "import lenet5.data.sources as s; s.MIRRORS = ('http://127.0.0.1:9/',); "
        "from lenet5.cli import main; raise SystemExit(main(['data']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not get MNIST")
    assert "Traceback" not in result.stderr


def test_idx_dataset_checks_format_not_checksums(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in ((FILES[0], 50), (FILES[2], 20)):
        write_idx(tmp_path / f"{name}.gz", rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / FILES[1], rng.integers(0, 10, size=50, dtype=np.uint8))
    write_idx(tmp_path / FILES[3], rng.integers(0, 10, size=20, dtype=np.uint8))
    data = load_mnist(tmp_path, dataset="idx")
    assert data.train_images.shape == (50, 28, 28) and data.test_labels.shape == (20,)
    write_idx(tmp_path / FILES[3], rng.integers(0, 10, size=19, dtype=np.uint8))
    with pytest.raises(DataError, match="20 images but"):
        find_idx_dataset(tmp_path)
    write_idx(tmp_path / FILES[3], np.full(20, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="labels 0..9"):
        find_idx_dataset(tmp_path)


@pytest.mark.slow
@pytest.mark.network
def test_fetches_real_mnist_through_the_real_sources(tmp_path):
    """Empty cache -> mirrors, then npm; then a truncated and a flipped file are re-fetched."""
    result = lenet5("data", "--json", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"] == {
        "train_images": 60000,
        "train_labels": 60000,
        "test_images": 10000,
        "test_labels": 10000,
    }
    assert {n: f["sha256"] for n, f in report["files"].items()} == MNIST_SHA256
    folder = tmp_path / "mnist"
    path = folder / FILES[0]
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    labels = folder / FILES[3]
    data = bytearray(labels.read_bytes())
    data[-1] ^= 1
    labels.write_bytes(bytes(data))
    result = lenet5("data", "--json", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert {n: f["sha256"] for n, f in json.loads(result.stdout)["files"].items()} == MNIST_SHA256
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted([*FILES, "sources.json"])
