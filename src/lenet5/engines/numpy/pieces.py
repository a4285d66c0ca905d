"""How the NumPy engine cuts a batch into pieces, and how one worker runs its share of them.

A batch is cut into pieces of at most 64 images (32 with several workers), dealt to ``threads`` workers in turn.
Each worker sums its pieces' gradients into its own buffer, and the executor (executors.py) adds the workers'
buffers in worker order. The cut depends only on the batch size and ``threads``, so every sum, and so every bit
of a step, is the same wherever each worker runs (but threads=1 and threads=2 round differently). Small pieces
keep each pass's arrays in cache.
"""

from __future__ import annotations

import numpy as np

# Images per forward/backward pass; larger batches run in several passes. Measured (benchmarks/engine_speed.py
# setup, batch 64 and 128): one worker is 5-7% faster with passes of 64 than of 32 or 128; two workers are
# faster with 32 (batch 128: two passes of 32 each against one of 64).
PIECE_ONE_WORKER = 64
PIECE_WORKERS = 32
MIN_PIECE = 8  # a batch is shared among the workers only in pieces of at least this many images

Pieces = list[tuple[int, int]]  # (start, stop) of each piece: images x[start:stop] of the batch


def plan(n: int, threads: int) -> list[Pieces]:
    """Cut n images into pieces and deal them to the workers in turn: [[(start, stop), ...] of each worker].

    Workers left without a piece (a small batch) are left out: the plan may be shorter than ``threads``.
    """
    piece = PIECE_ONE_WORKER if threads == 1 else PIECE_WORKERS
    size = min(piece, max(MIN_PIECE, -(-n // threads)))
    pieces = [(a, min(a + size, n)) for a in range(0, n, size)]
    return [pieces[w::threads] for w in range(threads) if pieces[w::threads]]


class Worker:
    """One worker's share of a batch: forward and backward over its pieces, into its own gradient buffer."""

    def __init__(self, net, grad: np.ndarray, label_smoothing: float, workspace=None) -> None:
        self.net = net
        self.grad, self.grad_views = grad, net.layer_views(grad)
        self.piece_grad = np.zeros_like(grad)  # a second, third... piece's gradient, added to grad
        self.piece_grad_views = net.layer_views(self.piece_grad)
        self.workspace = workspace or net.new_workspace()  # activations and scratch arrays kept from step to step
        self.label_smoothing = label_smoothing

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, pieces: Pieces, total: int) -> tuple[float, int]:
        """Loss and correct predictions of x[a:b] for (a, b) in pieces (loss already divided by total)."""
        loss, n_correct = 0.0, 0
        for j, (a, b) in enumerate(pieces):  # the first piece writes the gradient, later ones add to it
            views = self.grad_views if j == 0 else self.piece_grad_views
            part = self.net.loss_and_grad(x[a:b], y[a:b], views, self.label_smoothing, total, self.workspace)
            if j:
                self.grad += self.piece_grad
            loss, n_correct = loss + part[0], n_correct + part[1]
        return loss, n_correct

    def logits(self, x: np.ndarray, pieces: Pieces, out: np.ndarray) -> None:
        """out[a:b] = the logits (b - a, 10) of x[a:b] for (a, b) in pieces."""
        for a, b in pieces:  # memory stays that of one piece, however many images
            out[a:b] = self.net.forward(x[a:b], keep_caches=False, ws=self.workspace)[0]
