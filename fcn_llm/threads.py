"""Torch's intra-op thread count kept at the cores other processes leave free.

OpenMP threads that spin at barriers are fastest on an idle machine and stall at every barrier when
another process takes one of their cores; threads that sleep (`OMP_WAIT_POLICY=PASSIVE`) do not stall
but are slower on an idle machine (docs/performance.md). The governor keeps the spinning runtime and
gives up the cores that are busy elsewhere instead: every `interval_s` it reads how much CPU time the
other processes used on the cores this process may run on (`/proc/stat` minus `/proc/self/stat`) and
sets `torch.set_num_threads` to the free ones (at least 1, at most the count it started with).

    enable_adaptive_threads()   # in a command-line entry point (again: keeps the running governor)
    rebalance()                 # in the loop, on the thread that runs the model: cheap, a no-op unless enabled

`FCN_LLM_THREADS=N` in the environment fixes N threads instead (no governor).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

FIXED_THREADS_VARIABLE = "FCN_LLM_THREADS"


@dataclass(frozen=True)
class CpuSample:
    """Cumulative clock ticks: `busy` and `total` summed over the allowed cores, `own` this process's."""

    busy: int
    total: int
    own: int


def read_cpu_sample(cores: frozenset[int]) -> CpuSample | None:
    """The current `CpuSample` over `cores` from /proc (None where /proc cannot be read)."""
    busy = total = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
                continue
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
        stat = Path("/proc/self/stat").read_text()
        own_fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, utime field 14
        own = int(own_fields[11]) + int(own_fields[12])
    except (OSError, ValueError, IndexError):
        return None
    return CpuSample(busy=busy, total=total, own=own) if total else None


def free_cores(before: CpuSample, after: CpuSample, num_cores: int) -> float | None:
    """Cores not used by other processes between two samples (None if no time passed)."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return None
    others = max(0, (after.busy - before.busy) - (after.own - before.own))
    return num_cores * (1.0 - min(1.0, others / elapsed))


def allowed_cores() -> frozenset[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


class ThreadGovernor:
    """Sets torch's thread count to the free cores, re-read at most every `interval_s` seconds.

    Args:
        max_threads: the most threads it sets (default: torch's count when it is built).
        interval_s: the shortest time over which other processes' CPU use is averaged.
        reader: `cores -> CpuSample | None` (tests pass a fake; default /proc).
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(self, max_threads: int | None = None, interval_s: float = 1.0,
                 reader: Callable[[frozenset[int]], CpuSample | None] = read_cpu_sample,
                 clock: Callable[[], float] = time.monotonic):
        self.cores = allowed_cores()
        self.max_threads = max(1, max_threads or torch.get_num_threads())
        self.interval_s = interval_s
        self.reader, self.clock = reader, clock
        self.last = reader(self.cores)
        self.last_time = clock()
        self.changes = 0

    @property
    def active(self) -> bool:
        """Whether there is anything to govern (more than one thread allowed, /proc readable)."""
        return self.max_threads > 1 and self.last is not None

    def update(self) -> int:
        """The thread count after re-reading the free cores (when `interval_s` has passed)."""
        current = torch.get_num_threads()
        if not self.active or self.clock() - self.last_time < self.interval_s:
            return current
        sample = self.reader(self.cores)
        if sample is None:
            return current
        free = free_cores(self.last, sample, len(self.cores))
        self.last, self.last_time = sample, self.clock()
        if free is None:
            return current
        wanted = min(self.max_threads, max(1, int(free + 0.5)))
        if wanted != current:
            torch.set_num_threads(wanted)
            self.changes += 1
        return wanted


_governor: ThreadGovernor | None = None


def enable_adaptive_threads(interval_s: float = 1.0) -> ThreadGovernor | None:
    """Start governing this process's thread count (`rebalance` then acts) and return the governor; the
    running one if there is one; None, with N threads set, where `FCN_LLM_THREADS=N` is in the environment."""
    global _governor
    fixed = os.environ.get(FIXED_THREADS_VARIABLE, "").strip()
    if fixed:
        if not fixed.isdigit() or int(fixed) < 1:
            raise ValueError(f"{FIXED_THREADS_VARIABLE}={fixed!r}: give a positive number of threads.")
        torch.set_num_threads(int(fixed))
        _governor = None
        return None
    if _governor is None:
        _governor = ThreadGovernor(interval_s=interval_s)
    return _governor


def disable_adaptive_threads() -> None:
    """Stop governing and restore the thread count the governor started with."""
    global _governor
    if _governor is not None:
        with contextlib.suppress(RuntimeError):
            torch.set_num_threads(_governor.max_threads)
    _governor = None


def rebalance() -> int:
    """Let the process's governor re-read the free cores; torch's thread count either way."""
    return _governor.update() if _governor is not None else torch.get_num_threads()
