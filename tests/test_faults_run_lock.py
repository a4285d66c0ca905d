"""Two processes on one run folder: a run holds an exclusive flock on its folder's .lock file for its whole life,
so a second run or `--resume` of a folder in use is refused in one line instead of overwriting the first one's
files; the kernel drops the lock when the holder dies, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LENET5, lenet5, write_mnist_subset
from lenet5.errors import ConfigError
from lenet5.training.run import RUN_LOCK, _claim, lock_run_dir, resume_from


@pytest.fixture(scope="module")
def tiny(mnist, tmp_path_factory) -> Path:
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("tiny-mnist"), 600, 200)


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_locked_folder_cannot_be_locked_again_until_released(tmp_path):
    first = lock_run_dir(tmp_path)
    assert first is not None
    assert lock_run_dir(tmp_path) is None  # another open file description: flock says no, without waiting
    first.release()
    again = lock_run_dir(tmp_path)
    assert again is not None
    again.release()


def test_resume_of_a_held_folder_is_refused_naming_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {epochs: 1}\n")
    holder = lock_run_dir(run)
    try:
        with pytest.raises(ConfigError, match=f"run folder {run} is in use"):
            resume_from(run, {})
    finally:
        holder.release()


def test_a_folder_being_claimed_is_not_claimed_twice(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = lock_run_dir(run)  # another process between its lock and its config.yaml
    assert _claim(run, b"x: 1\n") is None
    holder.release()
    lock = _claim(run, b"x: 1\n")  # a killed claim's .lock alone does not make the folder somebody's
    assert lock is not None and (run / "config.yaml").read_bytes() == b"x: 1\n"
    lock.release()


def test_a_planted_lock_that_is_not_a_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / RUN_LOCK)
    with pytest.raises(ConfigError, match="not a regular file"):
        lock_run_dir(tmp_path)


@pytest.mark.slow
def test_a_second_resume_or_run_of_a_folder_in_use_gets_one_line(tiny, tmp_path):
    args = [
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(tiny),
        "--epochs",
        "500",
        "--batch-size",
        "100",
        "--set",
        "data.val_size=100",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
        "--name",
        "x",
    ]
    run = tmp_path / "x"
    log = open(tmp_path / "first.log", "wb")
    first = subprocess.Popen(
        [*LENET5, *args], stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    log.close()
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.safetensors").exists():  # running, with a state a resume would read
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.2)
        line = one_error_line(lenet5("train", "--resume", run, "--dataset", "idx", "--data-dir", tiny, timeout=120))
        assert f"run folder {run} is in use" in line
        line = one_error_line(lenet5(*args, timeout=120))  # the same --name: a new run is refused too
        assert str(run) in line
        assert first.poll() is None  # the first run went on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    lock = lock_run_dir(run)  # the kernel dropped the dead run's lock
    assert lock is not None
    lock.release()
