"""The epoch loop: batches -> engine.train_step -> history, early stopping, schedule -> callbacks.

Randomness is derived, never carried: epoch e shuffles with ``default_rng([seed, e])``, so a run resumed
from any step (epoch, batch) sees exactly the batches an uninterrupted run would have seen.

With augmentation on and a core the engine leaves idle, the distorted batches are made ahead in a second
process (data/prefetch.py) while the engine trains: the same batches, bit for bit, as distorting them here.
Where the engine keeps every core busy (the NumPy engine's default 2 workers on 2 cores), a second process
would only take turns with the engine's workers, which wait for each other every step: there the batches are
distorted in this thread between steps (benchmarks/augment_speed.py measures both).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from lenet5.checkpoint import check_trainer_state
from lenet5.config import Config
from lenet5.data.augment import make_augmenter
from lenet5.data.datasets import MNIST, epoch_rng, iterate_batches, normalize, num_batches, split_train_val
from lenet5.data.prefetch import PrefetchedDistortions
from lenet5.engines import create_engine
from lenet5.errors import CheckpointError
from lenet5.free_cores import available_cores
from lenet5.metrics import Evaluation, evaluate_logits, softmax
from lenet5.training.callbacks import Callback, EarlyStopping, check_finite
from lenet5.training.progress import EpochProgress
from lenet5.training.schedules import Schedule


class TrainingInterrupted(Exception):
    """Ctrl-C during training. ``saved``: the callbacks saved the step reached (a second Ctrl-C in the middle of
    a step saves nothing: half an update cannot be resumed exactly, so the last checkpoint stays)."""

    def __init__(self, epoch: int, batch: int, saved: bool):
        super().__init__(f"interrupted at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.saved = epoch, batch, saved


@dataclass
class TrainResult:
    history: list[dict]
    test: Evaluation
    best_epoch: int  # the best epoch on validation
    model_epoch: int  # the epoch whose weights were tested (best_epoch unless early_stopping.restore_best is false)
    model_row: dict  # its history row
    weights: dict[str, np.ndarray]  # the weights that were tested: the run's model
    calibration: dict | None
    epochs_run: int
    train_seconds: float
    stopped_early: bool
    metrics: dict = field(default_factory=dict)


def engine_cores(engine, threads: int) -> int:
    """The cores an engine keeps busy while it trains: the NumPy engine's workers, PyTorch's threads on the CPU
    (with threads 0 as many as the cores), one core feeding a GPU."""
    device = getattr(engine, "device", None)
    if getattr(device, "type", "cpu") != "cpu":
        return 1
    return getattr(engine, "threads", 0) or threads or available_cores()


def evaluate_engine(engine, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> Evaluation:
    """Logits of uint8 images (N,28,28) in batches, then loss/accuracy."""
    return evaluate_logits(engine_logits(engine, images, batch_size), labels)


def engine_logits(engine, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """(N, 10) logits of uint8 images (N, 28, 28), in batches."""
    chunks = [
        engine.logits(normalize(images[i : i + batch_size], engine.input_dtype))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, 10), np.float32)


class Trainer:
    """Trains the configured engine epoch by epoch and tells its callbacks (see callbacks.py) what happened.

    The trainer writes no file itself: ``run_folder_callbacks(run_dir)`` write a run folder; tune and tests
    pass none.
    """

    def __init__(
        self,
        cfg: Config,
        data: MNIST,
        *,
        callbacks: list[Callback] | tuple = (),
        log=None,
        prefetch: bool | None = None,
    ):
        """``prefetch``: make distorted batches in a second process (None: when the engine leaves a core idle)."""
        self.cfg, self.data, self.callbacks = cfg, data, list(callbacks)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        t = cfg.train
        self.engine = create_engine(
            t.engine,
            cfg.model,
            cfg.optimizer,
            seed=t.seed,
            dtype=t.dtype,
            label_smoothing=t.label_smoothing,
            threads=t.threads,
            device=t.device,
        )
        self.train_x, self.train_y, self.val_x, self.val_y = split_train_val(
            data.train_images, data.train_labels, cfg.data.val_size, seed=t.seed
        )
        self.steps_per_epoch = num_batches(len(self.train_x), t.batch_size)
        if t.limit_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, t.limit_batches)
        if t.batch_size > len(self.train_x):
            self.log(
                f"warning: batch_size {t.batch_size} is larger than the training split ({len(self.train_x)} "
                f"images): every epoch is one step of {len(self.train_x)} images"
            )
        self.schedule = Schedule(cfg.schedule, cfg.optimizer.lr, self.steps_per_epoch, self.steps_per_epoch * t.epochs)
        self.stopper = EarlyStopping(cfg.early_stopping)
        self.augment = make_augmenter(cfg.augment)  # None when augmentation is off
        if prefetch is None:
            prefetch = available_cores() > engine_cores(self.engine, t.threads)
        self.prefetch = prefetch and self.augment is not None
        self.distortions: PrefetchedDistortions | None = None  # the second process, while epochs() runs
        self.history: list[dict] = []
        self.best_weights = self.engine.state_dict()
        self.epoch, self.batch, self.step = 0, 0, 0  # completed epochs, batches done in the current one, updates
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        self.seconds = 0.0
        self.stop_requested = False  # set by the first Ctrl-C; the loop stops between two steps
        self.in_step = False  # True while the engine's weights are between two states

    def _tell(self, event: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    # ------------------------------------------------------------------------------------ resume state
    def trainer_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "partial": dict(self.partial),
            "seconds": self.seconds,
            "history": self.history,
            "schedule": self.schedule.state(),
            "early_stopping": self.stopper.state(),
        }

    def restore(self, last, best_weights: dict | None) -> None:
        """Continue from a last.safetensors checkpoint (and the run's best weights, already checked to fit the
        model). A damaged or foreign state is one CheckpointError line before training, never a late crash."""
        where = str(last.path or "last.safetensors")
        state = check_trainer_state(last.meta.get("trainer_state"), self.steps_per_epoch, self.cfg.train.epochs, where)
        try:
            self.engine.load_state_dict(last.weights)
            self.engine.load_optimizer_state(last.optimizer)
            self.schedule.load_state(state["schedule"])
            self.stopper.load_state(state["early_stopping"])
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{where}: cannot resume from it: {exc}") from None
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.partial, self.seconds, self.history = state["partial"], state["seconds"], state["history"]
        self.best_weights = best_weights if best_weights is not None else self.engine.state_dict()

    # ------------------------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        self._tell("on_start")
        with stop_on_sigint(self):
            for _ in self.epochs():
                pass
        result = self._finish(self.stopper.should_stop)
        self._tell("on_end", result)
        return result

    def epochs(self) -> Iterator[dict]:
        """Train the remaining epochs one by one, yielding each epoch's history row once early stopping,
        the schedule and the callbacks have seen it; ends at train.epochs or when early stopping says so.
        fit() = this + the final test."""
        epochs = self.cfg.train.epochs
        with self._distortions_ahead():
            yield from self._epochs(epochs)

    def _epochs(self, epochs: int) -> Iterator[dict]:
        while self.epoch < epochs and not self.stopper.should_stop:
            row = self._run_epoch(self.epoch + 1)
            self.history.append(row)
            self.epoch, self.batch = self.epoch + 1, 0
            self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
            improved = self.stopper.update(self.epoch, row)
            self.schedule.end_epoch(row["val_loss"])
            if improved:
                self.best_weights = self.engine.state_dict()
            self._tell("on_epoch_end", row, improved)
            self.log(self._epoch_line(row, epochs, improved))
            if self.stopper.should_stop:
                self.log(
                    f"early stopping: {self.cfg.early_stopping.monitor} has not improved for "
                    f"{self.stopper.bad_epochs} epochs (best at epoch {self.stopper.best_epoch})"
                )
            yield row

    @contextlib.contextmanager
    def _distortions_ahead(self):
        """The process making the distorted batches of the remaining epochs, for the time epochs() runs."""
        if not self.prefetch or self.epoch >= self.cfg.train.epochs:
            yield
            return
        t = self.cfg.train
        self.distortions = PrefetchedDistortions(
            self.train_x,
            self.train_y,
            t.batch_size,
            t.seed,
            self.cfg.augment,
            batches_per_epoch=self.steps_per_epoch,
            first_epoch=self.epoch + 1,
            first_batch=self.batch,
            last_epoch=t.epochs,
            log=self.log,
        )
        try:
            yield
        finally:
            self.distortions.close()
            self.distortions = None

    def _batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The epoch's (x normalized, y) batches from self.batch on: distorted in the second process when
        there is one, else here."""
        t, dtype = self.cfg.train, self.engine.input_dtype
        if self.distortions is not None:
            return ((normalize(x, dtype), y) for x, y in self.distortions.batches(epoch, self.batch))
        rng = epoch_rng(t.seed, epoch)
        return iterate_batches(
            self.train_x, self.train_y, t.batch_size, rng, start_batch=self.batch, dtype=dtype, transform=self.augment
        )

    def _run_epoch(self, epoch: int) -> dict:
        t = self.cfg.train
        start = time.perf_counter()
        progress = EpochProgress(epoch, t.epochs, self.steps_per_epoch, initial=self.batch, log=self.log)
        batches = self._batches(epoch)
        # the callbacks that want every step (the hot loop: none by default, and no call for the others)
        on_step = [cb.on_step for cb in self.callbacks if type(cb).on_step is not Callback.on_step]
        try:
            for x, y in batches:
                if self.batch >= self.steps_per_epoch:  # train.limit_batches
                    break
                if self.stop_requested:
                    raise KeyboardInterrupt
                lr = self.schedule.lr(self.step)
                self.in_step = True
                loss, correct = self.engine.train_step(x, y, lr)
                self.partial["loss_sum"] += loss * len(y)
                self.partial["correct"] += int(correct)
                self.partial["seen"] += len(y)
                self.batch += 1
                self.step += 1
                self.in_step = False
                check_finite(loss, epoch, self.step)
                for tell in on_step:
                    tell(self, loss, correct, len(y), lr)
                progress.update(self.partial, lr)
        except KeyboardInterrupt:
            progress.close()
            self.seconds += time.perf_counter() - start
            saved = not self.in_step
            if saved:
                self._tell("on_interrupt")
            raise TrainingInterrupted(epoch, self.batch, saved) from None
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
        val = (
            f"val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"
            if row["val_loss"] is not None
            else "no validation split"
        )
        mark = "  *best" if improved and row["val_loss"] is not None else ""
        return (
            f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc "
            f"{100 * row['train_accuracy']:.2f}%"
            f"  {val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s{mark}"
        )

    def _finish(self, stopped: bool) -> TrainResult:
        """Score the model on the test set: the best epoch's weights, or with early_stopping.restore_best false
        and an early stop, the last epoch's. Its validation numbers in the metrics are that same epoch's."""
        best_epoch = self.stopper.best_epoch
        if self.cfg.early_stopping.restore_best or not stopped:
            self.engine.load_state_dict(self.best_weights)
            model_epoch = best_epoch
        else:
            model_epoch = len(self.history)
        model_row = self.history[model_epoch - 1] if 0 < model_epoch <= len(self.history) else {}
        test = evaluate_engine(
            self.engine, self.data.test_images, self.data.test_labels, self.cfg.train.eval_batch_size
        )
        calibration = self._calibrate(test)
        metrics = {
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "epochs": len(self.history),
            "best_epoch": best_epoch,
            "model_epoch": model_epoch,
            "val_accuracy": model_row.get("val_accuracy"),
            "val_loss": model_row.get("val_loss"),
            "train_seconds": round(self.seconds, 3),
            "stopped_early": stopped,
            "engine": self.engine.name,
            "model": self.engine.model_name,
            "seed": self.cfg.train.seed,
            "calibration": calibration,
            **{k: v for k, v in test.summary().items() if k in ("per_class", "confusion_matrix")},
        }
        return TrainResult(
            self.history,
            test,
            best_epoch,
            model_epoch,
            model_row,
            self.engine.state_dict(),
            calibration,
            len(self.history),
            self.seconds,
            stopped,
            metrics,
        )

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
        self.log(
            f"calibration: temperature {t:.3f} (fitted on validation); expected calibration error on the test "
            f"set {100 * calibration['test_ece_before']:.2f}% -> {100 * calibration['test_ece_after']:.2f}%"
        )
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
        trainer.engine.hurry()  # the NumPy engine: stop waiting long for a silent worker process

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
