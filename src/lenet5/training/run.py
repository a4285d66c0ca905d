"""A training run's life around the Trainer: its config, its folder, resume, torch.distributed, and what a
failure leaves behind. The CLI's `train` is parse -> train_run -> print.

- Config: config.resolve_config (defaults <- ./config.yaml <- --config FILE <- flags <- --set), as for `tune`.
- A new run claims its folder with an exclusive create: two runs started together never share one, and an
  existing folder is never reused except by --resume.
- --resume continues with the run's own config; only --epochs (to extend it: the schedule is re-planned
  for the new total from the step reached) and where the data is (--data-dir, --dataset) may change.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from lenet5.config import Config, apply_dict, config_from_dict
from lenet5.errors import WRITE_ERRNOS, ConfigError, Lenet5Error, TrainingError
from lenet5.training.callbacks import BEST_FILE, LAST_FILE, run_folder_callbacks
from lenet5.training.trainer import Trainer, TrainingInterrupted, TrainResult

RESUMABLE = {("train", "epochs"), ("data", "data_dir"), ("data", "dataset")}  # what --resume lets a flag change


@dataclass
class Resume:
    """What --resume continues: the run folder, its config, its last and best checkpoints."""

    run_dir: Path
    cfg: Config
    last: object  # checkpoint.Checkpoint of last.safetensors
    best_weights: dict | None


def resume_from(run: str | Path, flags: dict, sets: list[str] = (), config_file: str | None = None) -> Resume:
    """Load a run to continue. Flags it would not honour are refused (one line), never silently ignored."""
    from lenet5.checkpoint import load_checkpoint

    refused = sorted(f"{s}.{k}" for s, keys in flags.items() for k in keys if (s, k) not in RESUMABLE)
    if sets or config_file or refused:
        given = refused + (["--set"] if sets else []) + (["--config"] if config_file else [])
        raise ConfigError(f"--resume continues a run with its own config, so {', '.join(given)} cannot change it; "
                          "only --epochs (to train longer), --data-dir and --dataset can. Start a new run instead")
    run_dir = Path(run)
    last_path = run_dir / LAST_FILE if run_dir.is_dir() else run_dir
    last = load_checkpoint(last_path)
    state = last.meta.get("trainer_state")
    if not state:
        raise ConfigError(f"{last_path} has no training state to resume from (pass a run folder with {LAST_FILE})")
    cfg = config_from_dict(last.meta["config"])
    if last.model != cfg.model.name:
        raise ConfigError(f"{last_path} holds a {last.model} LeNet-5 but its config says {cfg.model.name}")
    cfg = apply_dict(cfg, flags, source="command-line flags")
    done = state.get("epoch") if isinstance(state, dict) else None
    if isinstance(done, int) and not isinstance(done, bool) and done > cfg.train.epochs:
        raise ConfigError(f"{last_path.parent} has already trained {done} epochs; --epochs must be at least that")
    best_path = last_path.parent / BEST_FILE
    best = load_checkpoint(best_path, expect_model=cfg.model.name).weights if best_path.exists() else None
    return Resume(last_path.parent, cfg, last, best)


def claim_run_dir(cfg: Config) -> Path:
    """Create the new run's folder exclusively: train.out/train.name, or <engine>-<model>-<date>-<time>[-N]."""
    parent = Path(cfg.train.out)
    parent.mkdir(parents=True, exist_ok=True)
    if cfg.train.name:
        run_dir = parent / cfg.train.name
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise ConfigError(f"run folder {run_dir} already exists; continue that run with --resume {run_dir} "
                              "or choose another --name") from None
        return run_dir
    base = f"{cfg.train.engine}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        run_dir = parent / (base if n == 1 else f"{base}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise ConfigError(f"{parent} already holds 10000 runs named {base}-N; choose a --name")


def world_size() -> int:
    """Processes in this torchrun job (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number (torchrun sets it)") from None


def train_run(cfg: Config | None = None, resume: Resume | None = None, log=print) -> tuple[Path, TrainResult | None]:
    """Train a new run (cfg) or continue one (resume). Returns (run folder, result); the result is None on the
    ranks of a torchrun job that do not write. Raises TrainingInterrupted on Ctrl-C and Lenet5Error for
    what the user can fix (a full disk, a diverged loss), saying what was kept."""
    from lenet5.data.datasets import load_mnist

    cfg = resume.cfg if resume else cfg
    distributed = cfg.train.engine == "torch" and world_size() > 1
    is_writer = True
    if distributed:
        from lenet5.engines.torch.distributed import init_from_env

        rank, _ = init_from_env()
        is_writer = rank == 0
    try:
        data = load_mnist(cfg.data.data_dir, cfg.data.dataset)
        say = log if is_writer else (lambda msg: None)
        trainer = Trainer(cfg, data, log=say)  # before claiming a folder: a bad setting leaves none behind
        if resume:
            trainer.restore(resume.last, resume.best_weights)
            run_dir = resume.run_dir
        elif is_writer:
            run_dir = claim_run_dir(cfg)
        else:  # other ranks write nothing; the folder is rank 0's
            run_dir = Path(cfg.train.out) / (cfg.train.name or "(rank 0's run folder)")
        if is_writer:
            trainer.callbacks = run_folder_callbacks(run_dir)
        if resume:
            say(f"resuming {run_dir} at epoch {trainer.epoch + 1}, batch {trainer.batch} (step {trainer.step})")
        else:
            say(f"training a {cfg.model.name} LeNet-5 with the {cfg.train.engine} engine for {cfg.train.epochs} "
                f"epochs (batch {cfg.train.batch_size}, {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, "
                f"{cfg.schedule.name} schedule, seed {cfg.train.seed}) -> {run_dir}")
        try:
            result = trainer.fit()
        except OSError as exc:  # a full disk, a read-only run folder: one line, and say what is safe
            if exc.errno not in WRITE_ERRNOS or not is_writer:
                raise
            raise Lenet5Error(f"cannot write {exc.filename or run_dir}: {exc.strerror}; {_kept(run_dir)}") from None
        except TrainingError as exc:
            raise TrainingError(f"{exc}; {_kept(run_dir)}") from None
        except TrainingInterrupted as stop:
            stop.run_dir = run_dir
            raise
    finally:
        if distributed:
            from lenet5.engines.torch.distributed import cleanup

            cleanup()
    return run_dir, result if is_writer else None


def _kept(run_dir: Path) -> str:
    last = run_dir / LAST_FILE
    if last.exists():
        return f"the last good checkpoint is kept: {last}; continue with: lenet5 train --resume {run_dir}"
    return "no checkpoint had been written yet"
