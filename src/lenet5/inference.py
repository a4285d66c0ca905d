"""Forward-only runners: a trained model's logits, with nothing of training (evaluation mode: BatchNorm uses
its running statistics).

`predict` and `serve` need only ``logits(x)`` for a few images at a time: no optimizer, no gradients, no worker
processes. ``NumpyRunner`` runs the NumPy engine's own layers (engines/numpy/model.py) in the calling thread;
the torch engine and an exported ``.onnx`` (``export.OnnxModel``, onnxruntime) are the other ways to run a
model. ``evaluate`` on 10,000 images uses the training engine, whose worker processes share the work.
"""

from __future__ import annotations

import numpy as np

from lenet5.blas import single_threaded_blas
from lenet5.models import NUM_CLASSES, check_state_dict

PIECE = 256  # images per forward pass: memory stays that of one piece, however many images


class NumpyRunner:
    """``NumpyRunner(model_name, state).logits(x float32 (N, 1, 28, 28)) -> (N, 10)``; ValueError for a state
    dict that does not fit the model (models.check_state_dict)."""

    def __init__(self, model_name: str, state: dict[str, np.ndarray], dtype=np.float32) -> None:
        from lenet5.engines.numpy.model import Network

        check_state_dict(model_name, state)
        self.model_name = model_name
        self.net = Network(model_name, dtype).train(False)
        self.net.load_state_dict(state)
        self.workspace = self.net.new_workspace()  # scratch arrays reused from call to call (one thread)

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.net.params.dtype)
        out = np.empty((len(x), NUM_CLASSES), dtype=self.net.params.dtype)
        with single_threaded_blas():
            for start in range(0, len(x), PIECE):
                out[start : start + PIECE] = self.net.forward(
                    x[start : start + PIECE], keep_caches=False, ws=self.workspace
                )[0]
        return out

    def close(self) -> None:
        """Nothing to stop: the runner holds no process or thread."""
