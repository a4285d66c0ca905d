"""Centred finite differences: the oracle the NumPy layers' gradients are checked against in float64."""

from __future__ import annotations

import numpy as np


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6, indices=None) -> np.ndarray:
    """Centred differences (f(x+eps) - f(x-eps)) / 2eps at each index of x (all, or the given flat ones)."""
    flat = x.reshape(-1)  # a view: x must be contiguous
    assert np.shares_memory(flat, x)
    indices = range(flat.size) if indices is None else indices
    out = []
    for i in indices:
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        out.append((up - down) / (2 * eps))
    return np.array(out).reshape(x.shape) if len(out) == flat.size else np.array(out)
