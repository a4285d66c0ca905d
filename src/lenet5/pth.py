"""Read LeNet-5 weights from a PyTorch .pth/.pt file safely: torch.load(weights_only=True) and nothing else.

weights_only=True unpickles only tensors, plain containers and numbers; a file whose pickle would call
any other function (code execution) is refused before anything in it runs.

A small file must not cost gigabytes: the file and the sizes its zip archive declares are bounded before
torch.load, and every tensor's kind (dense, on the CPU, real floating point) and element count is checked
against what a LeNet-5 holds before anything is converted (a 250 KB file can hold a stride-0 view that
claims 37 GiB). The one integer entry a state dict may have is a count (BatchNorm's ``num_batches_tracked``,
int64 in torch): an integer tensor is accepted for a count's key and no other.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from lenet5.errors import CheckpointError
from lenet5.models import MODELS, is_count, parameter_shapes

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
# What a LeNet-5 holds (48,000 elements in its largest tensor, ~62,000 in all); anything larger is not one.
_SHAPES = [shape for model in MODELS for shape in parameter_shapes(model).values()]
MAX_TENSOR_ELEMENTS = max(math.prod(shape) for shape in _SHAPES)
MAX_TOTAL_ELEMENTS = 2 * max(sum(math.prod(s) for s in parameter_shapes(m).values()) for m in MODELS)
MAX_DIMS = max(len(shape) for shape in _SHAPES)
MAX_TENSORS = 64
# A LeNet-5 .pth is ~250 KB (float32; a training checkpoint with optimizer state a few MB).
MAX_PTH_BYTES = 16 * 1024 * 1024
MAX_ZIP_ENTRIES = 1024
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COUNT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)  # a count: any integer tensor


def load_pth_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A plain state_dict, or one under 'state_dict'/'model'/'model_state_dict', as float NumPy arrays (int64
    for the counts, BatchNorm's num_batches_tracked).

        A 'module.' prefix (from DistributedDataParallel) is removed. Every failure becomes one CheckpointError
        line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    _check_file_size(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says enough
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way torch.load can fail becomes one clear line
        raise CheckpointError(_describe_failure(path, exc)) from None
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: not a PyTorch state dict (expected a mapping of names to tensors)")
    if len(obj) > MAX_TENSORS:
        raise CheckpointError(f"{path}: holds {len(obj)} entries; a LeNet-5 state dict has about ten")
    total = 0
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: not a PyTorch state dict ({_short_repr(key)} holds {type(value).__name__}, expected a tensor)"
            )
        total += _check_tensor(path, key, value)
        if total > MAX_TOTAL_ELEMENTS:
            raise CheckpointError(
                f"{path}: its tensors hold over {MAX_TOTAL_ELEMENTS:,} elements in all, "
                "more than a LeNet-5 has; not a LeNet-5 checkpoint"
            )
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():  # only now, with every size known to be small, is anything converted
        name = key[len("module.") :] if key.startswith("module.") else key
        try:
            out[name] = np.array(value.detach().to(_target_dtype(value)).contiguous().numpy(), copy=True)
        except Exception as exc:  # noqa: BLE001 - an exotic tensor torch cannot convert: one clear line
            raise CheckpointError(
                f"{path}: tensor {_short_repr(key)} cannot be read as an array "
                f"({type(exc).__name__}: {_first_line(exc)})"
            ) from None
    return out


def _target_dtype(value: torch.Tensor) -> torch.dtype:
    """What a checked tensor becomes: a count int64, float64 float64, any other float float32."""
    if value.dtype in COUNT_DTYPES:
        return torch.int64
    return torch.float64 if value.dtype == torch.float64 else torch.float32


def _check_file_size(path: Path) -> None:
    """The file, and (for the zip format) the uncompressed sizes of its records, are bounded: torch.load
    allocates each record's declared size, and a deflated record of zeros is a zip bomb."""
    size = path.stat().st_size
    if size > MAX_PTH_BYTES:
        raise CheckpointError(f"{path}: {size:,} bytes, too large for a LeNet-5 .pth file (at most {MAX_PTH_BYTES:,})")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip (the legacy format) or a damaged one: torch.load says what is wrong
    declared = sum(info.file_size for info in entries[: MAX_ZIP_ENTRIES + 1])
    if len(entries) > MAX_ZIP_ENTRIES or declared > MAX_PTH_BYTES:
        raise CheckpointError(
            f"{path}: its archive declares {len(entries)} records of {declared:,} bytes in all, "
            f"too large for a LeNet-5 .pth file (at most {MAX_PTH_BYTES:,} bytes)"
        )


def _check_tensor(path: Path, key: str, value: torch.Tensor) -> int:
    """Refuse, before any conversion, a tensor that is not a small dense real floating-point CPU tensor (an
    integer one for a count's key, is_count); return its element count."""
    name = _short_repr(key)
    if value.is_nested:
        kind = "a nested tensor"
    elif value.layout != torch.strided:
        kind = f"a sparse tensor ({str(value.layout).removeprefix('torch.')})"
    elif value.device.type != "cpu":
        kind = f"a tensor on the {value.device.type} device" + (" (shapes only, no values)" if value.is_meta else "")
    elif value.is_quantized:
        kind = f"a quantized tensor ({value.dtype})"
    elif value.is_complex():
        kind = f"a complex tensor ({value.dtype})"
    elif is_count(key) and value.dtype not in COUNT_DTYPES + FLOAT_DTYPES:
        raise CheckpointError(f"{path}: tensor {name} has dtype {value.dtype}, expected an integer count")
    elif not is_count(key) and value.dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"{path}: tensor {name} has dtype {value.dtype}, expected floating point")
    else:
        kind = None
    if kind is not None:
        raise CheckpointError(
            f"{path}: tensor {name} is {kind}; a LeNet-5 checkpoint holds dense floating-point "
            "tensors (save model.state_dict() of a CPU model)"
        )
    shape = tuple(value.shape)
    if len(shape) > MAX_DIMS:
        raise CheckpointError(
            f"{path}: tensor {name} has {len(shape)} dimensions; no LeNet-5 tensor has more than {MAX_DIMS}"
        )
    count = math.prod(shape)
    if count > MAX_TENSOR_ELEMENTS:
        raise CheckpointError(
            f"{path}: tensor {name} has shape {shape} ({count:,} elements), more than any LeNet-5 "
            f"tensor ({MAX_TENSOR_ELEMENTS:,}); not a LeNet-5 checkpoint"
        )
    return count


def _short_repr(key) -> str:
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _describe_failure(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "Weights only load failed" in text or "Unsupported global" in text or "Unsupported operand" in text:
        return (
            f"{path}: refused to load: the file holds Python objects or code, not just tensors "
            "(only weights_only-safe .pth files are read)"
        )
    if isinstance(exc, EOFError) or "zip archive" in text or "truncated" in text.lower() or "EOF" in text:
        return f"{path}: truncated or corrupt PyTorch file ({type(exc).__name__})"
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return f"{path}: not a PyTorch .pth file ({type(exc).__name__}{': ' + first if first else ''})"
