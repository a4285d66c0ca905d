"""NumpyEngine: LeNet-5 trained with the hand-written NumPy layers (implements engines.base.Engine).

Speed on a small CPU comes from these choices:

- BLAS runs single-threaded inside the engine (threadpoolctl): here OpenBLAS with 2 threads on these small
  matrices was several times slower than with 1.
- Instead, a batch is cut into pieces of at most 64 images (32 with several workers), dealt to ``threads``
  workers that run at once: worker 0 in the calling thread, the others in processes that share the
  parameters, the batch and their gradients with it (workers.py; threads were tried first and ran no faster
  than one, held back by the GIL). While other programs hold the cores, the calling thread does the idle
  processes' pieces (free_cores.py). The pieces' gradients are summed per worker, then in worker order; the cut
  depends only on the batch size and ``threads``, so results are reproducible bit for bit wherever each
  worker ran (but threads=1 and threads=2 round differently). Small pieces keep each pass's arrays in cache.
- Parameters and gradients each live in one flat buffer, so the optimizer is a few whole-buffer operations.
- Each worker keeps its activations and scratch arrays from step to step (a workspace, see layers.py):
  allocating them afresh cost page faults that took as long as the arithmetic.
"""

from __future__ import annotations

import numpy as np

from lenet5.blas import single_threaded_blas
from lenet5.config import ModelConfig, OptimizerConfig
from lenet5.engines.numpy import workers
from lenet5.engines.numpy.model import Network, parameter_count
from lenet5.engines.numpy.optim import create_optimizer
from lenet5.engines.numpy.workers import LOGITS, TRAIN, Worker, WorkerProcesses, shared_block, state_layout
from lenet5.errors import Lenet5Error
from lenet5.free_cores import adaptive, available_cores, own_seconds, process_seconds
from lenet5.models import NUM_CLASSES, check_state_dict, initial_weights

# Images per forward/backward pass; larger batches run in several passes. Measured (benchmarks/engine_speed.py
# setup, batch 64 and 128): one worker is 5-7% faster with passes of 64 than of 32 or 128; two workers are
# faster with 32 (batch 128: two passes of 32 each against one of 64).
PIECE_ONE_WORKER = 64
PIECE_WORKERS = 32
MIN_PIECE = 8  # a batch is shared among the workers only in pieces of at least this many images
LOGITS_ROUND = 4096  # logits of more images are computed in rounds of this many (the shared batch block's size)


def default_threads() -> int:
    """Workers for threads=0: 2 when at least 2 cores are available to this process, else 1."""
    return 2 if available_cores() >= 2 else 1


class NumpyEngine:
    """LeNet-5 ('modern' or 'classic') with its optimizer, in float32 (default) or float64.

    ``threads``: 0 picks the default (2 workers on a machine with at least 2 cores), 1 runs everything in the
    calling thread, n deals the pieces of each batch to n workers. ``seed`` fixes the initial weights: same
    seed and same thread count, same run, bit for bit, whichever workers ran in processes.
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

        # Workers 1.. run in processes, at most one per core besides this thread, sharing the parameters with
        # it (workers.py; on POSIX systems). A worker without a process, or whose process is left idle while other
        # programs hold the cores (free_cores.py), runs here: the same pieces and the same sums, so the same bits.
        processes = min(self.threads, available_cores()) - 1 if workers.SUPPORTED else 0
        layout = state_layout(parameter_count(model.name), processes, self.dtype)
        self._state = shared_block(layout) if processes else None
        if self._state is None:  # none needed, or none to be had (told): every worker runs here
            processes = 0
        self.net = Network(model.name, self.dtype, params=self._state.arrays["params"] if processes else None)
        weights = self.net.named_views(self.net.params)
        for key, value in initial_weights(model.name, model.init, seed, dtype).items():
            weights[key][...] = value
        self.optimizer = create_optimizer(optimizer, self.net.size, self.dtype)

        self._grad = np.zeros(self.net.size, dtype=self.dtype)  # the batch's gradient: worker 0's, plus the others'
        self._local = Worker(self.net, self._grad, self.label_smoothing)
        self._stand_ins: dict[int, Worker] = {}  # workers 1.. when they run here, each with its own gradient
        self._processes = (
            WorkerProcesses(processes, model.name, self.dtype, self.label_smoothing, self._state) if processes else None
        )
        self._in_use = processes  # processes given work; the policy lowers it while other programs hold cores
        self._free = adaptive(self._use_workers, processes + 1, self._cpu_seconds) if processes else None

    @property
    def workers_in_use(self) -> int:
        """Workers running at once now: this thread and the processes the free-cores policy gives work."""
        return self._in_use + 1

    def _use_workers(self, workers: int) -> None:
        self._in_use = workers - 1

    def _cpu_seconds(self) -> float:
        """CPU seconds of this process and its worker processes: what the cores policy counts as ours."""
        return own_seconds() + sum(map(process_seconds, self._processes.pids()))

    # --- training and inference -------------------------------------------------------------------------

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        x = np.asarray(x, dtype=self.dtype)
        y = np.asarray(y, dtype=np.int64)
        with single_threaded_blas():
            loss, n_correct = self._loss_and_grad(x, y)
            self.optimizer.step(self.net.params, self._grad, float(lr))
        return loss, n_correct

    def _plan(self, n: int) -> list[list[tuple[int, int]]]:
        """Cut n images into pieces and deal them to the workers in turn: [[(start, stop), ...] per worker]."""
        piece = PIECE_ONE_WORKER if self.threads == 1 else PIECE_WORKERS
        size = min(piece, max(MIN_PIECE, -(-n // self.threads)))
        pieces = [(a, min(a + size, n)) for a in range(0, n, size)]
        return [pieces[w :: self.threads] for w in range(self.threads) if pieces[w :: self.threads]]

    def _split(self, plan, x: np.ndarray) -> tuple[list, list[tuple[int, list]]]:
        """(the plans of workers 1..k, which go to the processes; [(worker, plan)] of those that run here)."""
        if self._free is not None:
            self._free.tick()
        k = min(self._in_use, len(plan) - 1)
        if k and not self._processes.usable(max(len(x), LOGITS_ROUND), x.shape[1:]):
            k = 0  # still starting: this thread does their pieces
        return plan[1 : 1 + k], list(enumerate(plan[1 + k :], start=1 + k))

    def _stand_in(self, worker: int) -> Worker:
        if worker not in self._stand_ins:
            grad = np.zeros(self.net.size, dtype=self.dtype)
            self._stand_ins[worker] = Worker(self.net, grad, self.label_smoothing, self._local.workspace)
        return self._stand_ins[worker]

    def _hand_out(self, what: int, x: np.ndarray, y: np.ndarray | None, plans) -> dict[str, np.ndarray] | None:
        """Copy the images of the processes' plans into the shared batch block and order the processes to start
        on them; returns the block's arrays (None when there is nothing to hand out)."""
        if not plans:
            return None
        batch = self._processes.batch  # _split found the processes up for this batch
        for pieces in plans:
            for a, b in pieces:
                batch["x"][a:b] = x[a:b]
                if y is not None:
                    batch["y"][a:b] = y[a:b]
        self._processes.order(what, len(x), plans)
        return batch

    def _loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        n = len(x)
        plan = self._plan(n)
        remote, here = self._split(plan, x)
        batch = self._hand_out(TRAIN, x, y, remote)
        loss, n_correct = self._local.loss_and_grad(x, y, plan[0], n)
        parts = [(self._stand_in(w).loss_and_grad(x, y, pieces, n), self._stand_in(w).grad) for w, pieces in here]
        if batch is not None:
            parts = self._collect(x, y, n, remote) + parts
        for (part_loss, part_correct), grad in parts:  # in worker order, wherever each worker ran: reproducible
            self._grad += grad
            loss, n_correct = loss + part_loss, n_correct + part_correct
        return loss, n_correct

    def _collect(self, x: np.ndarray, y: np.ndarray, n: int, remote) -> list:
        """The processes' (loss, correct) and gradients, in worker order; a lost process's pieces are done here
        (by its stand-in: the same pieces and sums, so the same bits)."""
        parts = []
        for w, (pieces, answer) in enumerate(zip(remote, self._processes.wait()), start=1):
            if answer is None:
                stand_in = self._stand_in(w)
                parts.append((stand_in.loss_and_grad(x, y, pieces, n), stand_in.grad))
            else:
                parts.append((answer, self._state.arrays["grads"][w - 1]))
        return parts

    def hurry(self) -> None:
        """A stop was asked for (Ctrl-C): wait only briefly for a silent worker process, so the step ends and
        the run saves and stops."""
        if self._processes is not None:
            self._processes.hurry = True

    def loss_and_gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, dict[str, np.ndarray]]:
        """(loss, n_correct, {name: gradient}) of one batch without updating anything (for checks, not
        part of the Engine protocol). The gradients are of the data loss only, before penalties."""
        with single_threaded_blas():
            loss, n_correct = self._loss_and_grad(np.asarray(x, dtype=self.dtype), np.asarray(y, dtype=np.int64))
        grads = {key: g.copy() for key, g in self.net.named_views(self._grad).items()}
        return loss, n_correct, grads

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        out = np.empty((len(x), NUM_CLASSES), dtype=self.dtype)
        with single_threaded_blas():
            for start in range(0, len(x), LOGITS_ROUND):
                part, part_out = x[start : start + LOGITS_ROUND], out[start : start + LOGITS_ROUND]
                plan = self._plan(len(part))
                remote, here = self._split(plan, part)
                batch = self._hand_out(LOGITS, part, None, remote)
                for pieces in [plan[0]] + [pieces for _, pieces in here]:
                    self._local.logits(part, pieces, part_out)
                if batch is not None:
                    for pieces, answer in zip(remote, self._processes.wait()):
                        if answer is None:  # a lost process: its pieces are done here
                            self._local.logits(part, pieces, part_out)
                            continue
                        for a, b in pieces:
                            part_out[a:b] = batch["logits"][a:b]
        return out

    # --- state ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        return {key: view.copy() for key, view in self.net.named_views(self.net.params).items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state_dict(self.model_name, state)
        views = self.net.named_views(self.net.params)
        for key in self.net.shapes:
            views[key][...] = np.asarray(state[key], dtype=self.dtype)
        self.net.apply_masks()

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.optimizer.load_state_dict(state)

    def close(self) -> None:
        """Stop the worker processes; a later call starts them again."""
        if getattr(self, "_processes", None) is not None:
            self._processes.close()

    def __del__(self) -> None:
        try:
            self.close()
            if getattr(self, "_state", None) is not None:
                self._state.close()
        except Exception:  # noqa: BLE001 - at interpreter exit modules may already be gone; the processes exit
            pass  # by themselves when their sockets close
