"""What happens around the trainer's epochs: early stopping, the NaN guard, and the callbacks that write a run
folder (config.yaml, history.csv, metrics.json, report pictures, model.safetensors, last.safetensors)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from lenet5.atomic import atomic_write_text
from lenet5.checkpoint import BEST_FILE, HISTORY_FIELDS, save_checkpoint
from lenet5.config import EarlyStoppingConfig, dump_yaml
from lenet5.errors import TrainingError
from lenet5.jsonout import dumps

LAST_FILE = "last.safetensors"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"


@dataclass
class EarlyStopping:
    """Tracks the monitored validation metric; ``improved`` also decides which weights are 'best'."""

    cfg: EarlyStoppingConfig
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

    @property
    def maximize(self) -> bool:
        return self.cfg.monitor == "val_accuracy"

    def update(self, epoch: int, metrics: dict) -> bool:
        """Record an epoch's metrics; return True when the monitored value improved by more than min_delta."""
        value = metrics.get(self.cfg.monitor)
        if value is None or math.isnan(value):
            improved = True  # no validation split: the latest weights are the best we know
        elif self.best is None:
            improved = True
        else:
            gain = value - self.best if self.maximize else self.best - value
            improved = gain > self.cfg.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.cfg.enabled and self.bad_epochs >= self.cfg.patience

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], int(state["best_epoch"]), int(state["bad_epochs"])


def check_finite(loss: float, epoch: int, step: int) -> None:
    """Stop the run with a clear message when the loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingError(
            f"the training loss became {loss} at epoch {epoch}, step {step}. "
            "Lower the learning rate (--lr), or set optimizer.grad_clip"
        )


class Callback:
    """What a trainer tells the outside world; every method does nothing unless overridden."""

    def on_start(self, trainer) -> None:
        """Before the first epoch (also when resuming)."""

    def on_step(self, trainer, loss: float, correct: int, batch_size: int, lr: float) -> None:
        """After each training step (trainer.step counts it): its batch's mean loss and correct predictions, and
        the learning rate it used. Called in the hot loop, and only on callbacks that override it: keep it cheap."""

    def on_epoch_end(self, trainer, row: dict, improved: bool) -> None:
        """After each epoch; ``row`` is its history row, ``improved`` whether it is the best on validation."""

    def on_interrupt(self, trainer) -> None:
        """Ctrl-C stopped the run between two steps: trainer.trainer_state() resumes it exactly."""

    def on_end(self, trainer, result) -> None:
        """After the test set was scored; ``result`` is the TrainResult (its weights are the model's)."""


class CheckpointWriter(Callback):
    """model.safetensors (best on validation while training; at the end the weights that were tested, with
    their calibration) and last.safetensors (everything to resume), written atomically."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def _meta(self, trainer, epoch: int, metrics: dict) -> dict:
        return {
            "engine": trainer.engine.name,
            "model": trainer.engine.model_name,
            "config": trainer.cfg.to_dict(),
            "epoch": epoch,
            "metrics": metrics,
        }

    def on_epoch_end(self, trainer, row, improved):
        if improved:
            save_checkpoint(self.run_dir / BEST_FILE, trainer.best_weights, **self._meta(trainer, row["epoch"], row))
        self._save_last(trainer, row)

    def on_interrupt(self, trainer):
        self._save_last(trainer, {})

    def on_end(self, trainer, result):
        save_checkpoint(
            self.run_dir / BEST_FILE,
            result.weights,
            calibration=result.calibration,
            **self._meta(trainer, result.model_epoch, result.model_row),
        )

    def _save_last(self, trainer, metrics: dict) -> None:
        save_checkpoint(
            self.run_dir / LAST_FILE,
            trainer.engine.state_dict(),
            optimizer=trainer.engine.optimizer_state(),
            trainer_state=trainer.trainer_state(),
            **self._meta(trainer, trainer.epoch, metrics),
        )


class RunFolder(Callback):
    """config.yaml at the start, history.csv after every epoch, metrics.json and the report pictures at the end."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_start(self, trainer):
        atomic_write_text(self.run_dir / CONFIG_FILE, dump_yaml(trainer.cfg))

    def on_epoch_end(self, trainer, row, improved):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in trainer.history:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in HISTORY_FIELDS})
        atomic_write_text(self.run_dir / HISTORY_FILE, buf.getvalue())

    def on_end(self, trainer, result):
        from lenet5.reports import write_reports

        atomic_write_text(self.run_dir / METRICS_FILE, dumps(result.metrics) + "\n")
        test = result.test
        write_reports(
            self.run_dir, trainer.history, trainer.data.test_images, test.labels, test.probabilities, test.confusion
        )


def run_folder_callbacks(run_dir: Path) -> list[Callback]:
    """What writes a run folder: its files (config, history, metrics, reports) and its checkpoints."""
    return [RunFolder(run_dir), CheckpointWriter(run_dir)]
