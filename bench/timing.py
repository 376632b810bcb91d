"""Timing helpers: warm-up, interleaved repeats (A, B, A, B, ...) and medians.

The machine is noisy (shared cores), so alternatives are timed round-robin: drift hits all of them
alike, and their ratio of medians is what the suite reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    """Wall-clock seconds of repeated calls."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times)) if self.times else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        return float((max(self.times) - min(self.times)) / self.median) if self.times else float("nan")

    def as_dict(self, per: float = 1.0, unit: str = "ms") -> dict:
        """Median and all repeats, divided by `per` (e.g. items per call), in `unit` ("ms" or "s")."""
        scale = 1e3 if unit == "ms" else 1.0
        return {f"median_{unit}": self.median / per * scale,
                f"repeats_{unit}": [t / per * scale for t in self.times], "spread": self.spread}


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Time each callable `repeats` times, round-robin, after `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    timings = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            timings[name].times.append(time.perf_counter() - start)
    return timings


def paired_ratio(numerator: Timing, denominator: Timing) -> float:
    """Median over rounds of numerator / denominator (times of the same round ran back to back)."""
    return float(np.median(np.asarray(numerator.times) / np.asarray(denominator.times)))


def time_once(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds of one call, and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def fit_exponent(sizes, seconds) -> float:
    """Slope of log(seconds) vs log(size): cost ~ size^slope."""
    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float)), 1)[0])
