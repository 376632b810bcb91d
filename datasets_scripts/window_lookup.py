"""Collator-side sliding-window FCNs: each call draws one window of a training subject's time series.

The FCN-LLM paper aligns (stage 1) on sliding-window FCNs (window 100 time points, stride 20) and fine-tunes and
evaluates on whole-scan FCNs. `WindowedFCNs` is a drop-in `graph_lookup` for `FCNInstructionCollator`: a subject
with a stored series (the `timeseries` config, `timeseries_store.py`) gets the Pearson FCN of a window drawn
uniformly from the stride grid, anew for every instruction; any other subject (validation, a series shorter than
the window) gets its whole-scan FCN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from processing.connectivity import compute_fcns


def window_starts(timepoints: int, window_length: int, window_stride: int) -> np.ndarray:
    """The first time point of every window of `window_length` on the stride grid of a `timepoints`-long series."""
    return np.arange(0, timepoints - window_length + 1, window_stride)


class WindowedFCNs:
    """subject_id -> FCN `(N, N)` float32 of a random window of its series, else of its whole scan.

    Args:
        series: subject_id -> `(T, N)` time series (any float dtype).
        whole_scan: subject_id -> whole-scan FCN `(N, N)` (e.g. `GraphLookup.__getitem__`).
        window_length: time points per window (at least 3).
        window_stride: time points between the starts of consecutive windows (at least 1).
    """

    def __init__(self, series: Mapping[str, np.ndarray], whole_scan: Callable[[str], torch.Tensor],
                 window_length: int, window_stride: int = 20):
        if window_length < 3:
            raise ValueError(f"window_length must be at least 3 time points for a correlation, got {window_length}.")
        if window_stride < 1:
            raise ValueError(f"window_stride must be at least 1 time point, got {window_stride}.")
        self.series, self.whole_scan = series, whole_scan
        self.window_length, self.window_stride = int(window_length), int(window_stride)

    def windowed_subjects(self) -> int:
        """How many subjects have a series at least one window long."""
        return sum(len(ts) >= self.window_length for ts in self.series.values())

    def __call__(self, subject_id: str) -> torch.Tensor:
        series = self.series.get(subject_id)
        if series is None or len(series) < self.window_length:
            return self.whole_scan(subject_id)
        starts = window_starts(len(series), self.window_length, self.window_stride)
        start = int(starts[torch.randint(len(starts), ()).item()])  # the Trainer seeds torch (and each worker)
        window = np.asarray(series[start:start + self.window_length], dtype=np.float64)
        return torch.from_numpy(compute_fcns(window)[0].astype(np.float32))
