"""One checkpoint format: a safetensors file with the weights and the metadata to use them.

Tensors: the weights under PyTorch's names (``conv1.weight`` ...), with the model's buffers beside them where it
has any (BatchNorm's ``bn1.running_mean``, ``bn1.running_var`` and ``bn1.num_batches_tracked``, an int64 count),
as torch's state_dict; in ``last.safetensors`` also the optimizer state under ``optimizer.<key>`` (one value per
trained parameter). Metadata (strings, JSON where structured): format and
format_version, engine, model, config, epoch, metrics, normalization, calibration (the temperature fitted on
the validation split, see calibration.py) and the trainer's state for resume.
Loading never runs code (safetensors has no code path; ``.pth`` files go through ``weights_only=True``).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lenet5 import MNIST_MEAN, MNIST_STD
from lenet5.atomic import atomic_path
from lenet5.errors import CheckpointError, first_line
from lenet5.models import MODELS, architecture, is_count, model_for_weights, parameter_shapes, state_shapes

FORMAT = "lenet5-checkpoint"
FORMAT_VERSION = 1
OPTIMIZER_PREFIX = "optimizer."
BEST_FILE = "model.safetensors"  # the model of a run folder (training/callbacks.py writes it)
# The columns of a run's history, one row per epoch: in last.safetensors' trainer_state and in history.csv.
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
BUNDLED = Path(__file__).parent / "bundled" / "lenet5-modern-distortions.safetensors"  # see bundled/MODEL_CARD.md
# the bundled reader of predict, serve and evaluate: BUNDLED and two more LeNet-5s of the same recipe (other
# seeds), read as a committee with the reject rule fitted for the three (BUNDLED's calibration.committee_reject)
BUNDLED_READERS = (
    BUNDLED,
    BUNDLED.with_name(f"{BUNDLED.stem}-2.safetensors"),
    BUNDLED.with_name(f"{BUNDLED.stem}-3.safetensors"),
)
MAX_HEADER_BYTES = 16 * 1024 * 1024  # a real header is a few KB; refuse giant declared sizes early
# Bounds on the metadata a checkpoint may carry, checked before parsing: a real trainer_state (the longest
# value, with one history row per epoch) is a few KB, nesting is 3 deep, integers are counters and seeds.
MAX_META_JSON_CHARS = 1024 * 1024
MAX_META_DEPTH = 32
MAX_META_INT_DIGITS = 40  # 128-bit seeds fit; a 400-digit integer does not become an OverflowError later
MAX_META_WORD_CHARS = 64  # format, format_version, engine, model, epoch
# a string, or an unterminated one up to the end: every quote starts a match, so the scan stays linear
_JSON_STRING = re.compile(r'"(?:[^"\\]+|\\.)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


@dataclass
class Checkpoint:
    weights: dict[str, np.ndarray]
    meta: dict[str, Any]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def model(self) -> str:
        return self.meta["model"]


def save_checkpoint(
    path: str | Path,
    weights: dict[str, np.ndarray],
    *,
    engine: str,
    model: str,
    config: dict | None = None,
    epoch: int = 0,
    metrics: dict | None = None,
    optimizer: dict[str, np.ndarray] | None = None,
    trainer_state: dict | None = None,
    calibration: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    from safetensors.numpy import save

    # np.asarray(order="C"), not np.ascontiguousarray, which turns a 0-d num_batches_tracked into shape (1,)
    tensors = {name: np.asarray(value, order="C") for name, value in weights.items()}
    for key, value in (optimizer or {}).items():
        tensors[OPTIMIZER_PREFIX + key] = np.ascontiguousarray(value)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "engine": engine,
        "model": model,
        "config": json.dumps(config or {}),
        "epoch": str(int(epoch)),
        "metrics": json.dumps(metrics or {}),
        "normalization": json.dumps({"mean": MNIST_MEAN, "std": MNIST_STD}),
    }
    if trainer_state is not None:
        metadata["trainer_state"] = json.dumps(trainer_state)
    if calibration is not None:
        metadata["calibration"] = json.dumps(calibration)
    path = Path(path)
    data = save(tensors, metadata=metadata)  # bytes, written by Python: a full disk is an OSError with its errno
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def resolve_model(spec: str | Path | None, runs: str | Path = "runs") -> Path:
    """The model file behind what people type for --model, the same way for every command:

    nothing -> the model bundled with lenet5; ``latest`` -> model.safetensors of the newest run under ``runs``;
    a run folder -> its model.safetensors; anything else (.safetensors, .pth/.pt, .onnx) -> that file.
    """
    if spec is None or str(spec) == "":
        if not BUNDLED.is_file():
            raise CheckpointError(f"the bundled model is missing from this install ({BUNDLED}); pass --model")
        return BUNDLED
    if str(spec) == "latest":
        found = (
            [p / BEST_FILE for p in Path(runs).glob("*") if (p / BEST_FILE).is_file()] if Path(runs).is_dir() else []
        )
        if not found:
            raise CheckpointError(
                f"--model latest: no run under {runs}/ has a {BEST_FILE} yet; train one "
                "(lenet5 train) or leave out --model to use the bundled model"
            )
        return max(found, key=lambda p: p.stat().st_mtime)
    path = Path(spec)
    if path.is_dir():
        if not (path / BEST_FILE).is_file():
            raise CheckpointError(
                f"{path} is a folder without {BEST_FILE}; a run folder holds one once its first epoch is done"
            )
        return path / BEST_FILE
    return path


def family(model: str) -> str:
    """What kind of net a model is, for messages: 'LeNet-5' for modern and classic, 'VGG-style net' for vgg
    ... (models.Architecture.family); 'model' for a name no model has."""
    try:
        return architecture(model).family
    except ValueError:
        return "model"


def describe_model(path: Path) -> str:
    """How a model file is named in messages: 'the bundled model' for the bundled one ('bundled model 2 of 3'
    for the other members of the bundled reader), else its path."""
    if Path(path) == BUNDLED:
        return "the bundled model"
    if Path(path) in BUNDLED_READERS:
        return f"bundled model {BUNDLED_READERS.index(Path(path)) + 1} of {len(BUNDLED_READERS)}"
    return str(path)


def bundled_reader() -> list[Path]:
    """The files of the bundled reader (BUNDLED_READERS); CheckpointError when the install lacks one."""
    for path in BUNDLED_READERS:
        if not path.is_file():
            raise CheckpointError(f"the bundled model is missing from this install ({path}); pass --model")
    return list(BUNDLED_READERS)


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> Checkpoint:
    """Load and validate a checkpoint (.safetensors, or a PyTorch state_dict .pth/.pt with our names). A file
    the system cannot read (EIO from /proc/self/mem, a name too long, no permission) is one CheckpointError."""
    path = Path(path)
    try:
        return _load_checkpoint(path, expect_model)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _load_checkpoint(path: Path, expect_model: str | None) -> Checkpoint:
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file (train one with `lenet5 train`)")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file; pass the .safetensors file inside the run folder")
    if path.suffix in (".pth", ".pt"):
        from lenet5.pth import load_pth_state_dict

        weights = load_pth_state_dict(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "engine": "torch",
            "model": None,
            "config": {},
            "epoch": 0,
            "metrics": {},
            "normalization": {"mean": MNIST_MEAN, "std": MNIST_STD},
        }
        ckpt = Checkpoint(weights, meta, {}, path)
    else:
        ckpt = _load_safetensors(path)
    model = ckpt.meta.get("model") or _infer_model(ckpt.weights, path)
    ckpt.meta["model"] = model
    _check_weights(ckpt.weights, model, path)
    if expect_model is not None and model != expect_model:
        raise CheckpointError(f"{path}: holds a '{model}' {family(model)}, but a '{expect_model}' one was expected")
    return ckpt


def _load_safetensors(path: Path) -> Checkpoint:
    from safetensors import safe_open

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{path}: not a checkpoint (file too short: {size} bytes)")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise CheckpointError(f"{path}: not a safetensors checkpoint, or truncated (header claims {header_len} bytes)")
    with open(path, "rb") as f:
        f.seek(8)
        header = f.read(header_len)
    _check_header(header, size - 8 - header_len, path)  # every tensor's name, dtype and shape, before its data
    try:
        with safe_open(str(path), framework="np") as f:
            raw_meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises several error types for corrupt files
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({first_line(exc)})") from None
    if raw_meta and raw_meta.get("format") not in (None, FORMAT):
        raise CheckpointError(f"{path}: not a lenet5 checkpoint (format {_clip(raw_meta.get('format'))})")
    try:
        for key in ("format_version", "engine", "model", "epoch"):
            if key in raw_meta and len(raw_meta[key]) > MAX_META_WORD_CHARS:
                raise ValueError(f"{key} is {len(raw_meta[key]):,} characters long")
        version = int(raw_meta.get("format_version", FORMAT_VERSION))
        meta = {
            "format_version": version,
            "engine": raw_meta.get("engine"),
            "model": raw_meta.get("model"),
            "config": _meta_json(raw_meta, "config", {}),
            "epoch": int(raw_meta.get("epoch", 0)),
            "metrics": _meta_json(raw_meta, "metrics", {}),
            "normalization": _meta_json(raw_meta, "normalization", None) or {"mean": MNIST_MEAN, "std": MNIST_STD},
            "trainer_state": _meta_json(raw_meta, "trainer_state", None),
            "calibration": _meta_json(raw_meta, "calibration", None),
        }
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({first_line(exc)})") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this lenet5 reads ({FORMAT_VERSION}); upgrade lenet5"
        )
    _check_normalization(meta["normalization"], path)
    _check_calibration(meta["calibration"], path)
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    optimizer = {k[len(OPTIMIZER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)}
    return Checkpoint(weights, meta, optimizer, path)


FLOAT_DTYPES = {"F16": 2, "F32": 4, "F64": 8}  # safetensors' names of the float dtypes NumPy reads, with their sizes
INT_DTYPES = {"I8": 1, "U8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8}
ITEM_SIZES = {**FLOAT_DTYPES, **INT_DTYPES, "BOOL": 1, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_HEADER_DEPTH = 4  # {name: {"shape": [...], ...}} is 3 deep


def _check_header(raw: bytes, data_bytes: int, path: Path) -> None:
    """Judge a safetensors header before any tensor is read: the tensors must be the parameters of one of
    models.MODELS, each with a float dtype and exactly its shape, plus (in last.safetensors) the optimizer
    state: an integer ``step`` scalar and float buffers of one value per parameter. Each tensor's byte range
    must match its shape and lie in the file. So a small sparse file whose header claims a 2 GB conv1.weight
    is refused here, in one line, without reading 2 GB."""
    try:
        text = raw.decode("utf-8")
        depth = _json_depth(text)
        if depth > MAX_HEADER_DEPTH:
            raise ValueError(f"nested {depth} levels deep")

        def bounded_int(digits: str) -> int:
            if len(digits.lstrip("-")) > MAX_META_INT_DIGITS:
                raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits")
            return int(digits)

        header = json.loads(text, parse_int=bounded_int)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            raise ValueError("__metadata__ is not an object")
        entries = {}
        for name, info in header.items():
            if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
                raise ValueError(f"tensor {_clip(name)} has no dtype")
            shape, offsets = info.get("shape"), info.get("data_offsets")
            if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape) and len(shape) <= 8):
                raise ValueError(f"tensor {_clip(name)} has shape {_clip(shape)}")
            if not (
                isinstance(offsets, list)
                and len(offsets) == 2
                and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes
            ):
                raise ValueError(
                    f"tensor {_clip(name)} has data offsets {_clip(offsets)} in {data_bytes} bytes of data"
                )
            entries[name] = (info["dtype"], tuple(shape), offsets[1] - offsets[0])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint (its header: {first_line(exc)})") from None
    weights = {k: v for k, v in entries.items() if not k.startswith(OPTIMIZER_PREFIX)}
    optimizer = {k[len(OPTIMIZER_PREFIX) :]: v for k, v in entries.items() if k.startswith(OPTIMIZER_PREFIX)}
    model = meta.get("model") if isinstance(meta.get("model"), str) and meta.get("model") else None
    model = model or _infer_model(weights, path)
    expected = _expected_shapes(model, weights, path)
    n_params = sum(math.prod(shape) for shape in parameter_shapes(model).values())  # buffers have no optimizer state
    for name, (dtype, shape, nbytes) in entries.items():
        shown = name if len(name) <= 60 else name[:57] + "..."
        itemsize = ITEM_SIZES.get(dtype)
        if itemsize is not None and nbytes != math.prod(shape) * itemsize:
            raise CheckpointError(
                f"{path}: corrupt or truncated checkpoint ({shown} holds {nbytes} bytes, its "
                f"shape {shape} of {dtype} needs {math.prod(shape) * itemsize})"
            )
        if name in expected:
            allowed, need = (INT_DTYPES if is_count(name) else FLOAT_DTYPES), expected[name]
        elif name == OPTIMIZER_PREFIX + "step":
            allowed, need = INT_DTYPES, (() if shape == () else (1,))
        else:
            allowed, need = FLOAT_DTYPES, (n_params,)
        if shape != tuple(need):
            needs = f"the {model} {family(model)} needs" if name in expected else "its optimizer state needs"
            raise CheckpointError(f"{path}: {shown} has shape {shape}, {needs} {tuple(need)}")
        if dtype not in allowed:
            kind = "floating point (F16, F32 or F64)" if allowed is FLOAT_DTYPES else "an integer"
            raise CheckpointError(f"{path}: {shown} has dtype {_clip(dtype)}, expected {kind}")
    if len(optimizer) > 8:
        raise CheckpointError(f"{path}: {len(optimizer)} optimizer tensors; no optimizer here keeps more than 3")


def _meta_json(raw_meta: dict[str, str], key: str, default: Any) -> Any:
    """One JSON metadata value, bounded before it is parsed: its length, its nesting depth, its integers'
    digits. Raises ValueError (naming the key) past a bound, so the caller reports one line."""
    text = raw_meta.get(key)
    if text is None:
        return default
    if len(text) > MAX_META_JSON_CHARS:
        raise ValueError(f"{key} is {len(text):,} characters long, over {MAX_META_JSON_CHARS:,}")
    depth = _json_depth(text)
    if depth > MAX_META_DEPTH:
        raise ValueError(f"{key} is nested {depth} levels deep, over {MAX_META_DEPTH}")

    def bounded_int(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_META_INT_DIGITS:
            raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits")
        return int(digits)

    try:
        return json.loads(text, parse_int=bounded_int)
    except ValueError as exc:
        raise ValueError(f"{key}: {first_line(exc)}") from None


def _json_depth(text: str) -> int:
    """The deepest nesting of [ and { in a JSON text, outside strings (linear time, no recursion)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _clip(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_calibration(calibration: Any, path: Path) -> None:
    """Absent, or what calibration.check_calibration accepts."""
    if calibration is None:
        return
    from lenet5.calibration import check_calibration

    try:
        check_calibration(calibration)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _check_normalization(norm: Any, path: Path) -> None:
    """The (mean, std) inputs are normalized with: finite numbers, std > 0 (else every prediction is NaN)."""
    values = [norm.get(k) for k in ("mean", "std")] if isinstance(norm, dict) else [None]
    if (
        not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        or values[1] <= 0
    ):
        raise CheckpointError(
            f"{path}: checkpoint normalization {str(norm)[:80]} is damaged (it needs a finite mean and a std > 0)"
        )


def _infer_model(weights: dict[str, np.ndarray], path: Path) -> str:
    model = model_for_weights(weights)
    if model is None:
        raise CheckpointError(
            f"{path}: not a LeNet-5 checkpoint (its tensors {sorted(weights)[:4]}... match none of "
            f"the models: {', '.join(MODELS)})"
        )
    return model


def _expected_shapes(model: str, names, path: Path) -> dict[str, tuple[int, ...]]:
    """The shapes of the state dict of ``model`` (parameters and buffers); CheckpointError when it is unknown or
    ``names`` are not exactly its state dict's."""
    try:
        expected = state_shapes(model)
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: unknown model {_clip(model)} in checkpoint metadata") from None
    missing = [k for k in expected if k not in names]
    extra = [k for k in names if k not in expected]
    if missing or extra:
        what = f"missing {missing}" if missing else f"unexpected {[k[:60] for k in extra[:4]]}"
        raise CheckpointError(f"{path}: does not fit the {model} {family(model)} ({what})")
    return expected


def _check_weights(weights: dict[str, np.ndarray], model: str, path: Path) -> None:
    expected = _expected_shapes(model, weights, path)
    for name, shape in expected.items():
        value = weights[name]
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(value.shape)}, the {model} {family(model)} needs {tuple(shape)}"
            )
        if is_count(name):
            if value.dtype.kind not in "iu" or value < 0:
                raise CheckpointError(f"{path}: {name} is {value!r}, expected a count (a whole number >= 0)")
        elif value.dtype.kind != "f":
            raise CheckpointError(f"{path}: {name} has dtype {value.dtype}, expected floating point")
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: {name} holds NaN or infinite values; the checkpoint is damaged")


def check_trainer_state(state, steps_per_epoch: int, epochs: int, where: str) -> dict:
    """The trainer_state of a last.safetensors, checked whole (types, ranges, consistency) and normalized.

    Raises CheckpointError naming what is wrong: a resumed run must start exactly where the saved one was.
    """

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: its training state is damaged ({what}); it cannot be resumed")

    def count(value, name: str, hi: float = math.inf) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
            raise bad(f"{name} is {str(value)[:40]}, expected a whole number from 0 to {hi}")
        return value

    def number(value, name: str, optional: bool = False) -> float | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"{name} is {str(value)[:40]}, expected a finite number")
        return float(value)

    def section(value, name: str, keys: tuple[str, ...]) -> dict:
        if not isinstance(value, dict) or any(k not in value for k in keys):
            raise bad(f"{name} must be a mapping with {', '.join(keys)}")
        return value

    state = section(
        state,
        "trainer_state",
        ("epoch", "batch", "step", "partial", "seconds", "history", "schedule", "early_stopping"),
    )
    epoch = count(state["epoch"], "epoch", 10**6)
    batch = count(state["batch"], "batch", steps_per_epoch - 1)
    step = count(state["step"], "step", 10**12)
    if step != epoch * steps_per_epoch + batch:
        raise bad(f"step {step} is not epoch {epoch} x {steps_per_epoch} batches + batch {batch}")
    if epoch > epochs or (epoch == epochs and batch):
        raise bad(f"it is past epoch {epochs}, the last one configured")
    partial = section(state["partial"], "partial", ("loss_sum", "correct", "seen"))
    partial = {
        "loss_sum": number(partial["loss_sum"], "partial.loss_sum"),
        "correct": count(partial["correct"], "partial.correct", 10**12),
        "seen": count(partial["seen"], "partial.seen", 10**12),
    }
    history = state["history"]
    if not isinstance(history, list) or len(history) != epoch:
        raise bad(f"history must list the {epoch} epochs done")
    rows = []
    for i, row in enumerate(history, start=1):
        row = section(row, f"history[{i}]", HISTORY_FIELDS)
        rows.append(
            {
                k: (
                    count(row[k], f"history[{i}].epoch", 10**6)
                    if k == "epoch"
                    else number(row[k], f"history[{i}].{k}", optional=k.startswith("val_"))
                )
                for k in HISTORY_FIELDS
            }
        )
    schedule = section(state["schedule"], "schedule", ("scale", "best", "bad_epochs"))
    schedule = {
        "scale": number(schedule["scale"], "schedule.scale"),
        "best": number(schedule["best"], "schedule.best", optional=True),
        "bad_epochs": count(schedule["bad_epochs"], "schedule.bad_epochs", 10**6),
    }
    stopping = section(state["early_stopping"], "early_stopping", ("best", "best_epoch", "bad_epochs"))
    stopping = {
        "best": number(stopping["best"], "early_stopping.best", optional=True),
        "best_epoch": count(stopping["best_epoch"], "early_stopping.best_epoch", epoch),
        "bad_epochs": count(stopping["bad_epochs"], "early_stopping.bad_epochs", 10**6),
    }
    return {
        "epoch": epoch,
        "batch": batch,
        "step": step,
        "partial": partial,
        "seconds": number(state["seconds"], "seconds"),
        "history": rows,
        "schedule": schedule,
        "early_stopping": stopping,
    }
