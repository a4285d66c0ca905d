"""The epoch loop: batches -> engine.train_step -> history -> checkpoints, early stopping, reports.

Randomness is derived, never carried: epoch e shuffles with ``default_rng([seed, e])``, so a run resumed
from any step (epoch, batch) sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import csv
import io
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lenet5.atomic import atomic_write_text
from lenet5.config import Config, dump_yaml
from lenet5.data.datasets import MNIST, iterate_batches, normalize, num_batches, split_train_val
from lenet5.engines import create_engine
from lenet5.jsonout import dumps
from lenet5.metrics import Evaluation, evaluate_logits, softmax
from lenet5.data.augment import make_augmenter
from lenet5.training.callbacks import CheckpointWriter, EarlyStopping, check_finite
from lenet5.training.progress import EpochProgress
from lenet5.training.schedules import Schedule

HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class TrainingInterrupted(Exception):
    """Ctrl-C during training; last.safetensors was saved at the step reached."""

    def __init__(self, run_dir: Path, epoch: int, batch: int):
        super().__init__(f"interrupted at epoch {epoch}, batch {batch}")
        self.run_dir, self.epoch, self.batch = run_dir, epoch, batch


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    test: Evaluation
    best_epoch: int
    epochs_run: int
    train_seconds: float
    stopped_early: bool
    metrics: dict = field(default_factory=dict)


def evaluate_engine(engine, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> Evaluation:
    """Logits of uint8 images (N,28,28) in batches, then loss/accuracy."""
    return evaluate_logits(engine_logits(engine, images, batch_size), labels)


def engine_logits(engine, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """(N, 10) logits of uint8 images (N, 28, 28), in batches."""
    dtype = np.float64 if getattr(engine, "dtype", np.float32) == np.float64 else np.float32
    chunks = [engine.logits(normalize(images[i : i + batch_size], dtype)) for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 10), np.float32)


class Trainer:
    def __init__(self, cfg: Config, data: MNIST, run_dir: Path, *, log=None, is_writer: bool = True):
        self.cfg, self.data, self.run_dir = cfg, data, run_dir
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.is_writer = is_writer
        t = cfg.train
        self.engine = create_engine(
            t.engine, cfg.model, cfg.optimizer, seed=t.seed, dtype=t.dtype, label_smoothing=t.label_smoothing,
            threads=t.threads, device=t.device,
        )
        self.train_x, self.train_y, self.val_x, self.val_y = split_train_val(
            data.train_images, data.train_labels, cfg.data.val_size, seed=t.seed
        )
        self.steps_per_epoch = num_batches(len(self.train_x), t.batch_size)
        self.schedule = Schedule(cfg.schedule, cfg.optimizer.lr, self.steps_per_epoch, self.steps_per_epoch * t.epochs)
        self.stopper = EarlyStopping(cfg.early_stopping)
        self.augment = make_augmenter(cfg.augment)  # None when augmentation is off
        self.writer = CheckpointWriter(run_dir, self.engine, cfg.to_dict(), enabled=is_writer)
        self.history: list[dict] = []
        self.best_weights = self.engine.state_dict()
        self.epoch, self.batch, self.step = 0, 0, 0  # completed epochs, batches done in the current one, updates
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        self.seconds = 0.0
        self.stop_requested = False  # set by the first Ctrl-C; the loop stops between two steps

    # ------------------------------------------------------------------------------------ resume state
    def trainer_state(self) -> dict:
        return {
            "epoch": self.epoch, "batch": self.batch, "step": self.step, "partial": dict(self.partial),
            "seconds": self.seconds, "history": self.history, "schedule": self.schedule.state(),
            "early_stopping": self.stopper.state(),
        }

    def restore(self, last, best_weights: dict | None) -> None:
        """Continue from a last.safetensors checkpoint (and the run's best weights)."""
        state = last.meta["trainer_state"]
        self.engine.load_state_dict(last.weights)
        self.engine.load_optimizer_state(last.optimizer)
        self.epoch, self.batch, self.step = int(state["epoch"]), int(state["batch"]), int(state["step"])
        self.partial, self.seconds, self.history = dict(state["partial"]), float(state["seconds"]), list(state["history"])
        self.schedule.load_state(state["schedule"])
        self.stopper.load_state(state["early_stopping"])
        self.best_weights = best_weights if best_weights is not None else self.engine.state_dict()

    # ------------------------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        if self.is_writer:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", dump_yaml(self.cfg))
        with stop_on_sigint(self):
            for _ in self.epochs():
                pass
        return self._finish(self.stopper.should_stop)

    def epochs(self) -> Iterator[dict]:
        """Train the remaining epochs one by one, yielding each epoch's history row once early stopping,
        the schedule, checkpoints and the history file have seen it; ends at train.epochs or when early
        stopping says so. fit() = this + the final test."""
        epochs = self.cfg.train.epochs
        while self.epoch < epochs and not self.stopper.should_stop:
            row = self._run_epoch(self.epoch + 1)
            self.history.append(row)
            self.epoch, self.batch = self.epoch + 1, 0
            self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
            improved = self.stopper.update(self.epoch, row)
            self.schedule.end_epoch(row["val_loss"])
            if improved:
                self.best_weights = self.engine.state_dict()
                self.writer.save_best(self.best_weights, self.epoch, row)
            self.writer.save_last(self.epoch, row, self.trainer_state())
            self._write_history()
            self.log(self._epoch_line(row, epochs, improved))
            if self.stopper.should_stop:
                self.log(f"early stopping: {self.cfg.early_stopping.monitor} has not improved for "
                         f"{self.stopper.bad_epochs} epochs (best at epoch {self.stopper.best_epoch})")
            yield row

    def _run_epoch(self, epoch: int) -> dict:
        t = self.cfg.train
        rng = np.random.default_rng([t.seed, epoch])
        start = time.perf_counter()
        progress = EpochProgress(epoch, t.epochs, self.steps_per_epoch, initial=self.batch, log=self.log)
        batches = iterate_batches(self.train_x, self.train_y, t.batch_size, rng, start_batch=self.batch,
                                  dtype=np.float64 if t.dtype == "float64" else np.float32,
                                  transform=self.augment)
        try:
            for x, y in batches:
                if self.stop_requested:
                    raise KeyboardInterrupt
                lr = self.schedule.lr(self.step)
                loss, correct = self.engine.train_step(x, y, lr)
                check_finite(loss, epoch, self.step, self.run_dir if self.is_writer else None)
                self.partial["loss_sum"] += loss * len(y)
                self.partial["correct"] += int(correct)
                self.partial["seen"] += len(y)
                self.batch += 1
                self.step += 1
                progress.update(self.partial, lr)
        except KeyboardInterrupt:
            progress.close()
            self.seconds += time.perf_counter() - start
            self.writer.save_last(self.epoch, {}, self.trainer_state())
            raise TrainingInterrupted(self.run_dir, epoch, self.batch) from None
        progress.close()
        seen = max(1, self.partial["seen"])
        val = evaluate_engine(self.engine, self.val_x, self.val_y, t.eval_batch_size) if len(self.val_x) else None
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        return {
            "epoch": epoch,
            "train_loss": self.partial["loss_sum"] / seen,
            "train_accuracy": self.partial["correct"] / seen,
            "val_loss": val.loss if val else None,
            "val_accuracy": val.accuracy if val else None,
            "lr": self.schedule.lr(max(0, self.step - 1)),
            "seconds": elapsed,
        }

    def _epoch_line(self, row: dict, epochs: int, improved: bool) -> str:
        val = (f"val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"
               if row["val_loss"] is not None else "no validation split")
        mark = "  *best" if improved and row["val_loss"] is not None else ""
        return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%"
                f"  {val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s{mark}")

    def _write_history(self) -> None:
        if not self.is_writer:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        w.writeheader()
        for row in self.history:
            w.writerow({k: ("" if row[k] is None else row[k]) for k in HISTORY_FIELDS})
        atomic_write_text(self.run_dir / "history.csv", buf.getvalue())

    def _finish(self, stopped: bool) -> TrainResult:
        if self.cfg.early_stopping.restore_best or not stopped:
            self.engine.load_state_dict(self.best_weights)  # the test set sees the best model on validation
        test = evaluate_engine(self.engine, self.data.test_images, self.data.test_labels, self.cfg.train.eval_batch_size)
        best_epoch = self.stopper.best_epoch
        best_row = self.history[best_epoch - 1] if 0 < best_epoch <= len(self.history) else {}
        calibration = self._calibrate(test)
        if calibration is not None and (self.cfg.early_stopping.restore_best or not stopped):  # T fits these weights
            self.writer.save_best(self.best_weights, best_epoch, best_row, calibration=calibration)
        metrics = {
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "epochs": len(self.history),
            "best_epoch": best_epoch,
            "val_accuracy": best_row.get("val_accuracy"),
            "val_loss": best_row.get("val_loss"),
            "train_seconds": round(self.seconds, 3),
            "stopped_early": stopped,
            "engine": self.engine.name,
            "model": self.engine.model_name,
            "seed": self.cfg.train.seed,
            "run_dir": str(self.run_dir),
            "calibration": calibration,
            **{k: v for k, v in test.summary().items() if k in ("per_class", "confusion_matrix")},
        }
        if self.is_writer:
            atomic_write_text(self.run_dir / "metrics.json", dumps(metrics) + "\n")
            from lenet5.reports import write_reports

            write_reports(self.run_dir, self.history, self.data.test_images, test.labels, test.probabilities, test.confusion)
        return TrainResult(self.run_dir, self.history, test, best_epoch, len(self.history), self.seconds, stopped, metrics)

    def _calibrate(self, test: Evaluation) -> dict | None:
        """Fit the temperature on the validation split (never the test set); ECE before/after on both."""
        if not len(self.val_x):
            return None
        from lenet5.calibration import calibrate, expected_calibration_error

        val_logits = engine_logits(self.engine, self.val_x, self.cfg.train.eval_batch_size)
        calibration = calibrate(val_logits, self.val_y)
        t = calibration["temperature"]
        calibration["test_ece_before"] = round(expected_calibration_error(test.probabilities, test.labels), 6)
        calibrated = softmax(np.asarray(test.logits, np.float64) / t)
        calibration["test_ece_after"] = round(expected_calibration_error(calibrated, test.labels), 6)
        self.log(f"calibration: temperature {t:.3f} (fitted on validation); expected calibration error on the test "
                 f"set {100 * calibration['test_ece_before']:.2f}% -> {100 * calibration['test_ece_after']:.2f}%")
        return calibration


@contextlib.contextmanager
def stop_on_sigint(trainer: Trainer):
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def new_run_dir(cfg: Config) -> Path:
    """runs/<name>, or runs/<engine>-<model>-<date>-<time>[-N] when no name is given."""
    parent = Path(cfg.train.out)
    if cfg.train.name:
        return parent / cfg.train.name
    base = f"{cfg.train.engine}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = parent / base, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{base}-{n}"
    return candidate
