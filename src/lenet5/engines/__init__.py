"""Engines: the NumPy network written by hand, and its PyTorch twin. Both implement engines.base.Engine.

ENGINES is the one list of engines: config validation, the CLI's choices and ``predict --engine`` derive
from it. Adding an engine = its own folder implementing engines.base.Engine + one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lenet5.errors import Lenet5Error

if TYPE_CHECKING:
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.engines.base import Engine

# name -> (module, class, what to install when the module's imports fail). Modules load only when chosen.
ENGINES = {
    "numpy": ("lenet5.engines.numpy.engine", "NumpyEngine", None),
    "torch": (
        "lenet5.engines.torch.engine",
        "TorchEngine",
        'the torch engine needs PyTorch: pip install -e ".[torch]"',
    ),
}
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda", "mps")  # auto: the best available; only the torch engine leaves the CPU


def create_engine(
    engine: str,
    model: ModelConfig,
    optimizer: OptimizerConfig,
    *,
    seed: int = 0,
    dtype: str = "float32",
    label_smoothing: float = 0.0,
    threads: int = 0,
    device: str = "auto",
) -> Engine:
    """Build an engine with freshly initialised weights (seeded). An engine's module is imported only when
    it is chosen (so torch only for engine='torch')."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines are: {', '.join(ENGINES)}")
    module_name, class_name, install_hint = ENGINES[engine]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if install_hint is None or module_name.startswith(str(exc.name)):
            raise
        raise Lenet5Error(f"{install_hint} (or use --engine numpy)") from None
    return getattr(module, class_name)(
        model, optimizer, seed=seed, dtype=dtype, label_smoothing=label_smoothing, threads=threads, device=device
    )
