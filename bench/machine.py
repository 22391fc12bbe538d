"""Small /proc helpers for benchmarking on a shared Linux box.

``busy_seconds`` is the CPU time the whole machine has spent busy; ``tree_cpu_seconds`` the
CPU time of one process and its descendants. Their difference over a measurement (minus the
load generator's own CPU time) is the "foreign" CPU time other jobs used meanwhile, which
says whether a point was disturbed. ``wait_quiet`` waits, boundedly, for the box to go idle.
"""

from __future__ import annotations

import os
import time

HZ: int = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds the machine has been busy (user+nice+system+irq+softirq), all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / HZ


def steal_seconds() -> float:
    """CPU seconds stolen by the hypervisor, all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[7] / HZ


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()  # fields from 'state' on (comm may hold spaces)


def proc_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:  # bounded: each pid is visited once (the parent relation is a tree)
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(pids: list[int]) -> float:
    """User+system CPU seconds of ``pids`` (processes that are gone count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / HZ


def wait_quiet(max_wait_s: float = 120.0, limit: float = 0.08, window_s: float = 2.0
               ) -> tuple[float, float]:
    """Wait until the machine is less than ``limit`` busy (fraction of all cores) over
    ``window_s``, or ``max_wait_s`` passed. Returns (seconds waited, last busy fraction)."""
    t0 = time.monotonic()
    ncpu = os.cpu_count() or 1
    frac = 1.0
    while True:
        b0 = busy_seconds()
        time.sleep(window_s)
        frac = (busy_seconds() - b0) / window_s / ncpu
        waited = time.monotonic() - t0
        if frac < limit or waited >= max_wait_s:
            return round(waited, 1), round(frac, 3)
