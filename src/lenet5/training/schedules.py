"""Learning-rate schedules as plain functions of the step (plus reduce-on-plateau, which watches validation).

``step`` counts optimizer updates from 0; ``steps_per_epoch`` and ``total_steps`` come from the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lenet5.config import ScheduleConfig


def _warmup(lr: float, step: int, warmup_steps: int) -> float:
    return lr * (step + 1) / warmup_steps if step < warmup_steps else lr


def constant_lr(cfg: ScheduleConfig, lr: float, step: int, steps_per_epoch: int, total_steps: int) -> float:
    return _warmup(lr, step, int(cfg.warmup_epochs * steps_per_epoch))


def step_lr(cfg: ScheduleConfig, lr: float, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """lr * gamma^(epoch // step_size), after an optional linear warm-up."""
    epoch = step // steps_per_epoch
    return _warmup(lr * cfg.gamma ** (epoch // cfg.step_size), step, int(cfg.warmup_epochs * steps_per_epoch))


def cosine_lr(cfg: ScheduleConfig, lr: float, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Linear warm-up, then half a cosine from lr down to min_lr at the last step."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return _warmup(lr, step, warmup)
    progress = (step - warmup) / max(1, total_steps - warmup - 1)
    return cfg.min_lr + (lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def onecycle_lr(cfg: ScheduleConfig, lr: float, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """One-cycle (Smith 2018): cosine rise from lr/div_factor to lr over pct_start, cosine fall to min_lr."""
    start = lr / cfg.div_factor
    rise = max(1, int(cfg.pct_start * total_steps))
    if step < rise:
        t = step / rise
        return start + (lr - start) * 0.5 * (1 - math.cos(math.pi * t))
    t = min(1.0, (step - rise) / max(1, total_steps - rise - 1))
    return cfg.min_lr + (lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


STEP_SCHEDULES = {"constant": constant_lr, "step": step_lr, "cosine": cosine_lr, "onecycle": onecycle_lr}
SCHEDULES = (*STEP_SCHEDULES, "plateau")  # the one list (config validation and the CLI derive from it)


@dataclass
class Schedule:
    """The lr for each step; for 'plateau' the lr is multiplied by ``factor`` when validation loss stalls."""

    cfg: ScheduleConfig
    base_lr: float
    steps_per_epoch: int
    total_steps: int
    scale: float = 1.0  # plateau: current multiplier
    best: float = math.inf  # plateau: best validation loss so far
    bad_epochs: int = 0  # plateau: epochs since the best

    def lr(self, step: int) -> float:
        if self.cfg.name == "plateau":
            lr = _warmup(self.base_lr, step, int(self.cfg.warmup_epochs * self.steps_per_epoch))
            return max(self.cfg.min_lr, lr * self.scale)
        return STEP_SCHEDULES[self.cfg.name](self.cfg, self.base_lr, step, self.steps_per_epoch, self.total_steps)

    def end_epoch(self, val_loss: float | None) -> None:
        if self.cfg.name != "plateau" or val_loss is None or math.isnan(val_loss):
            return
        if val_loss < self.best:
            self.best, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.patience:
            self.scale *= self.cfg.factor
            self.bad_epochs = 0

    def state(self) -> dict:
        return {
            "scale": self.scale,
            "best": None if math.isinf(self.best) else self.best,
            "bad_epochs": self.bad_epochs,
        }

    def load_state(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
