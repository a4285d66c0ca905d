"""A training run's life around the Trainer: its config, its folder, resume, torch.distributed, and what a
failure leaves behind. The CLI's `train` is parse -> train_run -> print.

- Config: config.resolve_config (defaults <- ./config.yaml <- --config FILE <- flags <- --set), as for `tune`.
- A new run claims its folder with an exclusive create: two runs started together never share one, and an
  existing folder is never reused except by --resume.
- --resume continues with the run's own config; only --epochs (to extend it: the schedule is re-planned
  for the new total from the step reached) and where the data is (--data-dir, --dataset) may change. A run
  stopped before its first checkpoint starts again from step 0 in its folder, from its config.yaml.
- A run holds a lock on its folder (fcntl.flock on its .lock file) from its claim or its --resume to its end:
  a second run or resume of the same folder is refused in one line instead of overwriting the first one's files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from lenet5.atomic import is_temporary, temporary_name
from lenet5.config import Config, apply_dict, config_from_dict, dump_yaml
from lenet5.errors import WRITE_ERRNOS, ConfigError, Lenet5Error, TrainingError
from lenet5.training.callbacks import BEST_FILE, CONFIG_FILE, LAST_FILE, Callback, run_folder_callbacks
from lenet5.training.trainer import Trainer, TrainingInterrupted, TrainResult

RESUMABLE = {("train", "epochs"), ("data", "data_dir"), ("data", "dataset")}  # what --resume lets a flag change


@dataclass
class Resume:
    """What --resume continues: the run folder, its config, its last and best checkpoints."""

    run_dir: Path
    cfg: Config
    last: object  # checkpoint.Checkpoint of last.safetensors; None: stopped before it, start again from step 0
    best_weights: dict | None
    lock: RunLock | None = None  # held from resume_from to the end of train_run


RUN_LOCK = ".lock"  # in a run folder: held (flock) by the one process that writes the folder


class RunInterrupted(TrainingInterrupted):
    """Ctrl-C stopped a run: where the trainer stopped (``epoch``, ``batch``, whether the step reached was
    ``saved``) and ``run_dir``, the folder that ``lenet5 train --resume`` continues."""

    def __init__(self, epoch: int, batch: int, saved: bool, run_dir: Path):
        super().__init__(epoch, batch, saved)
        self.run_dir = run_dir


class RunLock:
    """An exclusive, non-blocking flock on a run folder's .lock file. The kernel drops it when the process ends,
    however it ends, so a killed run never leaves its folder locked. The file itself stays: deleting a lock
    file while others may have it open would let two processes each lock a different file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # drops the lock
            self.fd = -1


def lock_run_dir(run_dir: Path) -> RunLock | None:
    """Lock run_dir for this process; None when another process holds it. Where flock does not exist
    (not POSIX) a lock that locks nothing is returned."""
    try:
        import fcntl
    except ImportError:
        return RunLock(-1)
    path = run_dir / RUN_LOCK
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as exc:  # a read-only folder: an existing lock file can still be locked, read-only
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            try:
                fd = os.open(path, (flags & ~(os.O_RDWR | os.O_CREAT)) | os.O_RDONLY)
            except FileNotFoundError:
                raise exc from None  # no lock file and none can be made: the folder cannot be written
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise ConfigError(
                f"{path} is not a regular file; delete it (lenet5 makes a new one) and run again"
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path} is not a regular file; delete it (lenet5 makes a new one) and run again")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return RunLock(fd)


def _held(run_dir: Path) -> ConfigError:
    return ConfigError(
        f"run folder {run_dir} is in use by another lenet5 train (a run or a resume of it is still "
        "going); wait for it to end or stop it, then resume it"
    )


def _writes_run_folder() -> bool:
    """False on the torchrun ranks other than 0: they write nothing, so they take no lock either."""
    return world_size() == 1 or os.environ.get("RANK", "0") == "0"


def resume_from(run: str | Path, flags: dict, sets: list[str] = (), config_file: str | None = None) -> Resume:
    """Load a run to continue. Flags it would not honour are refused (one line), never silently ignored. The
    run folder is locked first (Resume.lock, released by train_run): a folder another process is writing is
    refused in one line."""
    refused = sorted(f"{s}.{k}" for s, keys in flags.items() for k in keys if (s, k) not in RESUMABLE)
    if sets or config_file or refused:
        given = refused + (["--set"] if sets else []) + (["--config"] if config_file else [])
        raise ConfigError(
            f"--resume continues a run with its own config, so {', '.join(given)} cannot change it; "
            "only --epochs (to train longer), --data-dir and --dataset can. Start a new run instead"
        )
    run_dir = Path(run)
    folder = run_dir if run_dir.is_dir() else run_dir.parent if run_dir.is_file() else None
    lock = None
    if folder is not None and _writes_run_folder():
        lock = lock_run_dir(folder)  # before reading its state: the state a running run is about to replace
        if lock is None:
            raise _held(folder)
    try:
        return dataclasses.replace(_resume_locked(run_dir, flags), lock=lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _resume_locked(run_dir: Path, flags: dict) -> Resume:
    from lenet5.checkpoint import family, load_checkpoint

    if run_dir.is_dir() and not (run_dir / LAST_FILE).exists():
        return _restart(run_dir, flags)
    last_path = run_dir / LAST_FILE if run_dir.is_dir() else run_dir
    last = load_checkpoint(last_path)
    state = last.meta.get("trainer_state")
    if not state:
        raise ConfigError(f"{last_path} has no training state to resume from (pass a run folder with {LAST_FILE})")
    cfg = config_from_dict(last.meta["config"])
    if last.model != cfg.model.name:
        raise ConfigError(f"{last_path} holds a {last.model} {family(last.model)} but its config says {cfg.model.name}")
    cfg = apply_dict(cfg, flags, source="command-line flags")
    done = state.get("epoch") if isinstance(state, dict) else None
    if isinstance(done, int) and not isinstance(done, bool) and done > cfg.train.epochs:
        raise ConfigError(f"{last_path.parent} has already trained {done} epochs; --epochs must be at least that")
    best_path = last_path.parent / BEST_FILE
    best = load_checkpoint(best_path, expect_model=cfg.model.name).weights if best_path.exists() else None
    return Resume(last_path.parent, cfg, last, best)


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Delete the temporaries a killed run left in its folder (our own names only, regular files only)."""
    removed = []
    for p in run_dir.iterdir():
        if is_temporary(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def _restart(run_dir: Path, flags: dict) -> Resume:
    """A run stopped before its first checkpoint: start it again from step 0 in its folder, with its config."""
    from lenet5.config import load_yaml

    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{run_dir} holds no run to resume (no {LAST_FILE}, no {CONFIG_FILE}): it stopped before "
            "it started; run the same command again without --resume (an empty folder is reused)"
        )
    cfg = apply_dict(config_from_dict(load_yaml(run_dir / CONFIG_FILE)), flags, source="command-line flags")
    return Resume(run_dir, cfg, None, None)


def claim_run_dir(cfg: Config) -> tuple[Path, RunLock]:
    """Claim the new run's folder, train.out/train.name or <engine>-<model>-<date>-<time>[-N]: it must be new or
    empty, and the claim is the exclusive creation of its config.yaml (complete, by a hard link), so two runs
    never share a folder and a run killed at any moment leaves a folder --resume can continue. Returns the
    folder and its lock, held by this process until the run ends."""
    parent = Path(cfg.train.out)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"train.out {parent} is not a folder (a file is in the way); choose another --out") from None
    text = dump_yaml(cfg).encode("utf-8")
    if cfg.train.name:
        run_dir = parent / cfg.train.name
        lock = _claim(run_dir, text)
        if lock is None:
            raise ConfigError(
                f"run folder {run_dir} already exists; continue that run with --resume {run_dir} "
                "or choose another --name"
            )
        return run_dir, lock
    base = f"{cfg.train.engine}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        run_dir = parent / (base if n == 1 else f"{base}-{n}")
        lock = _claim(run_dir, text)
        if lock is not None:
            return run_dir, lock
    raise ConfigError(f"{parent} already holds 10000 runs named {base}-N; choose a --name")


def give_back_run_dir(run_dir: Path, lock: RunLock) -> None:
    """Undo claim_run_dir for a run that stopped before it began (a setting the engine refuses, Ctrl-C while
    it starts): its config.yaml and lock file go, then the folder if nothing else is in it, so a mistake leaves
    no run behind. The lock file may go because this process writes nothing more: whoever locks a new one owns
    the folder alone."""
    with contextlib.suppress(OSError):
        (run_dir / CONFIG_FILE).unlink()
        (run_dir / RUN_LOCK).unlink()
        run_dir.rmdir()  # only if nothing else is in it
    lock.release()


def _claim(run_dir: Path, config_text: bytes) -> RunLock | None:
    """The folder's lock when this process now owns run_dir (it was new or empty and its config.yaml is ours),
    else None. A file or a link in the folder's place is never taken. The lock is taken before config.yaml
    is created, so a --resume of a folder being claimed waits for nothing and is refused."""
    if run_dir.is_symlink():
        return None
    try:
        run_dir.mkdir(exist_ok=True)
    except FileExistsError:  # a file, a FIFO, ... under that name
        return None

    def leftover(name: str) -> bool:  # what a claim killed before its config.yaml existed leaves
        return name == RUN_LOCK or is_temporary(name, [CONFIG_FILE])

    if any(not leftover(p.name) for p in run_dir.iterdir()):
        return None  # a folder with anything in it but a killed claim's leftover is somebody's
    try:
        lock = lock_run_dir(run_dir)
    except ConfigError:  # something planted as .lock: the folder is not empty, so not ours
        return None
    if lock is None:  # another process is claiming it right now
        return None
    tmp = run_dir / temporary_name(CONFIG_FILE, str(os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(config_text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, run_dir / CONFIG_FILE)  # fails if the file exists: the exclusive create, complete
    except FileExistsError:
        lock.release()
        return None
    except BaseException:
        lock.release()
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return lock


def world_size() -> int:
    """Processes in this torchrun job (1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number (torchrun sets it)") from None


def run_callbacks(cfg: Config, run_dir: Path) -> list[Callback]:
    """What writes a run's folder: its files and checkpoints, and TensorBoard's events when train.logger asks."""
    callbacks = run_folder_callbacks(run_dir)
    if cfg.train.logger == "tensorboard":
        from lenet5.training.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(run_dir))
    return callbacks


def train_run(cfg: Config | None = None, resume: Resume | None = None, log=print) -> tuple[Path, TrainResult | None]:
    """Train a new run (cfg) or continue one (resume). Returns (run folder, result); the result is None on the
    ranks of a torchrun job that do not write. Raises RunInterrupted on Ctrl-C (naming the folder to resume)
    and Lenet5Error for what the user can fix (a full disk, a diverged loss), saying what was kept."""
    from lenet5.data.datasets import load_mnist

    cfg = resume.cfg if resume else cfg
    distributed = cfg.train.engine == "torch" and world_size() > 1
    is_writer = True
    if distributed:
        from lenet5.engines.torch.distributed import init_from_env

        rank, _ = init_from_env()
        is_writer = rank == 0
    trainer, lock = None, resume.lock if resume else None
    try:
        if is_writer and cfg.train.logger == "tensorboard":
            from lenet5.training.tensorboard import require_tensorboard

            require_tensorboard()  # a missing package is one line now, not after the data and the folder
        data = load_mnist(cfg.data.data_dir, cfg.data.dataset)
        say = log if is_writer else (lambda msg: None)
        if resume:
            run_dir = resume.run_dir
        elif is_writer:
            run_dir, lock = claim_run_dir(cfg)
        else:  # other ranks write nothing; the folder is rank 0's
            run_dir = Path(cfg.train.out) / (cfg.train.name or "(rank 0's run folder)")
        try:
            trainer = Trainer(cfg, data, callbacks=run_callbacks(cfg, run_dir) if is_writer else (), log=say)
        except BaseException:
            if not resume and lock is not None:  # a folder claimed just now: a bad setting leaves none behind
                give_back_run_dir(run_dir, lock)
                lock = None
            raise
        if resume:
            if resume.last is not None:
                trainer.restore(resume.last, resume.best_weights)
            remove_stale_temporaries(run_dir)
            say(f"resuming {run_dir} at epoch {trainer.epoch + 1}, batch {trainer.batch} (step {trainer.step})")
        else:
            from lenet5.checkpoint import family
            from lenet5.models import summary_lines

            say("\n".join(summary_lines(cfg.model.name)))
            epochs = f"{cfg.train.epochs} epoch{'' if cfg.train.epochs == 1 else 's'}"
            say(
                f"training a {cfg.model.name} {family(cfg.model.name)} with the {cfg.train.engine} engine for {epochs} "
                f"(batch {cfg.train.batch_size}, {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, "
                f"{cfg.schedule.name} schedule, seed {cfg.train.seed}) -> {run_dir}"
            )
        try:
            result = trainer.fit()
        except OSError as exc:  # a full disk, a read-only run folder: one line, and say what is safe
            if exc.errno not in WRITE_ERRNOS or not is_writer:
                raise
            name = os.fsdecode(exc.filename) if exc.filename else run_dir  # TensorBoard's writer names files in bytes
            raise Lenet5Error(f"cannot write {name}: {exc.strerror}; {_kept(run_dir)}") from None
        except TrainingError as exc:
            raise TrainingError(f"{exc}; {_kept(run_dir)}") from None
        except TrainingInterrupted as stop:
            raise RunInterrupted(stop.epoch, stop.batch, stop.saved, run_dir) from None
    finally:
        if trainer is not None:
            trainer.engine.close()  # the NumPy engine's worker processes
        if distributed:
            from lenet5.engines.torch.distributed import cleanup

            cleanup()
        if lock is not None:
            lock.release()  # last: the worker processes have stopped and every file is written
    return run_dir, result if is_writer else None


def _kept(run_dir: Path) -> str:
    last = run_dir / LAST_FILE
    if last.exists():
        return f"the last good checkpoint is kept: {last}; continue with: lenet5 train --resume {run_dir}"
    return "no checkpoint had been written yet"
