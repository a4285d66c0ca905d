"""Softmax cross-entropy, computed stably, with optional label smoothing (as torch.nn.functional.cross_entropy)."""

from __future__ import annotations

import numpy as np

from lenet5.metrics import log_softmax


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0, total: int | None = None
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy over the batch and its gradient with respect to the logits.

    logits (N, K), labels (N,) ints. With label smoothing eps the target of each sample is
    q = (1 - eps) * one_hot(label) + eps / K, and the loss is -sum_k q_k log p_k (PyTorch's definition);
    the gradient is (p - q) / N.

    ``total`` divides instead of N: when a batch is split into parts, each part passes the size of the
    whole batch, so the parts' losses and gradients add up to those of the whole batch.
    """
    N, K = logits.shape
    total = N if total is None else total
    logp = log_softmax(logits)
    rows = np.arange(N)

    target = np.full((N, K), label_smoothing / K, dtype=logits.dtype)
    target[rows, labels] += 1.0 - label_smoothing
    loss = -float((target * logp).sum()) / total

    grad = np.exp(logp)
    grad -= target
    grad *= 1.0 / total
    return loss, grad
