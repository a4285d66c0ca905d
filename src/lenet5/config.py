"""Training configuration: dataclasses with strict validation.

Settings are layered: built-in defaults <- config.yaml <- --config FILE <- flags / --set section.key=value.
An unknown key, a wrong type or an impossible value raises ConfigError naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet5.data.dataset_names import DATASET_NAMES
from lenet5.engines import DEVICES, DTYPES, ENGINES
from lenet5.errors import ConfigError
from lenet5.models import INITIALIZERS, MODELS
from lenet5.training.schedules import SCHEDULES

_SHORT = reprlib.Repr()  # error messages show a value cut short (Python 3.10/3.11 take no arguments here)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 4, 4, 60, 60, 40


def _choice(*allowed: str) -> dict:
    return {"choices": allowed}


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open, hi_open)}


# The optimizers, by name; each engine implements every one (engines/numpy/optim.py OPTIMIZERS, the torch
# engine's TORCH_OPTIMIZERS). Adding one: its name (and new settings) here, and its update in both engines.
OPTIMIZERS = ("sgd", "adam", "adamw")
MAX_CONFIG_BYTES = 1_000_000
# Bounds on what is handed to the YAML parser, checked before it builds anything: a config is 2 levels deep
# (section: key: value), and PyYAML builds nested values recursively (50,000 '[' took 124 s, then raised
# RecursionError) and turns any number of digits into an int (5,000 digits raise ValueError).
MAX_YAML_DEPTH = 32
MAX_YAML_INT_CHARS = 64  # a seed past 2**32 - 1 is refused with its range, a 5,000-digit one never built
MAX_SET_CHARS = 10_000  # one --set section.key=value
MAX_SEED = 2**32 - 1  # numpy and torch both take it; torch overflows past 2**63
# What records a run besides its folder's own files (training/tensorboard.py); off by default: see the README's
# TensorBoard paragraph for its measured cost.
LOGGERS = ("none", "tensorboard")
MAX_THREADS = 64  # far more than these machines have; thousands of threads only exhaust the system


@dataclass
class ModelConfig:
    name: str = field(default="modern", metadata=_choice(*MODELS))
    init: str = field(default="kaiming_uniform", metadata=_choice(*INITIALIZERS))


@dataclass
class OptimizerConfig:
    name: str = field(default="sgd", metadata=_choice(*OPTIMIZERS))
    lr: float = field(default=0.05, metadata=_range(0.0, None, lo_open=True))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))  # SGD only
    nesterov: bool = True  # SGD only
    beta1: float = field(default=0.9, metadata=_range(0.0, 1.0, hi_open=True))  # Adam/AdamW: 1 divides by zero
    beta2: float = field(default=0.999, metadata=_range(0.0, 1.0, hi_open=True))  # Adam/AdamW
    eps: float = field(default=1e-8, metadata=_range(0.0, None, lo_open=True))
    # L2 penalty 0.5*l2*||w||^2 added to the loss: its gradient l2*w goes through the optimizer
    # (for Adam it is rescaled by the adaptive step, like torch's Adam(weight_decay=...)).
    l2: float = field(default=0.0005, metadata=_range(0.0))
    # L1 penalty l1*|w| added to the loss: its gradient l1*sign(w) pushes small weights to exactly 0.
    l1: float = field(default=0.0, metadata=_range(0.0))
    # Decoupled weight decay: w <- w - lr*weight_decay*w just before each update, never rescaled
    # (Loshchilov & Hutter; what AdamW means by weight decay).
    weight_decay: float = field(default=0.0, metadata=_range(0.0))
    # Clip the global gradient norm to this value before the update; 0 turns clipping off.
    grad_clip: float = field(default=0.0, metadata=_range(0.0))


@dataclass
class ScheduleConfig:
    name: str = field(default="onecycle", metadata=_choice(*SCHEDULES))
    warmup_epochs: float = field(default=0.0, metadata=_range(0.0))  # linear warm-up (constant/step/cosine)
    min_lr: float = field(default=0.0, metadata=_range(0.0))  # floor for cosine/onecycle/plateau
    step_size: int = field(default=3, metadata=_range(1))  # step: epochs between decays
    gamma: float = field(default=0.1, metadata=_range(0.0, 1.0, lo_open=True))  # step: decay factor
    pct_start: float = field(default=0.25, metadata=_range(0.0, 1.0, lo_open=True))  # onecycle: rising share
    div_factor: float = field(default=25.0, metadata=_range(1.0))  # onecycle: start lr = lr / div_factor
    factor: float = field(default=0.5, metadata=_range(0.0, 1.0, lo_open=True))  # plateau: lr *= factor
    patience: int = field(default=1, metadata=_range(0))  # plateau: epochs without improvement


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = field(default="val_accuracy", metadata=_choice("val_accuracy", "val_loss"))
    patience: int = field(default=3, metadata=_range(1))
    min_delta: float = field(default=0.0, metadata=_range(0.0))
    restore_best: bool = True


@dataclass
class DataConfig:
    dataset: str = field(default="mnist", metadata=_choice(*DATASET_NAMES))
    data_dir: str | None = None  # None: $LENET5_DATA, else the per-user cache
    val_size: int = field(default=5000, metadata=_range(0))


@dataclass
class AugmentConfig:
    """Random distortions of training batches (never validation or test), applied on the fly."""

    enabled: bool = False
    rotation: float = field(default=10.0, metadata=_range(0.0, 180.0))  # max degrees, either way
    scale: float = field(default=0.1, metadata=_range(0.0, 0.9))  # zoom in [1 - scale, 1 + scale]
    shear: float = field(default=10.0, metadata=_range(0.0, 45.0))  # max degrees
    translate: float = field(default=2.0, metadata=_range(0.0, 10.0))  # max pixels, each axis
    elastic_alpha: float = field(default=0.0, metadata=_range(0.0))  # elastic strength (Simard 2003: ~34); 0 = off
    elastic_sigma: float = field(default=4.0, metadata=_range(0.0, None, lo_open=True))  # elastic smoothness


@dataclass
class TrainConfig:
    engine: str = field(default="numpy", metadata=_choice(*ENGINES))
    epochs: int = field(default=10, metadata=_range(1))
    batch_size: int = field(default=64, metadata=_range(1))
    eval_batch_size: int = field(default=1000, metadata=_range(1))
    seed: int = field(default=0, metadata=_range(0, MAX_SEED))
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 1.0))
    dtype: str = field(default="float32", metadata=_choice(*DTYPES))
    threads: int = field(default=0, metadata=_range(0, MAX_THREADS))  # 0: the engine's default
    device: str = field(default="auto", metadata=_choice(*DEVICES))  # torch engine
    out: str = "runs"  # parent folder of run folders
    name: str | None = field(default=None, metadata={"plain_name": True})  # run folder; None: <engine>-<model>-<time>
    limit_batches: int = field(default=0, metadata=_range(0))  # 0: every batch; N: at most N per epoch (smoke run)
    logger: str = field(default="none", metadata=_choice(*LOGGERS))  # tensorboard: event files in the run folder


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def config_field(dotted: str) -> dataclasses.Field:
    """The field of 'section.key' (for the CLI: its choices, its default, its range)."""
    section, key = dotted.split(".")
    return {f.name: f for f in dataclasses.fields(getattr(Config(), section))}[key]


def choices(dotted: str) -> tuple[str, ...] | None:
    """The allowed values of 'section.key', from the registry it was declared with (None: any value)."""
    return config_field(dotted).metadata.get("choices")


def default(dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(Config(), section), key)


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Check one value against its field's type, choices and range; return it in its proper type."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' must not be empty ({_allowed(f, kind)})")
    base = kind.replace("| None", "").strip()
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {_show(value)}")
    elif base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"config key '{key}' must be an integer, got {_show(value)}")
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {_show(value)}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"config key '{key}' must be a finite number, got {_show(value)}")
    elif base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {_show(value)}")
    if f.metadata.get("plain_name") and (value in ("", ".", "..") or any(c in value for c in "/\\\0")):
        raise ConfigError(
            f"config key '{key}' must be a plain folder name (no '/', not '.' or '..'), got {_show(value)}"
        )
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got {_show(value)}")
    if "range" in f.metadata:
        lo, hi, lo_open, hi_open = f.metadata["range"]
        bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and (value >= hi if hi_open else value > hi)
        )
        if bad:
            raise ConfigError(f"config key '{key}' {_allowed(f, kind)}; got {_show(value)}")
    return value


def _allowed(f: dataclasses.Field, kind: str) -> str:
    if "choices" in f.metadata:
        return "must be one of " + ", ".join(f.metadata["choices"])
    if "range" in f.metadata:
        lo, hi, lo_open, hi_open = f.metadata["range"]
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi if isinstance(hi, int) else format(hi, 'g')}")
        return "must be " + " and ".join(parts)
    return f"must be of type {kind}"


def apply_dict(cfg: Config, overrides: dict, source: str = "config") -> Config:
    """Return a new Config with the values of a nested {section: {key: value}} dict applied."""
    if overrides is None:
        return cfg
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source} must be a mapping of sections ({', '.join(SECTIONS)})")
    new = dataclasses.replace(cfg)
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section '{section}' in {source}; sections are: {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' in {source} must be a mapping of keys to values")
        current = getattr(new, section)
        fields = {f.name: f for f in dataclasses.fields(current)}
        changes = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(
                    f"unknown config key '{section}.{key}' in {source}; keys in '{section}': {', '.join(fields)}"
                )
            changes[key] = _coerce(f"{section}.{key}", fields[key], value)
        setattr(new, section, dataclasses.replace(current, **changes))
    return new


def load_yaml(path: str | Path) -> dict:
    import yaml  # imported when YAML is read or written: `predict` and `serve` never do

    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {path} is {path.stat().st_size} bytes; a config is a few KB (at most {MAX_CONFIG_BYTES})"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = _safe_yaml(text, f"config file {path}")
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(
            f"config file {path} is not valid YAML{line}; fix it or start from the shipped config.yaml"
        ) from None
    return data or {}


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, value parsed as YAML scalar)."""
    import yaml

    if len(text) > MAX_SET_CHARS:
        raise ConfigError(
            f"--set {_show(text)} is {len(text):,} characters long; a setting is at most "
            f"{MAX_SET_CHARS:,} (put large values in a --config file)"
        )
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set expects section.key=value (for example schedule.name=cosine); got {_show(text)}")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = _safe_yaml(raw, f"--set {dotted}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return section, key, value


def _safe_yaml(text: str, where: str) -> Any:
    """yaml.safe_load, bounded: no aliases (a 1 KB file of nested aliases, "billion laughs", expands to
    gigabytes), at most MAX_YAML_DEPTH levels of nesting (judged from the token stream, which is read only up to
    the first level too deep, before anything is built), integers of at most MAX_YAML_INT_CHARS characters, and
    no key twice in one mapping (YAML keeps the last one silently). Each breach is one ConfigError line naming
    ``where``; other YAML errors are yaml.YAMLError, for the caller to word."""
    import yaml

    depth = 0
    for token in yaml.scan(text):
        if isinstance(token, yaml.AliasToken):
            raise ConfigError(f"{where} uses a YAML alias (*name); write the value out instead")
        if isinstance(
            token,
            (
                yaml.BlockMappingStartToken,
                yaml.BlockSequenceStartToken,
                yaml.FlowMappingStartToken,
                yaml.FlowSequenceStartToken,
            ),
        ):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{where} is nested more than {MAX_YAML_DEPTH} levels deep (line "
                    f"{token.start_mark.line + 1}); a config is section: key: value"
                )
        elif isinstance(token, (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)):
            depth -= 1
    loader = _strict_loader()(text, where)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@functools.lru_cache(maxsize=1)
def _strict_loader():
    """The loader class, made on first use: yaml is imported only when YAML is read or written."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses a key given twice in one mapping and integers too long to be a setting;
        ``where`` names the text in those messages."""

        def __init__(self, stream, where: str = "config"):
            super().__init__(stream)
            self.where = where

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        again = key in seen
                    except TypeError:  # unhashable: SafeLoader reports it
                        continue
                    if again:
                        raise ConfigError(
                            f"{self.where} gives key {_show(key)} twice (line {key_node.start_mark.line + 1}); keep one"
                        )
                    seen.add(key)
            return super().construct_mapping(node, deep)

        def construct_yaml_int(self, node):
            value = self.construct_scalar(node)
            if len(value) > MAX_YAML_INT_CHARS:
                raise ConfigError(
                    f"{self.where} holds an integer of {len(value):,} characters (line "
                    f"{node.start_mark.line + 1}); a setting needs at most {MAX_YAML_INT_CHARS}"
                )
            return super().construct_yaml_int(node)

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    return StrictLoader


def _show(value: Any) -> str:
    """A value for an error message, cut short however large or deep it is."""
    return _SHORT.repr(value)


def build_config(files: list[str | Path] = (), overrides: dict | None = None, sets: list[str] = ()) -> Config:
    """defaults <- each YAML file in order <- overrides dict (from flags) <- --set assignments."""
    cfg = Config()
    for path in files:
        cfg = apply_dict(cfg, load_yaml(path), source=str(path))
    if overrides:
        cfg = apply_dict(cfg, overrides, source="command-line flags")
    for text in sets:
        section, key, value = parse_assignment(text)
        cfg = apply_dict(cfg, {section: {key: value}}, source=f"--set {text}")
    return cfg


def resolve_config(config_file: str | Path | None = None, flags: dict | None = None, sets: list[str] = ()) -> Config:
    """What `train`, `tune` and `data --preview-augment` run with: defaults <- ./config.yaml (when the current
    folder has one) <- config_file <- flags {section: {key: value}} <- --set assignments."""
    files = [Path("config.yaml")] if Path("config.yaml").is_file() else []
    if config_file and not (files and Path(config_file).resolve() == files[0].resolve()):
        files.append(Path(config_file))
    return build_config(files, flags, list(sets))


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from a resolved dict (as stored in checkpoints and run folders)."""
    return apply_dict(Config(), data, source="stored config")


def dump_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
