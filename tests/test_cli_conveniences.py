"""What people type: --model as a file, a run folder or 'latest'; a quick smoke run; help that says the
defaults; a mistyped command that suggests the right one."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from conftest import lenet5
from lenet5.checkpoint import BUNDLED, resolve_model
from lenet5.errors import CheckpointError


def test_model_resolution_takes_files_run_folders_latest_and_nothing(tmp_path):
    runs = tmp_path / "runs"
    for name, age in (("old", 100), ("new", 0)):
        (runs / name).mkdir(parents=True)
        shutil.copy(BUNDLED, runs / name / "model.safetensors")
        stamp = time.time() - age
        os.utime(runs / name / "model.safetensors", (stamp, stamp))
    (runs / "unfinished").mkdir()
    assert resolve_model(None) == BUNDLED
    assert resolve_model(runs / "old") == runs / "old" / "model.safetensors"
    assert resolve_model("latest", runs) == runs / "new" / "model.safetensors"
    assert resolve_model(str(runs / "old" / "model.safetensors")) == runs / "old" / "model.safetensors"
    with pytest.raises(CheckpointError, match="without model.safetensors"):
        resolve_model(runs / "unfinished")
    with pytest.raises(CheckpointError, match="no run under"):
        resolve_model("latest", tmp_path / "nowhere")


@pytest.mark.slow
def test_latest_and_run_folders_work_through_the_cli(small_mnist, tmp_path):
    lenet5(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        small_mnist,
        "--epochs",
        "1",
        "--limit-batches",
        "5",
        "--threads",
        "1",
        "--name",
        "smoke",
        cwd=tmp_path,
        check=True,
    )
    by_folder = json.loads(lenet5("summary", "--model", "runs/smoke", "--json", cwd=tmp_path, check=True).stdout)
    by_latest = json.loads(lenet5("summary", "--model", "latest", "--json", cwd=tmp_path, check=True).stdout)
    assert by_folder == by_latest and by_folder["file"] == "runs/smoke/model.safetensors"
    result = lenet5(
        "evaluate",
        "--model",
        "latest",
        "--dataset",
        "idx",
        "--data-dir",
        small_mnist,
        "--json",
        cwd=tmp_path,
        check=True,
    )
    assert json.loads(result.stdout)["n"] == 1000


@pytest.mark.slow
def test_limit_batches_makes_a_smoke_run_and_training_starts_with_a_summary(small_mnist, tmp_path):
    result = lenet5(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        small_mnist,
        "--epochs",
        "2",
        "--limit-batches",
        "3",
        "--threads",
        "1",
        "--name",
        "smoke",
        "--json",
        cwd=tmp_path,
        check=True,
    )
    assert "conv1 conv 5x5 pad 2" in result.stderr and "61706" in result.stderr  # the model summary
    history = (tmp_path / "runs" / "smoke" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs
    assert "next: lenet5 evaluate" not in result.stdout  # --json prints only the JSON document
    json.loads(result.stdout)


@pytest.mark.slow
def test_a_batch_larger_than_the_split_is_warned_about(small_mnist, tmp_path):
    result = lenet5(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        small_mnist,
        "--epochs",
        "1",
        "--batch-size",
        "9000",
        "--threads",
        "1",
        "--name",
        "big",
        cwd=tmp_path,
        check=True,
    )
    assert "warning: batch_size 9000 is larger than the training split (1000 images)" in result.stderr


@pytest.mark.slow
def test_training_prints_the_next_commands_with_the_run_folder(small_mnist, tmp_path):
    result = lenet5(
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        small_mnist,
        "--epochs",
        "1",
        "--limit-batches",
        "2",
        "--threads",
        "1",
        "--name",
        "first",
        cwd=tmp_path,
        check=True,
    )
    assert "lenet5 predict --model runs/first" in result.stdout and "lenet5 serve --model runs/first" in result.stdout


@pytest.mark.parametrize("typed, meant", [("trian", "train"), ("predcit", "predict"), ("evalute", "evaluate")])
def test_a_mistyped_command_suggests_the_closest(typed, meant):
    result = lenet5(typed, "x.png")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: unknown command '{typed}'; did you mean '{meant}'?"


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "serve", "export", "tune", "summary", "data"])
def test_every_flag_has_help(command):
    """Every option of every command explains itself (argparse shows no help text as a bare flag line)."""
    import argparse

    from lenet5.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        assert action.help, f"lenet5 {command} {action.option_strings or action.dest} has no help"
