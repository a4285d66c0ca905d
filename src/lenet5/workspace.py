"""Scratch arrays reused from call to call: the one scratch-buffer helper of the NumPy code.

A fresh array of a few hundred KB per operation costs more in page faults than in arithmetic (measured:
half of a training step in the NumPy engine, ~500 faults a batch in augmentation), so hot paths write into
arrays they keep here with ``out=``. Not thread-safe: one Workspace per thread (and per layer).
"""

from __future__ import annotations

import numpy as np

MAX_ARRAYS = 64  # more different shapes than this went through (many batch sizes): start afresh, not hoard


class Workspace:
    """``ws(name, shape, dtype)``: a C-ordered array, zero-filled when first made, the same one on every
    call with this name, shape and dtype. ``ws.like(name, x)``: an array shaped and laid out in memory like
    ``x`` (as np.empty_like), not cleared."""

    def __init__(self) -> None:
        self.arrays: dict[tuple, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        return self._get((name, tuple(shape), np.dtype(dtype).str), lambda: np.zeros(shape, dtype))

    def like(self, name: str, x: np.ndarray) -> np.ndarray:
        return self._get((name, x.shape, x.strides, x.dtype.str), lambda: np.empty_like(x))

    def view(self, name: str, x: np.ndarray, make) -> np.ndarray:
        """``make(x)``, a view of x, kept for this very array x (the same memory, shape and strides): for
        views that cost more to build than to keep (sliding_window_view takes ~60 us a call)."""
        return self._get((name, x.__array_interface__["data"][0], x.shape, x.strides, x.dtype.str), lambda: make(x))

    def _get(self, key: tuple, make) -> np.ndarray:
        array = self.arrays.get(key)
        if array is None:
            if len(self.arrays) >= MAX_ARRAYS:
                self.arrays.clear()
            array = self.arrays[key] = make()
        return array
