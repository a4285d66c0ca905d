"""A run's life (training/run.py): folders claimed exclusively, resume that refuses what it would not honour and
checks the whole saved state first, and Ctrl-C that never saves half a step."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import LENET5, lenet5, write_mnist_subset
from lenet5.checkpoint import load_checkpoint, save_checkpoint
from lenet5.config import build_config
from lenet5.training.callbacks import BEST_FILE, LAST_FILE, Callback
from lenet5.training.trainer import Trainer, TrainingInterrupted


@pytest.fixture(scope="module")
def tiny(mnist, tmp_path_factory):
    """600 real training digits, 200 real test digits, as IDX files."""
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("tiny-mnist"), 600, 200)


def train_args(data, *extra, epochs: int = 1):
    return [
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        data,
        "--epochs",
        str(epochs),
        "--batch-size",
        "100",
        "--set",
        "data.val_size=100",
        "--threads",
        "1",
        *extra,
    ]


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tiny, tmp_path_factory):
    """A finished 2-epoch run folder (read only by the tests below: each copies what it changes)."""
    out = tmp_path_factory.mktemp("runs")
    lenet5(*train_args(tiny, "--out", out, "--name", "done", epochs=2), check=True)
    return out / "done"


@pytest.mark.slow
def test_runs_started_together_get_a_folder_each(tiny, tmp_path):
    procs = [
        subprocess.Popen(
            [*LENET5, *train_args(tiny, "--out", tmp_path, "--json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    folders = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        folders.append(json.loads(out)["run_dir"])
    assert len(set(folders)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({f.rsplit("/", 1)[1] for f in folders})
    for folder in folders:  # every run's files survived, each its own
        assert load_checkpoint(f"{folder}/{BEST_FILE}").meta["epoch"] == 1


def test_an_existing_run_folder_is_never_reused(tiny, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    line = one_error_line(lenet5(*train_args(tiny, "--out", tmp_path, "--name", "mine")))
    assert "already exists" in line and "--resume" in line
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_bad_setting_claims_no_folder(tiny, tmp_path):
    one_error_line(lenet5(*train_args(tiny, "--out", tmp_path, "--device", "cuda")))  # numpy engine: CPU only
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--lr", "0.5"], "optimizer.lr"),
        (["--batch-size", "32"], "train.batch_size"),
        (["--engine", "torch"], "train.engine"),
        (["--set", "schedule.name=cosine"], "--set"),
    ],
)
def test_resume_refuses_flags_it_would_not_honour(finished_run, flags, named):
    line = one_error_line(lenet5("train", "--resume", finished_run, *flags))
    assert named in line and "--epochs" in line


def test_resume_refuses_fewer_epochs_than_done(finished_run):
    before = finished_run.joinpath(LAST_FILE).read_bytes()
    line = one_error_line(lenet5("train", "--resume", finished_run, "--epochs", "1"))
    assert "already trained 2 epochs" in line and "--epochs must be at least" in line
    assert finished_run.joinpath(LAST_FILE).read_bytes() == before


@pytest.mark.parametrize("in_the_way", ["file", "symlink"])
def test_a_file_or_link_named_like_the_run_folder_is_never_taken(tiny, tmp_path, in_the_way):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runs = tmp_path / "runs"
    runs.mkdir()
    if in_the_way == "file":
        (runs / "mine").write_text("a file")
    else:
        (runs / "mine").symlink_to(elsewhere)
    line = one_error_line(lenet5(*train_args(tiny, "--out", runs, "--name", "mine")))
    assert "already exists" in line
    assert not any(elsewhere.iterdir())


def test_an_out_folder_that_is_a_file_is_one_line(tiny, tmp_path):
    (tmp_path / "runs").write_text("a file")
    line = one_error_line(lenet5(*train_args(tiny, "--out", tmp_path / "runs")))
    assert "is not a folder" in line


def _damaged_copy(run, tmp_path, change) -> object:
    """A copy of the run folder whose last.safetensors has trainer_state changed by ``change``."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    last = load_checkpoint(copy / LAST_FILE)
    state = last.meta["trainer_state"]
    state = change(state)
    meta = last.meta
    save_checkpoint(
        copy / LAST_FILE,
        last.weights,
        engine=meta["engine"],
        model=meta["model"],
        config=meta["config"],
        epoch=meta["epoch"],
        metrics=meta["metrics"],
        optimizer=last.optimizer,
        trainer_state=state,
    )
    return copy


def _with(key, value):
    def change(state):
        state = dict(state)
        state[key] = value
        return state

    return change


def _without(key):
    def change(state):
        return {k: v for k, v in state.items() if k != key}

    return change


@pytest.mark.parametrize(
    "change",
    [
        _with("batch", 10**12),
        _with("epoch", -1),
        _with("epoch", "1"),
        _with("schedule", None),
        _with("history", []),
        _with("partial", [1, 2, 3]),
        _without("step"),
        lambda state: [state],
        _with("early_stopping", {"best": float("nan"), "best_epoch": 1, "bad_epochs": 0}),
    ],
    ids=[
        "huge-batch",
        "negative-epoch",
        "string-epoch",
        "null-schedule",
        "short-history",
        "list-partial",
        "missing-step",
        "not-a-mapping",
        "nan-best",
    ],
)
def test_resume_checks_the_whole_saved_state_before_training(finished_run, tmp_path, tiny, change):
    copy = _damaged_copy(finished_run, tmp_path, change)
    before = (copy / LAST_FILE).read_bytes()
    line = one_error_line(lenet5("train", "--resume", copy, "--epochs", "3"))
    assert "cannot be resumed" in line or "cannot resume" in line, line
    assert (copy / LAST_FILE).read_bytes() == before  # nothing was trained or written


def test_resume_refuses_a_foreign_model_in_the_run_folder(finished_run, tmp_path):
    import shutil

    from lenet5.models import initial_weights

    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    save_checkpoint(copy / BEST_FILE, initial_weights("classic", "lecun_uniform", 0), engine="numpy", model="classic")
    line = one_error_line(lenet5("train", "--resume", copy, "--epochs", "3"))
    assert "classic" in line and "modern" in line


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_interrupt(self, trainer):
        self.events.append(("interrupt", trainer.step))


def _trainer(mnist, recorder):
    cfg = build_config(sets=["train.epochs=1", "train.batch_size=50", "data.val_size=100", "train.threads=1"])
    small = type(mnist)(
        mnist.train_images[:600],
        mnist.train_labels[:600],
        mnist.test_images[:100],
        mnist.test_labels[:100],
        mnist.files,
    )
    return Trainer(cfg, small, callbacks=[recorder], log=lambda msg: None)


def test_ctrl_c_between_steps_saves_the_step_reached(mnist):
    recorder = Recorder()
    trainer = _trainer(mnist, recorder)
    real_step = trainer.engine.train_step

    def step_then_ask_to_stop(x, y, lr):
        out = real_step(x, y, lr)
        if trainer.step == 2:  # the first Ctrl-C arrives during the third step
            trainer.stop_requested = True
        return out

    trainer.engine.train_step = step_then_ask_to_stop
    with pytest.raises(TrainingInterrupted) as stop:
        trainer.fit()
    assert stop.value.saved and recorder.events == [("interrupt", 3)]


def test_a_second_ctrl_c_inside_a_step_saves_nothing(mnist):
    recorder = Recorder()
    trainer = _trainer(mnist, recorder)
    weights = trainer.engine.state_dict()

    def interrupted_step(x, y, lr):
        raise KeyboardInterrupt  # as the signal handler raises it on the second Ctrl-C, mid-update

    trainer.engine.train_step = interrupted_step
    with pytest.raises(TrainingInterrupted) as stop:
        trainer.fit()
    assert not stop.value.saved and recorder.events == []
    for key, value in trainer.engine.state_dict().items():
        np.testing.assert_array_equal(value, weights[key])


@pytest.mark.slow
def test_resume_removes_what_a_killed_run_left_beside_its_files(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    stale = [".last.safetensors.1a2b3c4d.tmp", ".history.csv.0f0f0f0f.tmp", ".config.yaml.4242.deadbeef.tmp"]
    for name in stale:
        (copy / name).write_bytes(b"half a file")
    (copy / ".my-notes.tmp").write_text("not ours")
    lenet5("train", "--resume", copy, "--epochs", "3", check=True)
    assert not any((copy / name).exists() for name in stale)
    assert (copy / ".my-notes.tmp").read_text() == "not ours"


def _run_config(data, out, *sets):
    return build_config(
        sets=[
            "data.dataset=idx",
            f"data.data_dir={data}",
            f"train.out={out}",
            "train.name=run",
            "train.epochs=1",
            "train.batch_size=100",
            "data.val_size=100",
            "train.threads=1",
            *sets,
        ]
    )


@pytest.mark.parametrize(
    "setting, message",
    [("train.device=cuda", "the numpy engine runs on the CPU"), ("data.val_size=600", "validation size 600")],
)
def test_a_setting_refused_as_the_run_starts_leaves_no_run_folder(tiny, tmp_path, setting, message):
    """The folder is claimed before the trainer is built with the callbacks that write it; a setting the trainer
    refuses gives the folder back, and the same name can be used at once."""
    from lenet5.errors import Lenet5Error
    from lenet5.training.run import claim_run_dir, train_run

    with pytest.raises(Lenet5Error, match=message):
        train_run(_run_config(tiny, tmp_path / "runs", setting), log=lambda msg: None)
    assert list((tmp_path / "runs").iterdir()) == []
    run_dir, lock = claim_run_dir(_run_config(tiny, tmp_path / "runs"))
    assert run_dir == tmp_path / "runs" / "run"
    lock.release()


def test_ctrl_c_names_the_run_folder_to_resume(tiny, tmp_path, monkeypatch):
    from lenet5.training.run import RunInterrupted, train_run

    def interrupted(trainer):
        assert [type(c).__name__ for c in trainer.callbacks] == ["RunFolder", "CheckpointWriter"]
        raise TrainingInterrupted(1, 2, True)

    monkeypatch.setattr(Trainer, "fit", interrupted)
    with pytest.raises(RunInterrupted) as stop:
        train_run(_run_config(tiny, tmp_path / "runs"), log=lambda msg: None)
    assert (stop.value.epoch, stop.value.batch, stop.value.saved) == (1, 2, True)
    assert stop.value.run_dir == tmp_path / "runs" / "run"
