"""The `timeseries` config of an instruction set: the training subjects' ROI time series, for sliding-window FCNs.

``DIR/timeseries/train.parquet`` holds one row per `train` subject whose series is known: `subject_id`,
`num_timepoints` T, `num_rois` N and `series`, the `(T, N)` series z-scored per ROI over time, row-major, as a
float16 list (half the bytes of float32; a Pearson correlation, over the whole scan or any window of it, is
unchanged by the per-ROI z-scoring). Only `train` is stored: evaluation always reads the whole-scan FCNs of the
`subjects` config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TIMESERIES_CONFIG = "timeseries"
TIMESERIES_SPLIT = "train"


def standardized_float16(series: np.ndarray) -> np.ndarray:
    """`(..., T, N)` series z-scored per ROI over time (axis -2), as float16."""
    x = series - series.mean(axis=-2, keepdims=True)
    return (x / x.std(axis=-2, keepdims=True)).astype(np.float16)


def timeseries_arrow(subject_ids: list[str], series: list[np.ndarray]) -> pa.Table:
    """The `timeseries` config's rows for S subjects and their `(T_s, N)` series (z-scored here, stored float16)."""
    rows = [standardized_float16(np.asarray(ts, dtype=np.float32)) for ts in series]
    return pa.table({
        "subject_id": pa.array([str(s) for s in subject_ids], type=pa.string()),
        "num_timepoints": pa.array([ts.shape[0] for ts in rows], type=pa.int32()),
        "num_rois": pa.array([ts.shape[1] for ts in rows], type=pa.int32()),
        "series": pa.array([ts.ravel() for ts in rows], type=pa.list_(pa.float16())),
    })


def write_timeseries(out: Path, subject_ids: list[str], series: list[np.ndarray | None]) -> dict:
    """Write ``out/timeseries/train.parquet`` for the subjects whose series is known; returns the card's summary
    (`subjects`, `timepoints` (min, max), `megabytes`)."""
    known = [(sid, ts) for sid, ts in zip(subject_ids, series) if ts is not None]
    if not known:
        raise ValueError("No training subject has a time series to store.")
    path = Path(out) / TIMESERIES_CONFIG / f"{TIMESERIES_SPLIT}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    ids, arrays = zip(*known)
    pq.write_table(timeseries_arrow(list(ids), list(arrays)), path)
    lengths = [ts.shape[0] for ts in arrays]
    return {"subjects": len(known), "timepoints": (min(lengths), max(lengths)), "megabytes": path.stat().st_size / 1e6}


def read_timeseries(dataset) -> dict[str, np.ndarray]:
    """subject_id -> `(T, N)` float16 series, from the `timeseries` config (a `datasets.Dataset` or `DatasetDict`)."""
    parts = list(dataset.values()) if isinstance(dataset, dict) else [dataset]
    out: dict[str, np.ndarray] = {}
    for part in parts:
        table = part.data.table if hasattr(part.data, "table") else part.data
        ids = table.column("subject_id").to_pylist()
        lengths = table.column("num_timepoints").to_pylist()
        sizes = table.column("num_rois").to_pylist()
        series = table.column("series").combine_chunks()
        for i, (sid, t, n) in enumerate(zip(ids, lengths, sizes)):
            values = series[i].values.to_numpy(zero_copy_only=False)
            if values.size != t * n:
                raise ValueError(f"Time series of subject {sid!r} has {values.size} values, not T x N = {t} x {n}.")
            out[sid] = values.astype(np.float16, copy=False).reshape(t, n)
    return out
