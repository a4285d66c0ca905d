"""Read LeNet-5 weights from a PyTorch .pth/.pt file safely: torch.load(weights_only=True) and nothing else.

weights_only=True unpickles only tensors, plain containers and numbers; a file whose pickle would call
any other function (code execution) is refused before anything in it runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from lenet5.errors import CheckpointError

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def load_pth_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A plain state_dict, or one under 'state_dict'/'model'/'model_state_dict', as float NumPy arrays.

    A 'module.' prefix (from DistributedDataParallel) is removed. Every failure becomes one CheckpointError
    line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
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
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: not a PyTorch state dict ({key!r} holds {type(value).__name__}, expected a tensor)"
            )
        if not value.is_floating_point():
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {value.dtype}, expected floating point")
        name = key[len("module."):] if key.startswith("module.") else key
        out[name] = value.detach().to(torch.float64 if value.dtype == torch.float64 else torch.float32).numpy().copy()
    return out


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
