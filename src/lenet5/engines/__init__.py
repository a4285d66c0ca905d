"""Engines: the NumPy network written by hand, and its PyTorch twin. Both implement engines.base.Engine."""

from __future__ import annotations

from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.engines.base import Engine

ENGINES = ("numpy", "torch")


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
    """Build an engine with freshly initialised weights (seeded). torch is imported only for engine='torch'."""
    if engine == "numpy":
        from lenet5.engines.numpy.engine import NumpyEngine

        return NumpyEngine(model, optimizer, seed=seed, dtype=dtype, label_smoothing=label_smoothing, threads=threads)
    if engine == "torch":
        from lenet5.errors import Lenet5Error

        try:
            from lenet5.engines.torch.engine import TorchEngine
        except ImportError as exc:
            if "torch" in str(exc):
                raise Lenet5Error(
                    'the torch engine needs PyTorch: pip install -e ".[torch]" (or use --engine numpy)'
                ) from None
            raise
        return TorchEngine(
            model, optimizer, seed=seed, dtype=dtype, label_smoothing=label_smoothing, threads=threads, device=device
        )
    raise ValueError(f"unknown engine {engine!r}; engines are: {', '.join(ENGINES)}")
