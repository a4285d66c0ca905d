"""Naive loop implementations, slow and obviously right: test oracles for the fast NumPy layers."""

from __future__ import annotations

import numpy as np


def conv2d_naive(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """x (N, C, H, W), w (F, C, k, k), b (F,) -> (N, F, Ho, Wo), one output pixel at a time."""
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho = (H + 2 * padding - k) // stride + 1
    Wo = (W + 2 * padding - k) // stride + 1
    out = np.zeros((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    patch = xp[n, :, i * stride : i * stride + k, j * stride : j * stride + k]
                    out[n, f, i, j] = np.sum(patch * w[f]) + b[f]
    return out


def maxpool_naive(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over k x k windows (stride k), and the gradient of sum(out) routed to each window's first maximum."""
    N, C, H, W = x.shape
    Ho, Wo = H // k, W // k
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    route = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, c, i * k : (i + 1) * k, j * k : (j + 1) * k]
                    first = np.argmax(window)  # np.argmax returns the first maximum in row-major order
                    out[n, c, i, j] = window.flat[first]
                    route[n, c, i * k + first // k, j * k + first % k] = 1
    return out, route
