"""Early stopping (config section `early_stopping`): what counts as an improvement, when patience runs out,
that a resumed run carries its count on, and what a real training run that stops early writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import opt
from lenet5.config import EarlyStoppingConfig
from lenet5.training.callbacks import EarlyStopping


def stopper(**settings) -> EarlyStopping:
    """An EarlyStopping with every setting a test relies on stated (the project's defaults may change)."""
    plain = dict(enabled=True, monitor="val_accuracy", patience=2, min_delta=0.0, restore_best=True)
    return EarlyStopping(EarlyStoppingConfig(**{**plain, **settings}))


def feed(es: EarlyStopping, values: list[float], monitor: str = "val_accuracy") -> list[bool]:
    """Epochs 1, 2, ... with these monitored values; what update() said for each."""
    return [es.update(epoch, {monitor: value}) for epoch, value in enumerate(values, start=1)]


def test_val_accuracy_improves_when_it_rises():
    es = stopper(monitor="val_accuracy", patience=10)
    assert feed(es, [0.50, 0.60, 0.55, 0.60, 0.70]) == [True, True, False, False, True]
    assert (es.best, es.best_epoch, es.bad_epochs) == (0.70, 5, 0)


def test_val_loss_improves_when_it_falls():
    es = stopper(monitor="val_loss", patience=10)
    assert feed(es, [0.9, 0.5, 0.7, 0.5, 0.3], "val_loss") == [True, True, False, False, True]
    assert (es.best, es.best_epoch, es.bad_epochs) == (0.3, 5, 0)


def test_the_other_metric_moving_does_not_count():
    """Only the monitored key decides: val_loss falling is no improvement when val_accuracy is monitored."""
    es = stopper(monitor="val_accuracy", patience=10)
    es.update(1, {"val_accuracy": 0.9, "val_loss": 1.0})
    assert es.update(2, {"val_accuracy": 0.9, "val_loss": 0.1}) is False
    es = stopper(monitor="val_loss", patience=10)
    es.update(1, {"val_accuracy": 0.5, "val_loss": 0.4})
    assert es.update(2, {"val_accuracy": 0.99, "val_loss": 0.4}) is False


@pytest.mark.parametrize(
    "monitor, values", [("val_accuracy", [0.5, 0.75, 0.625, 0.875]), ("val_loss", [1.0, 0.75, 0.875, 0.625])]
)
def test_an_improvement_must_beat_the_best_by_more_than_min_delta(monitor, values):
    """min_delta 0.25: a gain of exactly 0.25 is no improvement; the reference stays the best value, so the
    fourth epoch counts (0.375 better than the best) though it is only 0.125 better than the second."""
    es = stopper(monitor=monitor, min_delta=0.25, patience=10)
    assert feed(es, values, monitor) == [True, False, False, True]
    assert (es.best, es.best_epoch, es.bad_epochs) == (values[3], 4, 0)


@pytest.mark.parametrize("monitor, sign", [("val_accuracy", 1), ("val_loss", -1)])
def test_stops_after_patience_epochs_without_improvement(monitor, sign):
    es = stopper(monitor=monitor, patience=3)
    stops = []
    for epoch, value in enumerate([0.5, 0.6, 0.6, 0.55, 0.7, 0.6, 0.6, 0.6, 0.6], start=1):
        es.update(epoch, {monitor: sign * value})
        stops.append(es.should_stop)
    # improvements at epochs 1, 2 and 5; two bad epochs (3, 4) are under the patience and the count restarts
    assert stops == [False] * 7 + [True, True]
    assert (es.best_epoch, es.bad_epochs) == (5, 4)


def test_disabled_never_stops_but_still_tracks_the_best_epoch():
    """enabled: false keeps training to train.epochs; the best weights are still the best on validation."""
    es = stopper(enabled=False, patience=1)
    feed(es, [0.9, 0.8, 0.7, 0.6])
    assert not es.should_stop and es.bad_epochs == 3 and es.best_epoch == 1


def test_without_a_validation_split_every_epoch_is_the_best():
    """data.val_size=0: no monitored value (None or NaN), so the latest weights are kept and it never stops."""
    es = stopper(patience=1)
    assert [es.update(e, {"val_accuracy": v}) for e, v in enumerate([None, float("nan"), None], 1)] == [True] * 3
    assert es.best_epoch == 3 and not es.should_stop


@pytest.mark.parametrize("monitor", ["val_accuracy", "val_loss"])
def test_state_round_trip_continues_exactly(monitor):
    """state() -> JSON (how last.safetensors stores it) -> load_state(): the resumed stopper decides as the
    original would have, epoch for epoch."""
    values = [0.5, 0.7, 0.65, 0.71, 0.6, 0.6, 0.8, 0.7, 0.7]
    if monitor == "val_loss":
        values = [1 - v for v in values]
    original = stopper(monitor=monitor, patience=2, min_delta=0.02)
    feed(original, values[:4], monitor)
    resumed = stopper(monitor=monitor, patience=2, min_delta=0.02)
    resumed.load_state(json.loads(json.dumps(original.state())))
    assert resumed.state() == original.state() and resumed.bad_epochs == 2 and resumed.should_stop
    fresh = stopper(monitor=monitor, patience=2, min_delta=0.02)
    assert fresh.state() != original.state()  # the comparison above can fail
    for epoch, value in enumerate(values[4:], start=5):
        assert resumed.update(epoch, {monitor: value}) == original.update(epoch, {monitor: value})
        assert resumed.state() == original.state() and resumed.should_stop == original.should_stop
    assert original.best_epoch == 7


# ------------------------------------------------------------------------------ a real training run
EPOCHS = 30
PATIENCE = 2


@pytest.fixture(scope="module")
def tiny(mnist):
    """1,500 real training digits (500 of them held out for validation) and 500 real test digits."""
    from lenet5.data.datasets import MNIST

    return MNIST(mnist.train_images[:1500], mnist.train_labels[:1500], mnist.test_images[:500], mnist.test_labels[:500])


def run_until_stopped(tiny, tmp_path_factory, restore_best: bool):
    """Train with val_loss monitored on 1,000 digits: it overfits within a few epochs and stops long before
    EPOCHS. Returns the result and the run folder."""
    from lenet5.config import build_config
    from lenet5.training.callbacks import run_folder_callbacks
    from lenet5.training.trainer import Trainer

    cfg = build_config(
        sets=[
            f"train.epochs={EPOCHS}",
            "train.batch_size=32",
            "train.seed=2",
            "train.threads=1",
            "data.val_size=500",
            "optimizer.name=adam",
            "optimizer.lr=0.003",
            "schedule.name=constant",
            "augment.enabled=false",
            "early_stopping.enabled=true",
            "early_stopping.monitor=val_loss",
            f"early_stopping.patience={PATIENCE}",
            "early_stopping.min_delta=0.001",
            f"early_stopping.restore_best={str(restore_best).lower()}",
        ]
    )
    run_dir = tmp_path_factory.mktemp(f"early-stop-{restore_best}")
    return Trainer(cfg, tiny, callbacks=run_folder_callbacks(run_dir), log=lambda msg: None).fit(), run_dir


@pytest.fixture(scope="module")
def stopped_runs(tiny, tmp_path_factory):
    """The same seeded run twice, with restore_best true and false."""
    return {flag: run_until_stopped(tiny, tmp_path_factory, flag) for flag in (True, False)}


@pytest.mark.slow
def test_training_stops_after_patience_epochs_without_a_better_val_loss(stopped_runs):
    """val_loss monitored, patience 2: the run ends two epochs after its best one, well before train.epochs,
    and says so in metrics.json and in the state --resume would read."""
    result, run_dir = stopped_runs[True]
    history = result.history
    losses = [row["val_loss"] for row in history]
    assert result.stopped_early and len(history) < EPOCHS
    assert result.epochs_run == len(history) == result.best_epoch + PATIENCE  # stopped as soon as patience ran out
    best = losses[result.best_epoch - 1]
    assert result.best_epoch > 1  # the loss fell before it stopped falling
    assert all(loss > best for loss in losses[: result.best_epoch - 1])  # the best beat every epoch before it
    assert all(loss > best - 0.001 for loss in losses[result.best_epoch :])  # no later epoch beat it by min_delta
    assert [int(line.split(",")[0]) for line in (run_dir / "history.csv").read_text().splitlines()[1:]] == list(
        range(1, len(history) + 1)
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_early"] is True and metrics["epochs"] == len(history)
    assert metrics["best_epoch"] == result.best_epoch
    # last.safetensors keeps the stopper's state, so --resume would not train past the stop
    from lenet5.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "last.safetensors").meta["trainer_state"]["early_stopping"]
    assert state == {"best": best, "best_epoch": result.best_epoch, "bad_epochs": PATIENCE}


def evaluate_file(path, tiny):
    """Test loss/accuracy of a checkpoint's weights, computed afresh."""
    from lenet5.checkpoint import load_checkpoint
    from lenet5.config import ModelConfig
    from lenet5.engines import create_engine
    from lenet5.training.trainer import evaluate_engine

    engine = create_engine("numpy", ModelConfig(), opt(), seed=0)
    engine.load_state_dict(load_checkpoint(path).weights)
    return evaluate_engine(engine, tiny.test_images, tiny.test_labels)


@pytest.mark.slow  # trains two runs first
def test_restore_best_tests_the_best_weights_and_reports_that_epoch(stopped_runs, tiny):
    """restore_best: true: the test set sees the best epoch's weights (model.safetensors), and metrics.json's
    validation numbers are that epoch's."""
    result, run_dir = stopped_runs[True]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best_row = result.history[result.best_epoch - 1]
    test = evaluate_file(run_dir / "model.safetensors", tiny)
    assert metrics["test_loss"] == pytest.approx(test.loss, rel=1e-6) and metrics["test_accuracy"] == test.accuracy
    assert metrics["val_loss"] == best_row["val_loss"] and metrics["val_accuracy"] == best_row["val_accuracy"]


@pytest.mark.slow  # trains two runs first
def test_without_restore_best_the_test_set_sees_the_last_weights(stopped_runs, tiny):
    """restore_best: false: the run ends with (and is tested on) the last epoch's weights, not the best ones;
    model.safetensors holds those tested weights."""
    result, run_dir = stopped_runs[False]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("last.safetensors", "model.safetensors"):
        test = evaluate_file(run_dir / name, tiny)
        assert metrics["test_loss"] == pytest.approx(test.loss, rel=1e-6), name
        assert metrics["test_accuracy"] == test.accuracy, name
    restored, _ = stopped_runs[True]
    assert [r["val_loss"] for r in result.history] == [r["val_loss"] for r in restored.history]  # same training
    assert metrics["test_loss"] != pytest.approx(restored.test.loss, rel=1e-6)  # yet other weights were tested


@pytest.mark.slow  # trains two runs first
def test_without_restore_best_metrics_json_describes_the_tested_weights(stopped_runs):
    """metrics.json's validation numbers belong to the same weights as its test numbers: the last epoch's."""
    result, run_dir = stopped_runs[False]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = result.history[-1]
    assert result.best_epoch < len(result.history)  # the best and the last epoch differ, or this proves nothing
    assert metrics["val_loss"] == last["val_loss"] and metrics["val_accuracy"] == last["val_accuracy"]


@pytest.mark.slow  # trains two runs first
def test_stopped_run_weights_differ_between_best_and_last(stopped_runs):
    """model.safetensors holds the best epoch, last.safetensors the epoch it stopped at."""
    from lenet5.checkpoint import load_checkpoint

    result, run_dir = stopped_runs[True]
    best, last = load_checkpoint(run_dir / "model.safetensors"), load_checkpoint(run_dir / "last.safetensors")
    assert best.meta["epoch"] == result.best_epoch and last.meta["epoch"] == len(result.history)
    assert any(not np.array_equal(best.weights[k], last.weights[k]) for k in best.weights)
