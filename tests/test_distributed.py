"""Data-parallel training under torchrun gives what one process gives with the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import lenet5, write_mnist_subset
from serving import free_port

pytest.importorskip("torch")

HELPER = Path(__file__).parent / "helpers" / "ddp_step.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def run(cmd: list[str]) -> None:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
def test_two_process_training_matches_one_process(mnist, tmp_path):
    """20 steps on the same global batches of real digits: two ranks end where one process ends, to float
    rounding, and the loss falls in both (diverging runs would only compare amplified float32 noise)."""
    single, multi = tmp_path / "single.npz", tmp_path / "ddp.npz"
    run([sys.executable, str(HELPER), str(single)])
    run(
        [
            str(TORCHRUN),
            "--nnodes=1",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            str(HELPER),
            str(multi),
        ]
    )
    ref, got = np.load(single), np.load(multi)
    assert int(ref["world_size"]) == 1 and int(got["world_size"]) == 2
    for tag in ("modern", "classic"):  # well-conditioned runs: the last steps' loss is far below the first steps'
        for losses in (ref[f"{tag}/loss"], got[f"{tag}/loss"]):
            assert losses[-5:].mean() < 0.6 * losses[:5].mean(), (tag, losses)
    for key in ref.files:
        if key == "world_size":
            continue
        if key.startswith("modern/"):
            # float32 sums in another order (two shards, then an all-reduce): ~100 float32 epsilons of the
            # array's own scale, after 20 steps (measured: under 10)
            tol = 1e-5 * float(np.abs(ref[key]).max())
            if key.endswith("/correct"):  # a digit right on a decision boundary may go either way
                assert np.abs(got[key] - ref[key]).max() <= 1, key
            else:
                np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=tol, err_msg=key)
        elif key.endswith("/correct"):
            np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
        else:  # float64: the same to 1e-10
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-10, err_msg=key)
    # both replicas hold the same weights, bit for bit
    r0, r1 = np.load(tmp_path / "ddp.rank0.npz"), np.load(tmp_path / "ddp.rank1.npz")
    for key in r0.files:
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
def test_torchrun_lenet5_train_matches_single_process(mnist, tmp_path):
    """`torchrun --nproc_per_node=2 -m lenet5 train --engine torch`: rank 0 alone writes, results match."""
    import csv

    from lenet5.checkpoint import load_checkpoint

    data = write_mnist_subset(mnist, tmp_path / "data", 2000, 500)
    common = [
        "train",
        "--engine",
        "torch",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--dataset",
        "idx",
        "--data-dir",
        str(data),
        "--set",
        "data.val_size=500",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    lenet5(*common, "--out", tmp_path / "single", "--name", "run", env={"OMP_NUM_THREADS": "1"}, check=True)
    run(
        [
            str(TORCHRUN),
            "--nnodes=1",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            "-m",
            "lenet5",
            *common,
            "--out",
            str(tmp_path / "ddp"),
            "--name",
            "run",
        ]
    )
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["run"]  # one run folder, written by rank 0
    rows = [list(csv.DictReader((tmp_path / d / "run" / "history.csv").open())) for d in ("single", "ddp")]
    for a, b in zip(*rows):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4), key
    one = load_checkpoint(tmp_path / "single" / "run" / "last.safetensors").weights
    two = load_checkpoint(tmp_path / "ddp" / "run" / "last.safetensors").weights
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-3, err_msg=key)
