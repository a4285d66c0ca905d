"""`lenet5 train` / `evaluate` end to end on real digits through the CLI: run folder, resume, errors."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import LENET5, lenet5
from lenet5.checkpoint import load_checkpoint

RUN_FILES = {
    "config.yaml",
    "history.csv",
    "metrics.json",
    "model.safetensors",
    "last.safetensors",
    "training_history.png",
    "confusion_matrix.png",
    "predictions.png",
    "misclassified.png",
}


def train_args(data_dir, *extra):
    return [
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--batch-size",
        "32",
        "--set",
        "data.val_size=1000",
        "--seed",
        "3",
        *extra,
    ]


@pytest.mark.slow
def test_train_writes_a_consistent_run_folder(small_mnist, tmp_path):
    result = lenet5(*train_args(small_mnist, "--epochs", "3", "--name", "run", "--json"), cwd=tmp_path, check=True)
    metrics = json.loads(result.stdout)
    run = tmp_path / "runs" / "run"
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    for png in run.glob("*.png"):
        with Image.open(png) as im:
            assert im.size[0] > 200 and im.size[1] > 200
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[2]["train_loss"]) < float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert metrics["test_accuracy"] > 0.93  # ~470 steps on 5,000 real digits; chance is 0.10
    assert {"test_accuracy", "test_loss", "epochs", "train_seconds", "run_dir"} <= set(metrics)
    assert tmp_path / metrics["run_dir"] == run  # as train.out names it: relative to the current folder
    written = json.loads((run / "metrics.json").read_text())
    assert written["test_accuracy"] == metrics["test_accuracy"]
    assert "run_dir" not in written  # the folder is where the metrics are, not one of them
    evaluated = json.loads(
        lenet5(
            "evaluate",
            "--model",
            str(run / "model.safetensors"),
            "--dataset",
            "idx",
            "--data-dir",
            str(small_mnist),
            "--json",
            cwd=tmp_path,
            check=True,
        ).stdout
    )
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-12)
    assert evaluated["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert sum(map(sum, evaluated["confusion_matrix"])) == 1000
    meta = load_checkpoint(run / "last.safetensors").meta
    assert meta["engine"] == "numpy" and meta["model"] == "modern" and meta["epoch"] == 3
    assert meta["config"]["train"]["batch_size"] == 32 and meta["normalization"]["mean"] == 0.1307
    calibration = metrics["calibration"]  # fitted on the validation split at the end, stored with the best weights
    assert 0.3 < calibration["temperature"] < 5 and calibration["fitted_on"] == "validation split (1000 images)"
    # NLL is fitted, not ECE: equal within noise
    assert calibration["val_ece_after"] <= calibration["val_ece_before"] + 0.005
    assert {"test_ece_before", "test_ece_after", "energy_floor"} <= set(calibration)
    assert load_checkpoint(run / "model.safetensors").meta["calibration"] == calibration


@pytest.fixture(scope="module")
def tiny_mnist(mnist, tmp_path_factory):
    """2,000 real training digits (500 of them for validation) and 500 real test digits as IDX files."""
    from conftest import write_mnist_subset

    return write_mnist_subset(mnist, tmp_path_factory.mktemp("tiny-mnist"), 2000, 500)


def resume_args(data_dir, engine, name):
    return [
        "train",
        "--engine",
        engine,
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--batch-size",
        "32",
        "--set",
        "data.val_size=500",
        "--seed",
        "3",
        "--epochs",
        "3",
        "--threads",
        "1",
        "--name",
        name,
        *(["--device", "cpu"] if engine == "torch" else []),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine",
    [
        "numpy",
        pytest.param(
            "torch",
            marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the torch engine needs torch"),
        ),
    ],
)
def test_ctrl_c_then_resume_gives_the_same_weights_bit_for_bit(tiny_mnist, tmp_path, engine):
    """Ctrl-C in the middle of epoch 2, then `lenet5 train --resume RUN`: the same weights, optimizer state,
    history and test metrics as a run that was never interrupted."""
    lenet5(*resume_args(tiny_mnist, engine, "straight"), cwd=tmp_path, check=True)
    proc = subprocess.Popen(
        [*LENET5, *resume_args(tiny_mnist, engine, "cut")],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    for line in proc.stderr:  # interrupt in the middle of epoch 2
        lines.append(line)
        if line.strip().startswith("epoch 2/3") and "%" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(lines) + rest
    assert "Resume with: lenet5 train --resume" in rest and "Traceback" not in rest
    cut = tmp_path / "runs" / "cut"
    state = load_checkpoint(cut / "last.safetensors").meta["trainer_state"]
    assert state["epoch"] == 1 and state["batch"] > 0
    assert not (cut / "metrics.json").exists()  # it really stopped before the end
    resumed = lenet5("train", "--resume", cut, "--dataset", "idx", "--data-dir", tiny_mnist, cwd=tmp_path, check=True)
    assert f"resuming {cut} at epoch 2, batch {state['batch']}" in resumed.stderr
    a = load_checkpoint(tmp_path / "runs" / "straight" / "last.safetensors")
    b = load_checkpoint(cut / "last.safetensors")
    assert a.meta["engine"] == b.meta["engine"] == engine
    assert a.weights.keys() == b.weights.keys() and a.optimizer.keys() == b.optimizer.keys()
    for name in a.weights:
        np.testing.assert_array_equal(a.weights[name], b.weights[name], err_msg=name)
    for name in a.optimizer:
        np.testing.assert_array_equal(a.optimizer[name], b.optimizer[name], err_msg=name)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.meta["trainer_state"]["history"]) == strip(b.meta["trainer_state"]["history"])
    ma = json.loads((tmp_path / "runs" / "straight" / "metrics.json").read_text())
    mb = json.loads((cut / "metrics.json").read_text())
    assert (ma["test_accuracy"], ma["test_loss"], ma["best_epoch"]) == (
        mb["test_accuracy"],
        mb["test_loss"],
        mb["best_epoch"],
    )


@pytest.mark.slow
def test_same_seed_same_history(small_mnist, tmp_path):
    for name in ("a", "b"):
        lenet5(
            *train_args(small_mnist, "--epochs", "1", "--name", name, "--set", "schedule.name=cosine"),
            cwd=tmp_path,
            check=True,
        )

    def read(name):
        rows = csv.DictReader((tmp_path / "runs" / name / "history.csv").open())
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert read("a") == read("b")


def test_nan_loss_stops_with_a_clear_message(small_mnist, tmp_path):
    result = lenet5(
        *train_args(
            small_mnist,
            "--epochs",
            "1",
            "--optimizer",
            "sgd",
            "--lr",
            "1e6",
            "--set",
            "schedule.name=constant",
            "--name",
            "nan",
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the training loss became") and "--lr" in last
    assert "Traceback" not in result.stderr


def test_resume_refuses_a_run_that_is_not_there(tmp_path):
    result = lenet5("train", "--resume", str(tmp_path / "nothing"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["missing", "truncated", "not_a_checkpoint", "foreign", "empty"])
def test_evaluate_rejects_bad_checkpoints_in_one_line(untrained_checkpoint, tmp_path, kind):
    path = tmp_path / "model.safetensors"
    if kind == "truncated":
        path.write_bytes(untrained_checkpoint.read_bytes()[:5000])
    elif kind == "not_a_checkpoint":
        path.write_bytes(b"hello, this is a text file\n" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        from safetensors.numpy import save_file

        save_file({"encoder.weight": np.zeros((3, 3), np.float32)}, str(path))
    result = lenet5("evaluate", "--model", str(path), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], result.stderr
