"""The torch engine's CPU thread count for threads=0: as many threads as there are cores nobody else is using.

PyTorch's OpenMP threads spin while they wait for each other; when another process holds one of the cores,
the thread that shares it is descheduled for whole time slices and the others spin for it. Measured on the
2-core machine of this project (benchmarks/busy_machine.py, 200 training steps of batch 64, busy = a loop
pinned to one core; the README's Speed section has the tables): in the one round where no other tenant
ran, PyTorch's default of 2 threads took 1.19 s quiet and 9.22 s busy (7.7x), 1 thread 1.31 s and 1.44 s
(1.1x); OMP_WAIT_POLICY=PASSIVE kept 2 threads near 1.0x under load but took 2.25 s quiet (sleeping threads
wake up late for LeNet's small ops); one inter-op thread changed nothing (its pool is not used here). With
another tenant holding a core all along, 2 threads took 6-33 s per window against 1.5 s for 1 thread.
A free second core is worth having (2 threads 1.19 s against 1.31 s above; 2.99 against 4.51 s per epoch
in the README's engine table), so the policy adapts instead of always taking 1:

- it starts with 1 thread, and every CHECK_SECONDS of training or evaluation reads the CPU time all
  processes used (/proc/stat) minus this process's own (getrusage), i.e. how many cores the others took;
- it runs max(1, cores - others) threads, where a core counts as taken when others used more than half of it,
  and as free again only when they used less than a fifth (so the count does not flip back and forth).

Where there is no /proc/stat (macOS, Windows) or OMP_NUM_THREADS is set, PyTorch's own default stays.
An explicit ``threads`` (``--threads N``) fixes the count; pass it for bit-for-bit repeatable torch runs.
"""

from __future__ import annotations

import os
import resource
import time

CHECK_SECONDS = 0.25  # short enough that a busy core costs at most this much spinning; /proc/stat costs ~30 us
TAKEN_ABOVE = 0.5  # share of a core others must use for it to count as taken ...
FREE_BELOW = 0.2  # ... and below which it counts as free again


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _machine_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all CPUs since boot, or None without /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = _CLK_TCK
    total = sum(fields)  # user nice system idle iowait irq softirq steal
    return (total - fields[3] - fields[4]) / tick, total / tick


def _own_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


try:
    _CLK_TCK = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _CLK_TCK = 100


def choose(current: int, others_cores: float, cores: int, most: int) -> int:
    """The thread count for the next interval, given the cores other processes used in the last one."""
    free = cores - others_cores
    down = int(free + TAKEN_ABOVE)  # a core others use more than half of is not ours
    up = int(free + FREE_BELOW)  # one they use less than a fifth of is ours again
    want = up if up > current else min(current, down)
    return max(1, min(most, want))


class AdaptiveThreads:
    """Call tick() before each piece of work; it calls set_threads(n) when the count should change."""

    def __init__(self, set_threads, most: int) -> None:
        self.set_threads = set_threads
        self.cores = _cores()
        self.cpus = os.cpu_count() or self.cores
        self.most = max(1, min(most, self.cores))
        self.threads = 1
        set_threads(1)
        self._last = self._sample()
        self._next = time.monotonic() + CHECK_SECONDS

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        machine = _machine_seconds()
        return None if machine is None else (*machine, _own_seconds())

    def tick(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + CHECK_SECONDS
        now = self._sample()
        if now is None or self._last is None:
            return
        busy, total, own = (a - b for a, b in zip(now, self._last))
        self._last = now
        if total <= 0:
            return
        others_cores = max(0.0, busy - own) / total * self.cpus  # /proc/stat counts every CPU of the machine
        threads = choose(self.threads, others_cores, self.cores, self.most)
        if threads != self.threads:
            self.threads = threads
            self.set_threads(threads)


def adaptive(set_threads, default_threads: int) -> AdaptiveThreads | None:
    """The policy for threads=0, or None where PyTorch's own default should stay."""
    if "OMP_NUM_THREADS" in os.environ or _machine_seconds() is None or _cores() < 2:
        return None
    return AdaptiveThreads(set_threads, default_threads)
