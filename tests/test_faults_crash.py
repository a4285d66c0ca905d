"""SIGKILL a real `lenet5 train` at seeded random moments (some of them inside a checkpoint write) and prove
that every kill leaves only whole files under final names, and that `--resume` ends bit for bit where an
uninterrupted run ends.

The moments are points in the run's own progress (start-up, a progress line of some epoch, the final test),
not seconds on the clock, so the same seed kills at the same places however busy the machine is.

SIGKILL gives the process no chance to clean up: whatever is on disk at that instant is what a power cut
or the OOM killer would leave. Files are written to ``.<name>.<random>.tmp`` and renamed (lenet5.atomic),
so a kill may leave a stray ``.tmp`` file, never a half ``last.safetensors``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import LENET5, write_mnist_subset
from lenet5.checkpoint import load_checkpoint

SEED = 8  # the kill schedule; change it to explore other moments
KILLS_AT_RANDOM_TIMES = 4
KILLS_DURING_A_CHECKPOINT_WRITE = 4
EPOCHS = 6


@pytest.fixture(scope="module")
def tiny_idx(mnist, tmp_path_factory) -> Path:
    """3,000 real training digits and 300 test digits as IDX files."""
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("tiny-mnist"), 3000, 300)


def train_cmd(data_dir: Path, name: str, resume: Path | None = None) -> list[str]:
    if resume is not None:
        return [*LENET5, "train", "--resume", str(resume), "--dataset", "idx", "--data-dir", str(data_dir)]
    return [
        *LENET5,
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--engine",
        "numpy",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "32",
        "--seed",
        "5",
        "--name",
        name,
        "--set",
        "data.val_size=500",
        "--set",
        "train.threads=1",
    ]


def cut_cmd(data_dir: Path, run: Path) -> list[str]:
    """What a user runs next: --resume once the run has claimed its folder (its config.yaml exists; a run killed
    before its first checkpoint then starts again from step 0), the same command while the folder is absent or
    holds only a killed claim's leftover (such a folder is claimed anew)."""
    if (run / "config.yaml").exists():
        return train_cmd(data_dir, run.name, resume=run)
    return train_cmd(data_dir, run.name)


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    log = open(cwd / "stderr.log", "wb")  # a file, not a pipe: nobody reads while we wait to kill
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    log.close()
    return proc


def finish(proc: subprocess.Popen, cwd: Path) -> None:
    proc.wait(timeout=300)
    assert proc.returncode == 0, (cwd / "stderr.log").read_text()


PROGRESS = re.compile(r"epoch (\d+)/\d+ +(\d+)%")


def moments(last_epoch: int, final: bool) -> list[tuple]:
    """Where a run resumed after ``last_epoch`` complete epochs can be killed: during start-up, at any of the
    four progress lines of an epoch still ahead (one every 20% of an epoch), or (``final``) once the final
    test has been computed."""
    ahead = [("progress", epoch, k) for epoch in range(last_epoch + 1, EPOCHS + 1) for k in (1, 2, 3, 4)]
    return [("startup",), *ahead, *([("final",)] if final else [])]


def kill_at(proc: subprocess.Popen, log: Path, moment: tuple, rng: random.Random) -> bool:
    """SIGKILL at ``moment`` (see moments()): a short random delay into start-up (far less than the run needs),
    or as soon as the process's log shows the k-th progress line of the epoch / the calibration line written
    after the final test. True when it was killed, False when the process ended first."""
    if moment[0] == "startup":
        try:
            proc.wait(timeout=rng.uniform(0.05, 0.4))
            return False
        except subprocess.TimeoutExpired:
            pass
    else:
        deadline = time.monotonic() + 300
        while proc.poll() is None:
            text = log.read_text(errors="replace")
            if moment[0] == "final" and "calibration: " in text:
                break
            if moment[0] == "progress" and [int(e) for e, _ in PROGRESS.findall(text)].count(moment[1]) >= moment[2]:
                break
            assert time.monotonic() < deadline, f"{moment} never came:\n{text}"
            time.sleep(0.002)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def kill_when_a_checkpoint_write_starts(proc: subprocess.Popen, run: Path, skip: int) -> bool:
    """Poll the run folder; SIGKILL as soon as the (skip+1)-th ``.last.safetensors.*.tmp`` is seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            names = os.listdir(run)
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith(".last.safetensors.") and name.endswith(".tmp") and name not in seen:
                seen.add(name)
                if len(seen) > skip:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return True
    proc.wait()
    return False


def assert_only_whole_files(run: Path) -> int:
    """Every file under a final name is complete; returns the epoch of last.safetensors (0 if none yet)."""
    if not run.exists():
        return 0
    for path in run.glob("*.safetensors"):
        load_checkpoint(path)  # raises CheckpointError on a half file
    if (run / "history.csv").exists():
        rows = list(csv.DictReader((run / "history.csv").open()))
        assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    if (run / "metrics.json").exists():
        json.loads((run / "metrics.json").read_text())
    if (run / "config.yaml").exists():
        assert "train:" in (run / "config.yaml").read_text()
    last = run / "last.safetensors"
    return load_checkpoint(last).meta["epoch"] if last.exists() else 0


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_at_random_moments_then_resume_is_bit_exact(tiny_idx, tmp_path):
    finish(start(train_cmd(tiny_idx, "straight"), tmp_path), tmp_path)

    rng = random.Random(SEED)
    plan = ["time"] * KILLS_AT_RANDOM_TIMES + ["write"] * KILLS_DURING_A_CHECKPOINT_WRITE
    rng.shuffle(plan)
    run = tmp_path / "runs" / "cut"
    kills, hits, epochs_at_kill, last_epoch, finished = 0, 0, [], 0, False
    for i, how in enumerate(plan):
        if how == "write" and last_epoch == EPOCHS:
            continue  # every epoch's checkpoint is written: no write is ahead to be killed in
        proc = start(cut_cmd(tiny_idx, run), tmp_path)
        if how == "time":  # the final test only when no write kill is left to do: it ends all the writes
            moment = rng.choice(moments(last_epoch, final="write" not in plan[i + 1 :]))
            killed = kill_at(proc, tmp_path / "stderr.log", moment, rng)
        else:
            skip = rng.randrange(2) if last_epoch < EPOCHS - 2 else 0
            killed = kill_when_a_checkpoint_write_starts(proc, run, skip=skip)
        if not killed:
            finish(proc, tmp_path)
            finished = True
            break
        kills += 1
        stray = [p for p in run.glob(".*.tmp")] if run.exists() else []
        hits += any(p.name.startswith(".last.safetensors.") for p in stray)
        epoch = assert_only_whole_files(run)
        assert epoch >= last_epoch, "a kill must never take a run back to an older checkpoint"
        last_epoch = epoch
        epochs_at_kill.append(epoch)
        for p in stray:  # what a user may delete; resume does not need them
            p.unlink()
    if not finished:  # the last resume, left to end
        finish(start(cut_cmd(tiny_idx, run), tmp_path), tmp_path)

    print(
        f"\n{kills} SIGKILLs ({hits} inside a last.safetensors write), last.safetensors epoch at each kill: "
        f"{epochs_at_kill}"
    )
    assert kills >= KILLS_AT_RANDOM_TIMES and hits >= 1  # the schedule really interrupted the run, mid-write too
    assert not list(run.glob(".*.tmp"))
    a = load_checkpoint(tmp_path / "runs" / "straight" / "last.safetensors")
    b = load_checkpoint(run / "last.safetensors")
    assert a.weights.keys() == b.weights.keys() and a.optimizer.keys() == b.optimizer.keys()
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name], err_msg=name)
    for name in a.optimizer:
        np.testing.assert_array_equal(a.optimizer[name], b.optimizer[name], err_msg=name)
    sa, sb = a.meta["trainer_state"], b.meta["trainer_state"]
    assert (sa["epoch"], sa["batch"], sa["step"]) == (sb["epoch"], sb["batch"], sb["step"]) == (EPOCHS, 0, sa["step"])
    assert without_seconds(sa["history"]) == without_seconds(sb["history"])
    best_a = load_checkpoint(tmp_path / "runs" / "straight" / "model.safetensors")
    best_b = load_checkpoint(run / "model.safetensors")
    for name in best_a.weights:
        np.testing.assert_array_equal(best_a.weights[name], best_b.weights[name], err_msg=name)
    ma = json.loads((tmp_path / "runs" / "straight" / "metrics.json").read_text())
    mb = json.loads((run / "metrics.json").read_text())
    assert ma["test_accuracy"] == mb["test_accuracy"] and ma["test_loss"] == mb["test_loss"]
