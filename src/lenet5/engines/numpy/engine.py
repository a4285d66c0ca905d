"""NumpyEngine: LeNet-5 trained with the hand-written NumPy layers (implements engines.base.Engine).

Speed on a small CPU comes from four choices:

- BLAS runs single-threaded inside the engine (threadpoolctl): here OpenBLAS with 2 threads on these small
  matrices was several times slower than with 1.
- Instead, a batch is cut into pieces of at most 32 or 64 images, dealt to ``threads`` Python threads that run
  at once; NumPy releases the GIL in matmuls and large element-wise operations, so each thread keeps one core
  busy. The pieces' gradients are summed. Small pieces also keep each pass's arrays in cache (one pass over
  128 images cost more per image than four passes over 32). The cut depends only on the batch size and the
  thread count, so results are reproducible bit for bit (but threads=1 and threads=2 round differently).
- Parameters and gradients each live in one flat buffer, so the optimizer is a few whole-buffer operations.
- Each thread keeps its activations and scratch arrays from step to step (a workspace per thread, see
  layers.py): allocating them afresh cost page faults that took as long as the arithmetic.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from lenet5.blas import single_threaded_blas
from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.errors import Lenet5Error
from lenet5.engines.numpy.model import Network
from lenet5.models import initial_weights
from lenet5.engines.numpy.optim import create_optimizer

# Images per forward/backward pass; larger batches run in several passes. Measured here: one thread is ~10%
# faster with passes of 32 (the arrays stay in cache); two threads with 64 (fewer passes, less GIL traffic).
PIECE_ONE_THREAD = 32
PIECE_THREADS = 64
MIN_PIECE = 8  # a batch is shared among the workers only in pieces of at least this many images

def default_threads() -> int:
    """Worker threads for threads=0: 2 when at least 2 cores are available to this process, else 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


class NumpyEngine:
    """LeNet-5 ('modern' or 'classic') with its optimizer, in float32 (default) or float64.

    ``threads``: 0 picks the default (2 workers on a machine with at least 2 cores), 1 runs everything in the
    calling thread, n deals the pieces of each batch to n threads. ``seed`` fixes the initial weights: same
    seed and same thread count, same run, bit for bit.
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
        self.threads = threads or default_threads()

        self.net = Network(model.name, self.dtype)
        weights = self.net.named_views(self.net.params)
        for key, value in initial_weights(model.name, model.init, seed, dtype).items():
            weights[key][...] = value
        self.optimizer = create_optimizer(optimizer, self.net.size, self.dtype)

        # One flat gradient buffer per worker; worker 0's receives the sum.
        self._grads = [np.zeros(self.net.size, dtype=self.dtype) for _ in range(self.threads)]
        self._grad_views = [self.net.layer_views(g) for g in self._grads]
        self._piece_grads = [np.zeros_like(g) for g in self._grads]  # a worker's second, third... piece
        self._piece_grad_views = [self.net.layer_views(g) for g in self._piece_grads]
        self._workspaces = [self.net.new_workspace() for _ in range(self.threads)]
        self._pool = ThreadPoolExecutor(self.threads - 1, "lenet5-numpy") if self.threads > 1 else None

    # --- training and inference -------------------------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        x = np.asarray(x, dtype=self.dtype)
        y = np.asarray(y, dtype=np.int64)
        with single_threaded_blas():
            loss, n_correct = self._loss_and_grad(x, y)
            self.optimizer.step(self.net.params, self._grads[0], float(lr))
        return loss, n_correct

    def _plan(self, n: int) -> list[list[tuple[int, int]]]:
        """Cut n images into pieces and deal them to the workers in turn: [[(start, stop), ...] per worker]."""
        workers = self.threads if self._pool is not None else 1
        piece = PIECE_ONE_THREAD if workers == 1 else PIECE_THREADS
        size = min(piece, max(MIN_PIECE, -(-n // workers)))
        pieces = [(a, min(a + size, n)) for a in range(0, n, size)]
        return [pieces[w::workers] for w in range(workers) if pieces[w::workers]]

    def _run(self, plan, work) -> list:
        """work(worker, pieces) on every worker at once (worker 0 in this thread); results in worker order."""
        futures = [self._pool.submit(work, w, pieces) for w, pieces in enumerate(plan[1:], start=1)]
        first = work(0, plan[0])
        return [first] + [f.result() for f in futures]

    def _loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        n = len(x)

        def work(w: int, pieces: list[tuple[int, int]]) -> tuple[float, int]:
            loss, n_correct = 0.0, 0
            for j, (a, b) in enumerate(pieces):  # the first piece writes the worker's gradient, later ones add
                grads = self._grad_views[w] if j == 0 else self._piece_grad_views[w]
                part = self.net.loss_and_grad(x[a:b], y[a:b], grads, self.label_smoothing, n, self._workspaces[w])
                if j:
                    self._grads[w] += self._piece_grads[w]
                loss, n_correct = loss + part[0], n_correct + part[1]
            return loss, n_correct

        results = self._run(self._plan(n), work)
        for w in range(1, len(results)):  # always summed in the same order: reproducible
            self._grads[0] += self._grads[w]
        return sum(r[0] for r in results), sum(r[1] for r in results)

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, dict[str, np.ndarray]]:
        """(loss, n_correct, {name: gradient}) of one batch without updating anything (for checks, not
        part of the Engine protocol). The gradients are of the data loss only, before penalties."""
        with single_threaded_blas():
            loss, n_correct = self._loss_and_grad(np.asarray(x, dtype=self.dtype), np.asarray(y, dtype=np.int64))
        grads = {key: g.copy() for key, g in self.net.named_views(self._grads[0]).items()}
        return loss, n_correct, grads

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        out = np.empty((len(x), 10), dtype=self.dtype)

        def work(w: int, pieces: list[tuple[int, int]]) -> None:
            for a, b in pieces:  # memory stays that of one piece, however many images
                out[a:b] = self.net.forward(x[a:b], keep_caches=False, ws=self._workspaces[w])[0]

        if len(x):
            with single_threaded_blas():
                self._run(self._plan(len(x)), work)
        return out

    # --- state ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        return {key: view.copy() for key, view in self.net.named_views(self.net.params).items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        shapes = self.net.shapes
        for key in shapes:
            if key not in state:
                raise ValueError(f"state dict is missing '{key}' (the {self.model_name} model needs it)")
        for key, value in state.items():
            if key not in shapes:
                raise ValueError(f"unexpected key '{key}' in state dict for the {self.model_name} model")
            value = np.asarray(value)
            if tuple(value.shape) != shapes[key]:
                raise ValueError(f"'{key}' has shape {tuple(value.shape)}, expected {shapes[key]}")
            if not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"'{key}' has dtype {value.dtype}, expected a floating-point array")
        views = self.net.named_views(self.net.params)
        for key in shapes:
            views[key][...] = np.asarray(state[key], dtype=self.dtype)
        self.net.apply_masks()

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.optimizer.load_state_dict(state)

    def close(self) -> None:
        """Stop the worker threads (also done when the engine is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
