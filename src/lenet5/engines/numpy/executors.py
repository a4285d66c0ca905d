"""Executors: where the NumPy engine's workers run the pieces of a batch (pieces.py).

An executor holds the network its workers read (``net``: where its parameters live is the executor's choice)
and the flat gradient buffer it fills (``grad``, the engine's), and offers:

- ``loss_and_grad(x, y)``: the batch's (loss, correct predictions), its gradient in ``grad``: each worker's
  pieces summed, then the workers' sums in worker order;
- ``logits(x, out)``: the logits (N, 10) of x into out;
- ``workers_in_use``, ``hurry()`` (a stop was asked for: wait only briefly for others) and ``close()``.

Two executors, which give the same bits for the same ``threads`` (the same pieces, the same sums):

- InThreadExecutor: every worker in the calling thread, one after another (threads=1, and wherever no worker
  process can be had);
- ProcessPoolExecutor (process_pool.py): worker 0 in the calling thread, the others in processes that share the
  parameters, the batch and their gradients with it; the calling thread does the pieces of processes that are
  idle (other programs hold the cores), starting or lost.

A model with BatchNorm (lenet5.models.has_batchnorm) gets a third, WholeBatchExecutor: BatchNorm in training
normalises by the statistics of the whole batch, which pieces computed independently would not see, so each
training batch runs as one piece in the calling thread (no worker processes). Its logits, in evaluation mode
(the running statistics, the same for any cut), are computed in pieces as InThreadExecutor's.

create_executor picks one; the process side is imported only when several workers are asked for.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lenet5 import models
from lenet5.engines.numpy import pieces
from lenet5.engines.numpy.model import Network
from lenet5.engines.numpy.pieces import Pieces, Worker
from lenet5.free_cores import available_cores

LOGITS_ROUND = 4096  # logits of more images are computed in rounds of this many (the process pool's batch block)


def default_threads() -> int:
    """Workers for threads=0: 2 when at least 2 cores are available to this process, else 1."""
    return 2 if available_cores() >= 2 else 1


class Executor(Protocol):
    net: Network
    grad: np.ndarray  # flat, net.size values: the gradient of the last loss_and_grad

    @property
    def workers_in_use(self) -> int:
        """Workers running at once now (1: the calling thread alone)."""

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """(loss, correct predictions) of the batch x (N,1,28,28), y (N,); its gradient lands in ``grad``."""

    def logits(self, x: np.ndarray, out: np.ndarray) -> None:
        """The logits of x into out (N, 10)."""

    def hurry(self) -> None:
        """A stop was asked for (Ctrl-C): wait only briefly for a silent worker."""

    def close(self) -> None:
        """Free what the workers hold (processes, shared memory for batches); a later call takes it again."""


def logit_rounds(n: int):
    """(start, stop) of the rounds of at most LOGITS_ROUND images in which logits are computed: every executor
    cuts each round the same way, so the pieces, and the bits, are the same wherever they run."""
    return [(a, min(a + LOGITS_ROUND, n)) for a in range(0, n, LOGITS_ROUND)]


def add_parts(grad: np.ndarray, loss: float, n_correct: int, parts) -> tuple[float, int]:
    """Add workers' ((loss, correct), gradient) parts to grad and to (loss, n_correct), in the order given."""
    for (part_loss, part_correct), part_grad in parts:
        grad += part_grad
        loss, n_correct = loss + part_loss, n_correct + part_correct
    return loss, n_correct


class InThreadExecutor:
    """Every worker in the calling thread, one after another: worker 0 writes ``grad``, workers 1.. each their
    own buffer (``threads`` > 1: the same pieces and sums as when they run in processes)."""

    def __init__(self, net: Network, grad: np.ndarray, label_smoothing: float, threads: int = 1) -> None:
        self.net, self.grad, self.threads = net, grad, threads
        self.label_smoothing = label_smoothing
        self.first = Worker(net, grad, label_smoothing)
        self._others: dict[int, Worker] = {}  # workers 1.., made when first needed

    @property
    def workers_in_use(self) -> int:
        return 1

    def plan(self, n: int) -> list[Pieces]:
        """The pieces of each worker for a batch of n images (pieces.plan)."""
        return pieces.plan(n, self.threads)

    def worker(self, w: int) -> Worker:
        """Worker w as it runs here; all share worker 0's workspace, as they run one after another."""
        if w == 0:
            return self.first
        if w not in self._others:
            grad = np.zeros(self.net.size, dtype=self.grad.dtype)
            self._others[w] = Worker(self.net, grad, self.label_smoothing, self.first.workspace)
        return self._others[w]

    def run(self, x: np.ndarray, y: np.ndarray, work: list[tuple[int, Pieces]], n: int) -> list:
        """[((loss, correct), gradient)] of workers w>0 on their pieces, for (w, pieces) in work."""
        return [(self.worker(w).loss_and_grad(x, y, p, n), self.worker(w).grad) for w, p in work]

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        n = len(x)
        plan = self.plan(n)
        loss, n_correct = self.first.loss_and_grad(x, y, plan[0], n)
        return add_parts(self.grad, loss, n_correct, self.run(x, y, list(enumerate(plan[1:], start=1)), n))

    def logits(self, x: np.ndarray, out: np.ndarray) -> None:
        for a, b in logit_rounds(len(x)):
            for worker_pieces in self.plan(b - a):
                self.first.logits(x[a:b], worker_pieces, out[a:b])

    def hurry(self) -> None:
        pass  # nothing to wait for

    def close(self) -> None:
        pass  # nothing held


class WholeBatchExecutor(InThreadExecutor):
    """One worker in the calling thread that runs each training batch whole, as one piece: for models with
    BatchNorm, whose training-mode output for an image depends on the whole batch. Memory grows with the
    batch (every activation of every image at once); logits still go piece by piece."""

    def __init__(self, net: Network, grad: np.ndarray, label_smoothing: float) -> None:
        super().__init__(net, grad, label_smoothing, threads=1)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        n = len(x)
        return self.first.loss_and_grad(x, y, [(0, n)], n)


def create_executor(
    model_name: str, dtype: np.dtype, label_smoothing: float, threads: int, grad: np.ndarray
) -> Executor:
    """The executor for ``threads`` workers (>= 1) filling ``grad``: for a model with BatchNorm the whole batch
    in the calling thread whatever ``threads`` says, else a process pool where processes can be had
    (process_pool.py), else every worker in the calling thread."""
    if models.has_batchnorm(model_name):
        return WholeBatchExecutor(Network(model_name, dtype), grad, label_smoothing)
    if threads > 1:
        from lenet5.engines.numpy.process_pool import process_pool

        pool = process_pool(model_name, dtype, label_smoothing, threads, grad)
        if pool is not None:
            return pool
    return InThreadExecutor(Network(model_name, dtype), grad, label_smoothing, threads)
