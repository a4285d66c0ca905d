"""Keep BLAS (OpenBLAS/MKL behind NumPy) to one thread where we split work ourselves.

On small shared machines OpenBLAS with 2 threads was ~5x slower than with 1 (its threads spin on the shared
cores); the NumPy engine and the augmentation run their own worker threads instead.
"""

from __future__ import annotations

_controller = None


def single_threaded_blas():
    """Context manager limiting BLAS to one thread; cheap after the first call."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
