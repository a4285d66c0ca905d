"""How many cores other processes leave free: the engines' thread or worker count for a busy machine.

Both engines run their work on as many cores as others leave free (benchmarks/busy_machine.py; the README's
Speed section has the tables):

- the torch engine (threads=0): PyTorch's OpenMP threads spin while they wait for each other, so a thread
  sharing a core with another process stalls the others (2 threads: 7.7x slower under load, 1 thread 1.1x);
- the NumPy engine (threads > 1): a worker process sharing a core with another process holds up every step
  (2.75x slower under load, 1.6x with the calling thread doing all the pieces); handing its pieces to the
  calling thread changes no bit of the result (engines/numpy/process_pool.py).

The policy starts with 1 and every CHECK_SECONDS of work reads the CPU time all processes used (/proc/stat)
minus the engine's own (``own_seconds``: getrusage, plus any worker processes), i.e. how many cores the others
took. It uses max(1, cores - others), where a core counts as taken when others used more than half of it, and
as free again only when they used less than a fifth (so the count does not flip back and forth). Where there
is no /proc/stat (macOS, Windows) there is no policy: the engine keeps its count.
"""

from __future__ import annotations

import os
import resource
import time

CHECK_SECONDS = 0.25  # short enough that a busy core costs at most this much spinning; /proc/stat costs ~30 us
TAKEN_ABOVE = 0.5  # share of a core others must use for it to count as taken ...
FREE_BELOW = 0.2  # ... and below which it counts as free again


def available_cores() -> int:
    """Cores this process may run on."""
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


def own_seconds() -> float:
    """CPU seconds of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def process_seconds(pid: int) -> float:
    """CPU seconds of a running child process (0 once it has ended, or without /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


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

    def __init__(self, set_threads, most: int, own=None) -> None:
        self.set_threads, self.own = set_threads, own or own_seconds
        self.cores = available_cores()
        self.cpus = os.cpu_count() or self.cores
        self.most = max(1, min(most, self.cores))
        self.threads = 1
        set_threads(1)
        self._last = self._sample()
        self._next = time.monotonic() + CHECK_SECONDS

    def _sample(self) -> tuple[float, float, float] | None:
        machine = _machine_seconds()
        return None if machine is None else (*machine, self.own())

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


def adaptive(set_threads, most: int, own=None) -> AdaptiveThreads | None:
    """The policy for up to ``most`` threads, or None where it cannot see the machine or there is one core."""
    if _machine_seconds() is None or available_cores() < 2 or most < 2:
        return None
    return AdaptiveThreads(set_threads, most, own)
