"""--model as the README documents it, in every command: `latest` (which run, under the configured train.out,
said on stderr), an exported .onnx (summary reads it; export names the format it cannot take); and what
training says after a resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from conftest import lenet5
from lenet5.checkpoint import BUNDLED


def make_run(runs, name: str, *, limit_batches: int = 0, finished: bool = True, age: float = 0.0):
    """A run folder as `lenet5 train` leaves it (the bundled model's weights; config.yaml; metrics.json once
    finished), its model written ``age`` seconds ago."""
    run = runs / name
    run.mkdir(parents=True)
    shutil.copy(BUNDLED, run / "model.safetensors")
    (run / "config.yaml").write_text(f"train:\n  limit_batches: {limit_batches}\n")
    if finished:
        (run / "metrics.json").write_text("{}\n")
    stamp = time.time() - age
    os.utime(run / "model.safetensors", (stamp, stamp))
    return run


def latest(cwd) -> tuple[str, str]:
    """(the file `summary --model latest` read, the line it said on stderr)."""
    result = lenet5("summary", "--model", "latest", "--json", cwd=cwd, check=True)
    lines = [line for line in result.stderr.splitlines() if line.startswith("--model latest: ")]
    assert len(lines) == 1, result.stderr
    return json.loads(result.stdout)["file"], lines[0]


def test_latest_prefers_a_finished_full_run_to_a_newer_smoke_run_and_says_which(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "full", age=600)
    make_run(runs, "smoke", limit_batches=5)  # newer, but a --limit-batches check
    chosen, said = latest(tmp_path)
    assert chosen == "runs/full/model.safetensors"
    assert said == "--model latest: runs/full/model.safetensors (a full run, finished)"

    make_run(runs, "training", finished=False)  # a full run still going: the finished one is still preferred
    assert latest(tmp_path)[0] == "runs/full/model.safetensors"
    make_run(runs, "newer", age=1)
    assert latest(tmp_path)[0] == "runs/newer/model.safetensors"


def test_latest_takes_a_smoke_or_unfinished_run_when_there_is_nothing_better_and_says_so(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "smoke", limit_batches=5)
    chosen, said = latest(tmp_path)
    assert chosen == "runs/smoke/model.safetensors"
    assert said.endswith("(a smoke run: --limit-batches 5, finished; no full run under runs/)")
    make_run(runs, "stopped", finished=False, age=100)
    chosen, said = latest(tmp_path)
    assert chosen == "runs/stopped/model.safetensors" and "not finished" in said and "no finished run" in said


def test_latest_looks_under_the_configured_train_out(tmp_path):
    make_run(tmp_path / "runs", "here")
    make_run(tmp_path / "elsewhere", "there", age=600)
    (tmp_path / "config.yaml").write_text("train:\n  out: elsewhere\n")
    assert latest(tmp_path)[0] == "elsewhere/there/model.safetensors"
    (tmp_path / "config.yaml").write_text("train:\n  out: nowhere\n")
    result = lenet5("summary", "--model", "latest", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --model latest: no run under nowhere/ (train.out)")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    lenet5("export", "--output", out, check=True)
    return out


def test_summary_reads_an_onnx_model(onnx_model):
    facts = json.loads(lenet5("summary", "--model", onnx_model, "--json", check=True).stdout)
    assert facts["model"] == "modern" and facts["format"] == "onnx" and facts["parameters"] == 61706
    from lenet5.checkpoint import BUNDLED, load_checkpoint

    temperature = load_checkpoint(BUNDLED).meta["calibration"]["temperature"]
    assert facts["temperature"] == pytest.approx(temperature) and facts["file"] == str(onnx_model)
    text = lenet5("summary", "--model", onnx_model, check=True).stdout
    assert "conv1 conv 5x5 pad 2" in text and "an ONNX export, run by onnxruntime" in text
    assert "not a safetensors checkpoint" not in text


def test_export_of_an_onnx_model_names_the_format(onnx_model, tmp_path):
    result = lenet5("export", "--model", onnx_model, "--output", tmp_path / "again.onnx")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {onnx_model} is already an ONNX model; export reads a checkpoint")
    assert not (tmp_path / "again.onnx").exists()


def test_predict_takes_an_onnx_model(onnx_model, tmp_path, mnist):
    from PIL import Image

    digit = Image.fromarray(255 - mnist.test_images[0]).resize((112, 112))
    digit.save(tmp_path / "digit.png")
    result = lenet5("predict", "--model", onnx_model, tmp_path / "digit.png", "--json", check=True)
    assert json.loads(result.stdout)[0]["digit"] == int(mnist.test_labels[0])


@pytest.mark.slow
def test_after_a_resume_training_time_is_told_in_all_and_for_this_command(small_mnist, tmp_path):
    common = ("--dataset", "idx", "--data-dir", small_mnist, "--threads", "1", "--limit-batches", "3")
    first = lenet5("train", *common, "--epochs", "1", "--name", "r", cwd=tmp_path, check=True)
    match = re.search(r"trained in ([\d.]+)s \(this command took ([\d.]+)s\)", first.stdout)
    assert match and float(match[1]) <= float(match[2]), first.stdout
    again = lenet5(
        "train",
        "--resume",
        "runs/r",
        "--epochs",
        "2",
        "--dataset",
        "idx",
        "--data-dir",
        small_mnist,
        cwd=tmp_path,
        check=True,
    )
    match = re.search(
        r"trained in ([\d.]+)s in all: ([\d.]+)s before this resume and ([\d.]+)s now "
        r"\(this command took ([\d.]+)s\)",
        again.stdout,
    )
    assert match, again.stdout
    in_all, before, now, command = map(float, match.groups())
    assert abs(in_all - before - now) < 0.15 and now <= command
