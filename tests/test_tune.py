"""`lenet5 tune`: a tiny study end to end, validation-only scoring, parallel workers, a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import LENET5, lenet5, write_mnist_subset

optuna = pytest.importorskip("optuna")

from lenet5.config import Config, build_config  # noqa: E402
from lenet5.tune import SEARCH_SPACE, TuneSettings, run_study, suggest  # noqa: E402

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture(scope="module")
def small_mnist(mnist, tmp_path_factory) -> Path:
    """3,000 real training digits and 500 real test digits as IDX files (--dataset idx)."""
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("tune-mnist"), 3000, 500)


def tune_args(data_dir, storage, *extra) -> list[str]:
    return [
        "tune",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--epochs",
        "1",
        "--train-size",
        "1500",
        "--storage",
        storage,
        "--set",
        "train.threads=1",
        *extra,
    ]


def load(storage: str, name: str = "lenet5"):
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_a_tiny_study_writes_a_loadable_best_config(small_mnist, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = lenet5(*tune_args(small_mnist, storage, "--trials", "3", "--json"), cwd=tmp_path, check=True)
    summary = json.loads(result.stdout)
    assert sum(summary["trials"].get(s, 0) for s in ("complete", "pruned")) == 3
    values = [t.value for t in load(storage).trials if t.value is not None]
    assert summary["best"]["val_accuracy"] == max(values) and 0 < max(values) <= 1
    cfg = build_config([tmp_path / summary["config"]])  # a valid config for lenet5 train --config
    assert cfg.optimizer.name == summary["best"]["params"]["optimizer"]
    assert cfg.train.batch_size == summary["best"]["params"]["batch_size"]
    assert cfg.data.val_size == Config().data.val_size  # the full-data settings, not the quick study's subset
    assert (tmp_path / "runs" / "tune" / "lenet5" / "trials.csv").read_text().count("\n") == 4
    # Run again: the study already holds 3 finished trials, so nothing more runs, and the answer stays.
    again = json.loads(
        lenet5(*tune_args(small_mnist, storage, "--trials", "3", "--json"), cwd=tmp_path, check=True).stdout
    )
    assert again["trials"] == summary["trials"] and again["best"] == summary["best"]


def test_trials_are_scored_on_validation_and_never_see_the_test_split(mnist, tmp_path, monkeypatch):
    import lenet5.training.trainer as trainer_module

    seen = []
    real = trainer_module.evaluate_engine
    monkeypatch.setattr(
        trainer_module, "evaluate_engine", lambda e, x, y, b=1000: seen.append(len(x)) or real(e, x, y, b)
    )
    data = type(mnist)(mnist.train_images[:1200], mnist.train_labels[:1200], mnist.test_images, mnist.test_labels)
    settings = TuneSettings(
        storage=f"sqlite:///{tmp_path / 's.db'}",
        trials=2,
        epochs=2,
        train_size=1200,
        out=str(tmp_path / "out"),
        sampler_seed=0,
    )
    summary = run_study(Config(), data, settings, log=lambda msg: None)
    assert seen and set(seen) == {200}  # validation = min(5000, 1200 // 6); never the 10,000 test images
    study = load(settings.storage)
    for t in study.trials:
        assert t.value == max(t.intermediate_values.values())  # best validation accuracy over the epochs
    assert summary["best"]["val_accuracy"] == study.best_value


def test_search_space_covers_the_declared_choices():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, set] = {"optimizer": set(), "batch_size": set(), "schedule": set(), "augment": set()}
    base = Config()
    for _ in range(60):
        trial = study.ask()
        o = suggest(trial, base)
        seen["optimizer"].add(o["optimizer"]["name"])
        seen["batch_size"].add(o["train"]["batch_size"])
        seen["schedule"].add(o["schedule"]["name"])
        seen["augment"].add(o["augment"]["enabled"])
        lo, hi = SEARCH_SPACE["lr"][o["optimizer"]["name"]]
        assert lo <= o["optimizer"]["lr"] <= hi
        if o["optimizer"]["name"] == "adamw":
            assert o["optimizer"]["l2"] == 0.0
        else:
            assert o["optimizer"]["weight_decay"] == 0.0
        build_config(overrides=o)  # every point is a valid config
        study.tell(trial, 0.5)
    assert seen == {
        "optimizer": {"sgd", "adam", "adamw"},
        "batch_size": {32, 64, 128},
        "schedule": {"onecycle", "cosine"},
        "augment": {True, False},
    }


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(small_mnist, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [*LENET5, *tune_args(small_mnist, storage, "--trials", "6", "--json")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    workers = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    for w, (_out, err) in zip(workers, outputs):
        assert w.returncode == 0, err
    trials = load(storage).trials
    finished = [t for t in trials if t.state in FINISHED]
    assert 6 <= len(finished) <= 7  # a worker may start one trial while the other finishes the 6th
    assert len(finished) == len(trials)  # none failed, none left running
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    ran = [sum(line.startswith("trial ") for line in err.splitlines()) for _out, err in outputs]
    assert all(n > 0 for n in ran)  # both workers did some of the work


@pytest.mark.slow
def test_a_killed_worker_leaves_a_study_that_a_new_worker_completes(small_mnist, tmp_path):
    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    args = tune_args(small_mnist, storage, "--heartbeat", "1")
    args[args.index("--epochs") + 1] = "3"
    proc = subprocess.Popen(
        [*LENET5, *args, "--trials", "50"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    # kill it in the middle of its third trial or a later one (a diverging trial has no epochs)
    for line in proc.stderr:
        words = line.split()
        if words[:1] == ["trial"] and int(words[1]) >= 2 and words[2:4] == ["epoch", "1/3:"]:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = load(storage).trials
    assert [t.state.name for t in killed].count("RUNNING") == 1
    done = sum(t.state in FINISHED for t in killed)
    # the killed trial's heartbeat goes stale 3 x 1 s after its last beat; wait until the storage says so
    watcher = optuna.storages.RDBStorage(storage, heartbeat_interval=1, grace_period=3)
    study_id = watcher.get_study_id_from_name("lenet5")
    deadline = time.monotonic() + 60
    while not watcher._get_stale_trial_ids(study_id):
        assert time.monotonic() < deadline, "the killed trial never went stale"
        time.sleep(0.2)
    result = lenet5(*args, "--trials", str(done + 2), "--json", cwd=tmp_path, check=True)
    summary = json.loads(result.stdout)
    trials = load(storage).trials
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states  # the killed trial is marked failed
    assert sum(t.state in FINISHED for t in trials) == done + 2
    assert summary["trials"].get("fail") == 1
    build_config([tmp_path / summary["config"]])
    assert np.isfinite(summary["best"]["val_accuracy"])
