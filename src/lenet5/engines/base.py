"""The Engine protocol that both engines (numpy, torch) implement, with the same meaning.

- Inputs are float32 (or float64 for checks) NCHW batches, already normalized; labels are int64.
- Weights use PyTorch's names and layouts (``conv1.weight`` (6,1,5,5), ``fc1.weight`` (120,400), ...), so a
  state dict written by one engine loads in the other and gives the same logits.
- Engines know nothing about files, plots or the CLI.
- An engine may hold processes or memory outside Python's reach: ``close()`` gives them back, and
  ``with create_engine(...) as engine:`` closes it at the end of the block. Both engines subclass Engine, which
  gives them the ``with`` support.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Engine(Protocol):
    name: str  # "numpy" or "torch"
    model_name: str  # a name of lenet5.models.MODELS
    input_dtype: np.dtype  # float32 or float64: what train_step and logits want their x in

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        """Forward, backward and one optimizer update on the batch x (N,1,28,28), y (N,).

        Returns (mean data loss of the batch, number of correct predictions); the loss excludes the
        L1/L2 penalties. Under torch.distributed the torch engine takes its rank's share of the batch and
        returns the totals over all ranks.
        """

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, 10) as a NumPy array, no gradient work."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the weights under PyTorch's names and layouts."""

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load weights; raises ValueError naming the key when a name or shape does not fit."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Everything the optimizer needs to continue exactly (moments, step count) as arrays."""

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what optimizer_state() returned."""

    def hurry(self) -> None:
        """A stop was asked for (Ctrl-C): from now on wait only briefly for anything the engine waits on, so
        the current step ends soon."""

    def close(self) -> None:
        """Give back what the engine holds besides its weights (the NumPy engine's worker processes). Safe to
        call more than once; the engine stays usable and takes again what it needs."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
