"""What the trainer does around epochs: early stopping, best/last checkpoints, and the NaN guard."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet5.checkpoint import save_checkpoint
from lenet5.config import EarlyStoppingConfig
from lenet5.errors import TrainingError

BEST_FILE = "model.safetensors"
LAST_FILE = "last.safetensors"


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


def check_finite(loss: float, epoch: int, step: int, run_dir: Path | None) -> None:
    """Stop the run with a clear message when the loss is NaN or infinite (the last good checkpoint stays)."""
    if math.isfinite(loss):
        return
    kept = f"; the last good checkpoint is kept in {run_dir / LAST_FILE}" if run_dir and (run_dir / LAST_FILE).exists() else ""
    raise TrainingError(
        f"the training loss became {loss} at epoch {epoch}, step {step}{kept}. "
        "Lower the learning rate (--lr), or set optimizer.grad_clip"
    )


class CheckpointWriter:
    """Writes model.safetensors (best on validation) and last.safetensors (everything to resume), atomically."""

    def __init__(self, run_dir: Path, engine, config: dict, enabled: bool = True):
        self.run_dir, self.engine, self.config, self.enabled = run_dir, engine, config, enabled

    def _meta(self, epoch: int, metrics: dict) -> dict:
        return {"engine": self.engine.name, "model": self.engine.model_name, "config": self.config, "epoch": epoch,
                "metrics": metrics}

    def save_best(self, weights: dict[str, np.ndarray], epoch: int, metrics: dict, calibration: dict | None = None) -> None:
        if self.enabled:
            save_checkpoint(self.run_dir / BEST_FILE, weights, calibration=calibration, **self._meta(epoch, metrics))

    def save_last(self, epoch: int, metrics: dict, trainer_state: dict) -> None:
        if self.enabled:
            save_checkpoint(
                self.run_dir / LAST_FILE, self.engine.state_dict(), optimizer=self.engine.optimizer_state(),
                trainer_state=trainer_state, **self._meta(epoch, metrics),
            )
