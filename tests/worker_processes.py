"""Helpers for the tests of the NumPy engine's worker processes: an engine whose processes always get their
pieces, and waiting for a process to end."""

from __future__ import annotations

import time

from conftest import opt
from lenet5.config import ModelConfig
from lenet5.engines.numpy import executors
from lenet5.engines.numpy.engine import NumpyEngine


def engine_with_processes(threads: int = 2, **settings) -> NumpyEngine:
    """A NumpyEngine whose worker processes always get their pieces (the free-cores policy would hand them to
    the calling thread while the other test runners keep the cores busy)."""
    engine = NumpyEngine(ModelConfig(), opt(), seed=4, threads=threads, **settings)
    pool = engine.executor
    pool.free_cores, pool.in_use = None, pool.processes.count
    pool.processes.ready(executors.LOGITS_ROUND, (1, 28, 28))  # up now: they get the very first pieces
    return engine


def gone(pid: int, timeout: float = 10.0) -> bool:
    """True once pid has exited (and been reaped, or is a zombie nobody waits for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False
