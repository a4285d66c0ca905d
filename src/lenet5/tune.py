"""Hyperparameter search with Optuna: each trial is a normal training run, scored on VALIDATION accuracy.

The test split is never handed to a trial (the trainer gets empty test arrays), so choosing the best trial
cannot leak test information. Trials report their validation accuracy after every epoch and bad ones are
stopped early (MedianPruner). The study lives in a database (SQLite by default, any URL Optuna accepts), so a
search can be stopped and continued, and several workers (processes or machines) can share one study.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lenet5.atomic import atomic_write_text
from lenet5.config import Config, apply_dict, config_from_dict, dump_yaml
from lenet5.data.datasets import MNIST
from lenet5.errors import ConfigError, Lenet5Error, TrainingError

# The search space. lr and the decay strengths are drawn log-uniformly; "decay" first tosses a coin between
# 0 and a drawn value (a log scale cannot hold 0). The augmentation strength multiplies the configured
# augment bounds (rotation, scale, shear, translate, elastic_alpha), clipped to their allowed ranges.
SEARCH_SPACE = {
    "optimizer": ("sgd", "adam", "adamw"),
    "lr": {"sgd": (5e-3, 0.3), "adam": (1e-4, 1e-2), "adamw": (1e-4, 1e-2)},  # log-uniform, per optimizer
    "batch_size": (32, 64, 128),
    "decay": {"sgd": ("l2", 1e-6, 1e-2), "adam": ("l2", 1e-6, 1e-2), "adamw": ("weight_decay", 1e-4, 0.3)},
    "schedule": ("onecycle", "cosine"),
    "augment": (False, True),
    "augment_strength": (0.25, 2.0),  # uniform
}
AUGMENT_LIMITS = {"rotation": 180.0, "scale": 0.9, "shear": 45.0, "translate": 10.0, "elastic_alpha": None}
FINISHED = ("COMPLETE", "PRUNED")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise Lenet5Error('lenet5 tune needs Optuna: pip install -e ".[tune]"') from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: experimental
    return optuna


def suggest(trial, base: Config, space: dict = SEARCH_SPACE) -> dict:
    """Draw one point of the search space: {section: {key: value}} overrides of the base config."""
    opt = trial.suggest_categorical("optimizer", space["optimizer"])
    lo, hi = space["lr"][opt]
    lr = trial.suggest_float(f"lr_{opt}", lo, hi, log=True)
    key, lo, hi = space["decay"][opt]
    decay = {"l2": 0.0, "weight_decay": 0.0}
    if trial.suggest_categorical(f"decay_{opt}", (True, False)):
        decay[key] = trial.suggest_float(f"{key}_{opt}", lo, hi, log=True)
    out = {
        "optimizer": {"name": opt, "lr": lr, **decay},
        "train": {"batch_size": trial.suggest_categorical("batch_size", space["batch_size"])},
        "schedule": {"name": trial.suggest_categorical("schedule", space["schedule"])},
        "augment": {"enabled": trial.suggest_categorical("augment", space["augment"])},
    }
    if out["augment"]["enabled"]:
        strength = trial.suggest_float("augment_strength", *space["augment_strength"])
        for name, limit in AUGMENT_LIMITS.items():
            value = getattr(base.augment, name) * strength
            out["augment"][name] = min(value, limit) if limit is not None else value
    return out


@dataclass
class TuneSettings:
    storage: str = "sqlite:///runs/tune/study.db"
    study_name: str = "lenet5"
    trials: int = 20  # finished (complete or pruned) trials the study should hold; shared by all workers
    timeout: float | None = None  # seconds for this worker
    epochs: int = 3  # per trial
    train_size: int | None = None  # images of the training split to use (validation included)
    heartbeat: int = 60  # seconds between a running trial's heartbeats; silent for 3x this: marked failed
    sampler_seed: int | None = None  # None: each worker draws differently (what parallel workers need)
    out: str = "runs/tune"  # <out>/<study_name>/config.yaml (best) and trials.csv


def subset(data: MNIST, size: int | None, seed: int) -> MNIST:
    """A seeded random subset of the training split, and NO test images (trials must never see them)."""
    x, y = data.train_images, data.train_labels
    if size is not None:
        if not 2 <= size <= len(x):
            raise ConfigError(f"--train-size must be between 2 and {len(x)}, got {size}")
        keep = np.sort(np.random.default_rng([seed, 7]).permutation(len(x))[:size])
        x, y = x[keep], y[keep]
    empty = np.zeros((0,) + data.test_images.shape[1:], np.uint8)
    return MNIST(x, y, empty, np.zeros(0, np.uint8), data.files)


def trial_config(base: Config, overrides: dict, epochs: int) -> Config:
    return apply_dict(base, {**overrides, "train": {**overrides.get("train", {}), "epochs": epochs}}, source="trial")


def objective_for(base: Config, data: MNIST, settings: TuneSettings, log: Callable[[str], None]):
    """The Optuna objective: train one configuration, report validation accuracy per epoch, return the best."""
    from lenet5.training.trainer import Trainer

    optuna = _optuna()
    val_size = (
        base.data.val_size if settings.train_size is None else min(base.data.val_size, len(data.train_images) // 6)
    )
    if val_size < 1:
        raise ConfigError("lenet5 tune scores trials on the validation split: data.val_size must be at least 1")

    def objective(trial) -> float:
        cfg = trial_config(base, suggest(trial, base), settings.epochs)
        trial.set_user_attr("config", cfg.to_dict())  # the full-data config, written for the best trial
        run_cfg = replace(cfg, data=replace(cfg.data, val_size=val_size))
        trainer = Trainer(run_cfg, data, log=lambda msg: None)  # no callbacks: a trial writes no run folder
        start, best = time.perf_counter(), -math.inf
        try:
            for row in trainer.epochs():  # not fit(): that would also score the test set
                epoch, acc = trainer.epoch, row["val_accuracy"]
                best = max(best, acc)
                trial.report(acc, epoch)
                log(
                    f"trial {trial.number} epoch {epoch}/{settings.epochs}: val acc {100 * acc:.2f}%  "
                    f"({describe(trial.params)})"
                )
                if trial.should_prune():
                    log(f"trial {trial.number} pruned after epoch {epoch}: below the median of earlier trials")
                    trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
                    raise optuna.TrialPruned(f"val acc {acc:.4f} below the median at epoch {epoch}")
        except TrainingError as exc:  # the loss diverged: a bad point, not a broken study
            log(f"trial {trial.number} pruned: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        finally:
            trainer.engine.close()
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("val_loss", min(r["val_loss"] for r in trainer.history))
        return best

    return objective


def describe(params: dict) -> str:
    parts = []
    for key, value in params.items():
        parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


def display_url(url: str) -> str:
    """The storage URL as it may be printed: any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 (not a URL SQLAlchemy can parse: printed as given, minus a password)
        head, at, tail = url.rpartition("@")
        scheme, sep, rest = head.partition("://")
        user = rest.partition(":")[0]
        return f"{scheme}{sep}{user}:***@{tail}" if at and ":" in rest else url


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def storage_url(url: str) -> str:
    """The URL SQLAlchemy gets. postgresql:// (and postgres://) use psycopg2 in SQLAlchemy; the project installs
    psycopg 3, so they are pointed at it (postgresql+psycopg://) unless psycopg2 is installed. Any other URL,
    including an explicit postgresql+driver://, is passed on as it is."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return url
    if _installed("psycopg2"):
        return f"postgresql://{rest}"
    if _installed("psycopg"):
        return f"postgresql+psycopg://{rest}"
    raise Lenet5Error('a PostgreSQL study needs a driver: pip install -e ".[tune]" (installs psycopg 3)')


def _one_line(exc: BaseException) -> str:
    """A database error as one line: the driver's own message, without SQLAlchemy's SQL and background links."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).split("\n(Background on this error", 1)[0].split("\n[SQL:", 1)[0]
    return " ".join(text.split()) or type(orig).__name__


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a name too long, a file in the way, a read-only place
                raise Lenet5Error(
                    f"cannot make the folder of the study database {path}: "
                    f"{exc.strerror or exc}; choose another --storage"
                ) from None
        return {"connect_args": {"timeout": 60}}  # wait for the other workers' writes
    if url.startswith("postgresql"):
        # Give up on an unreachable server after 10 s instead of the TCP default (minutes); check pooled
        # connections before use, so a worker survives a server restart or a dropped idle connection.
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {}


def _check_reachable(url: str, engine_kwargs: dict, shown: str) -> None:
    """Connect once, so that a wrong host, port, password or database name is one clear line, at once."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs)
    except ImportError as exc:
        raise Lenet5Error(f"the study database {shown} needs a driver that is not installed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (a malformed URL, an unknown dialect)
        raise Lenet5Error(f"bad --storage URL {shown}: {_one_line(exc)}") from None
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001 (refused, unknown host, authentication, no such database)
        raise Lenet5Error(f"cannot reach the study database {shown}: {_one_line(exc)}") from None
    finally:
        engine.dispose()


def open_study(settings: TuneSettings):
    """Create or load the study; several workers may do this at the same moment."""
    optuna = _optuna()
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    url, shown = storage_url(settings.storage), display_url(settings.storage)
    engine_kwargs = _engine_kwargs(url)
    if not url.startswith("sqlite"):
        _check_reachable(url, engine_kwargs, shown)
    for attempt in range(5):  # two workers creating a fresh database's tables at once: one may lose the race
        try:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=settings.heartbeat,
                grace_period=3 * settings.heartbeat,
            )
            sampler = optuna.samplers.TPESampler(seed=settings.sampler_seed, n_startup_trials=8)
            pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
            return optuna.create_study(
                storage=storage,
                study_name=settings.study_name,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except Exception as exc:  # noqa: BLE001 (a bad URL, a missing driver, a database busy or racing)
            # PostgreSQL reports a lost CREATE TABLE race as a duplicate key (IntegrityError) or an existing
            # relation (ProgrammingError); SQLite as a locked database (OperationalError).
            if attempt == 4 or not isinstance(exc, (IntegrityError, OperationalError, ProgrammingError)):
                hint = " (a database driver is missing)" if isinstance(exc, ImportError) else ""
                raise Lenet5Error(
                    f"cannot open the study {settings.study_name!r} in {shown}: {_one_line(exc)}{hint}"
                ) from None
            time.sleep(0.5 + attempt)


def count_states(study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def run_study(base: Config, data: MNIST, settings: TuneSettings, log: Callable[[str], None] = print) -> dict:
    """Run this worker's share of the study, write the best config and the trials table; return a summary."""
    optuna = _optuna()
    from optuna.trial import TrialState

    study = open_study(settings)
    optuna.storages.fail_stale_trials(study)  # trials of killed workers: silent past the grace period -> FAIL
    finished_states = tuple(TrialState[s] for s in FINISHED)
    done = len(study.get_trials(deepcopy=False, states=finished_states))
    remaining = settings.trials - done
    if remaining > 0:
        data = subset(data, settings.train_size, base.train.seed)
        log(
            f"study {settings.study_name!r} in {display_url(settings.storage)}: {done} trial(s) finished, "
            f"running up to {remaining} more ({settings.epochs} epoch(s) each, {len(data.train_images)} "
            "training+validation images)"
        )
        study.optimize(
            objective_for(base, data, settings, log),
            n_trials=remaining,
            timeout=settings.timeout,
            callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=finished_states)],
        )
    else:
        log(f"study {settings.study_name!r} already holds {done} finished trial(s) (--trials {settings.trials})")
    return summarize(study, base, settings)


def summarize(study, base: Config, settings: TuneSettings) -> dict:
    from optuna.trial import TrialState

    folder = Path(settings.out) / settings.study_name
    summary = {
        "study": settings.study_name,
        "storage": display_url(settings.storage),
        "trials": count_states(study),
        "best": None,
        "config": None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "trials.csv", trials_table(study))
    summary["trials_csv"] = str(folder / "trials.csv")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return summary
    best = study.best_trial
    cfg = config_from_dict(best.user_attrs["config"]) if "config" in best.user_attrs else base
    atomic_write_text(folder / "config.yaml", dump_yaml(cfg))
    summary["best"] = {
        "number": best.number,
        "val_accuracy": best.value,
        "params": best.params,
        "seconds": best.user_attrs.get("seconds"),
    }
    summary["config"] = str(folder / "config.yaml")
    return summary


def trials_table(study) -> str:
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "val_accuracy", "epochs_reported", "seconds", *names])
    for t in trials:
        w.writerow(
            [
                t.number,
                t.state.name,
                "" if t.value is None else t.value,
                len(t.intermediate_values),
                t.user_attrs.get("seconds", ""),
                *[t.params.get(k, "") for k in names],
            ]
        )
    return buf.getvalue()
