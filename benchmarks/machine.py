"""How busy the machine is, for every benchmark here (see shared/MEASURING.md).

Counters come from /proc/stat (all CPUs) and getrusage or /proc/<pid>/stat (our own processes); the share of
CPU time taken by *other* processes during a timed window is printed next to each figure, and a window where
others took more than NOISY is marked noisy. Linux only. Import as ``from machine import ...`` (the
benchmarks run as ``python benchmarks/NAME.py``, which puts this folder on the path).
"""

from __future__ import annotations

import os
import resource

NOISY = 0.15
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - fields[3] - fields[4], total  # minus idle and iowait


def own_jiffies() -> float:
    """CPU time of this process and of its running children (the NumPy engine's worker processes), in jiffies."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (ru.ru_utime + ru.ru_stime) * CLK_TCK + sum(map(process_jiffies, running_children()))


def running_children(pid: int | str = "self") -> list[int]:
    """Process ids of the running children of process ``pid`` (this one by default)."""
    pids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(child) for child in f.read().split()]
        except OSError:  # a thread that ended meanwhile
            pass
    return pids


def children_jiffies() -> float:
    """CPU time of this process's finished children, in jiffies."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * CLK_TCK


def process_jiffies(pid: int) -> int:
    """CPU time (utime + stime) of a running process, in jiffies (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def cpu_snapshot() -> tuple[float, float, float]:
    """(all CPUs' total seconds, all CPUs' busy seconds, this process's CPU seconds)."""
    busy, total = cpu_jiffies()
    return total / CLK_TCK, busy / CLK_TCK, own_jiffies() / CLK_TCK


def others_share(before, after) -> float:
    """Share of all CPU time, between two cpu_snapshot()s, used by processes other than this one."""
    total = after[0] - before[0]
    other = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, other / total) if total > 0 else 0.0
