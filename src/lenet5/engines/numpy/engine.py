"""NumpyEngine: a model of lenet5.models trained with the hand-written NumPy layers (implements
engines.base.Engine).

A training step is the network's forward and backward over the batch (loss and gradient) in training mode,
then one optimizer update of the parameters; logits are computed in evaluation mode (BatchNorm: the running
statistics). Where the forward and backward run is the executor's business (executors.py): the batch is cut
into pieces dealt to ``threads`` workers (pieces.py), which run in the calling thread or, with several
workers, partly in worker processes (process_pool.py, workers.py); the same seed and ``threads`` give the
same bits wherever each piece ran. A model with BatchNorm runs each training batch whole, in the calling
thread, whatever ``threads`` says: BatchNorm needs the statistics of the whole batch.

Speed on a small CPU also comes from these choices:

- BLAS runs single-threaded inside the engine (threadpoolctl): here OpenBLAS with 2 threads on these small
  matrices was several times slower than with 1; the workers are the parallelism instead.
- Parameters and gradients each live in one flat buffer, so the optimizer is a few whole-buffer operations.
- Each worker keeps its activations and scratch arrays from step to step (a workspace, see layers.py):
  allocating them afresh cost page faults that took as long as the arithmetic.
"""

from __future__ import annotations

import numpy as np

from lenet5.blas import single_threaded_blas
from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.engines.base import Engine
from lenet5.engines.numpy.executors import create_executor, default_threads
from lenet5.engines.numpy.model import parameter_count
from lenet5.engines.numpy.optim import create_optimizer
from lenet5.errors import Lenet5Error
from lenet5.models import NUM_CLASSES, has_batchnorm, initial_weights


class NumpyEngine(Engine):
    """A model of lenet5.models with its optimizer, in float32 (default) or float64.

    ``threads``: 0 picks the default (2 workers on a machine with at least 2 cores), 1 runs everything in the
    calling thread, n deals the pieces of each batch to n workers (a model with BatchNorm: always 1). ``seed``
    fixes the initial weights: same seed and same thread count, same run, bit for bit, whichever workers ran
    in processes.
    """

    name = "numpy"

    def __init__(
        self,
        model: ModelConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        *,
        seed: int = 0,
        dtype: str = "float32",
        label_smoothing: float = 0.0,
        threads: int = 0,
        device: str = "auto",
    ) -> None:
        if device not in ("auto", "cpu"):
            raise Lenet5Error(f"the numpy engine runs on the CPU; --device {device} needs --engine torch")
        model = model or ModelConfig()
        optimizer = optimizer or OptimizerConfig()
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: default), got {threads}")
        self.model_name = model.name
        self.dtype = np.dtype(dtype)
        self.input_dtype = self.dtype  # what train_step and logits compute in
        self.label_smoothing = float(label_smoothing)
        self.threads = 1 if has_batchnorm(model.name) else threads or default_threads()

        self._grad = np.zeros(parameter_count(model.name), dtype=self.dtype)  # the batch's gradient, flat
        self.executor = create_executor(model.name, self.dtype, self.label_smoothing, self.threads, self._grad)
        self.net = self.executor.net  # its parameters lie where every worker reads them
        self.net.load_state_dict(initial_weights(model.name, model.init, seed, dtype))
        self.optimizer = create_optimizer(optimizer, self.net.size, self.dtype)

    @property
    def workers_in_use(self) -> int:
        """Workers running at once now: this thread and the worker processes given work."""
        return self.executor.workers_in_use

    # --- training and inference -------------------------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        x = np.asarray(x, dtype=self.dtype)
        y = np.asarray(y, dtype=np.int64)
        self.net.train(True)
        with single_threaded_blas():
            loss, n_correct = self.executor.loss_and_grad(x, y)  # the gradient lands in self._grad
            self.optimizer.step(self.net.params, self._grad, float(lr))
        return loss, n_correct

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, dict[str, np.ndarray]]:
        """(loss, n_correct, {name: gradient}) of one batch without updating anything (for checks, not
        part of the Engine protocol). The gradients are of the data loss only, before penalties. In training
        mode: BatchNorm's running statistics move as in a training step."""
        self.net.train(True)
        with single_threaded_blas():
            x, y = np.asarray(x, dtype=self.dtype), np.asarray(y, dtype=np.int64)
            loss, n_correct = self.executor.loss_and_grad(x, y)
        grads = {key: g.copy() for key, g in self.net.named_views(self._grad).items()}
        return loss, n_correct, grads

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        out = np.empty((len(x), NUM_CLASSES), dtype=self.dtype)
        self.net.train(False)
        with single_threaded_blas():
            self.executor.logits(x, out)
        return out

    def hurry(self) -> None:
        """A stop was asked for (Ctrl-C): wait only briefly for a silent worker process, so the step ends and
        the run saves and stops."""
        self.executor.hurry()

    # --- state ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """The parameters, then the buffers (BatchNorm's running statistics), under torch's names."""
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.net.load_state_dict(state)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.optimizer.load_state_dict(state)

    def close(self) -> None:
        """Stop the worker processes, if any; the engine stays usable (a later step starts them again)."""
        self.executor.close()
