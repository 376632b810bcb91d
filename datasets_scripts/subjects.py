"""The subject table: what every cohort source (simulator, real-cohort loaders) hands the builder.

A `SubjectTable` holds S subjects of one atlas: their FCNs `(S, N, N)` and a metadata frame with one
row per subject. Attribute columns use the registry's attribute keys (see `attributes.py`); a
missing value is NaN/None and means "skip this attribute for this subject".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("subject_id", "dataset", "site", "atlas")


@dataclass
class SubjectTable:
    """FCNs and metadata of S subjects.

    Attributes:
        fcns: `(S, N, N)` float32 FCNs, row i belongs to `meta.iloc[i]`.
        meta: S rows; columns `subject_id`, `dataset`, `site`, `atlas`, then attribute columns.
        info: free-form provenance (e.g. exclusion counts per site, simulator ground truth).
        timeseries: None, or S entries, each the subject's ROI time series `(T_s, N)` the FCN was computed from
            (None where unknown); kept for sliding-window FCNs in training (`timeseries_store.py`).
    """

    fcns: np.ndarray
    meta: pd.DataFrame
    info: dict = field(default_factory=dict)
    timeseries: list[np.ndarray | None] | None = None

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.meta.columns]
        if missing:
            raise ValueError(f"Subject table is missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}.")
        if self.fcns.ndim != 3 or self.fcns.shape[1] != self.fcns.shape[2]:
            raise ValueError(f"FCNs must have shape (S, N, N), got {tuple(self.fcns.shape)}.")
        if len(self.meta) != self.fcns.shape[0]:
            raise ValueError(f"{self.fcns.shape[0]} FCNs but {len(self.meta)} metadata rows.")
        duplicated = self.meta["subject_id"][self.meta["subject_id"].duplicated()].tolist()
        if duplicated:
            raise ValueError(f"Repeated subject ids: {duplicated[:10]}.")
        if self.timeseries is not None:
            if len(self.timeseries) != len(self.meta):
                raise ValueError(f"{len(self.timeseries)} time series but {len(self.meta)} subjects.")
            for sid, series in zip(self.meta["subject_id"], self.timeseries):
                if series is not None and (series.ndim != 2 or series.shape[1] != self.fcns.shape[1]):
                    raise ValueError(f"Subject {sid!r}: time series must have shape (T, N={self.fcns.shape[1]}), "
                                     f"got {tuple(series.shape)}.")

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def num_rois(self) -> int:
        return int(self.fcns.shape[1])

    def attribute_columns(self) -> list[str]:
        return [c for c in self.meta.columns if c not in REQUIRED_COLUMNS]

    def subset(self, mask: np.ndarray | pd.Series) -> "SubjectTable":
        mask = np.asarray(mask, dtype=bool)
        series = None if self.timeseries is None else [ts for ts, keep in zip(self.timeseries, mask) if keep]
        return SubjectTable(self.fcns[mask], self.meta[mask].reset_index(drop=True), dict(self.info), series)

    @staticmethod
    def concat(tables: list["SubjectTable"]) -> "SubjectTable":
        sizes = {t.num_rois for t in tables}
        if len(sizes) > 1:
            raise ValueError(f"Cannot concatenate subject tables of different atlas sizes: {sorted(sizes)}.")
        meta = pd.concat([t.meta for t in tables], ignore_index=True)
        info = _merge_info([t.info for t in tables])
        series = None
        if any(t.timeseries is not None for t in tables):
            series = [ts for t in tables for ts in (t.timeseries if t.timeseries is not None else [None] * len(t))]
        return SubjectTable(np.concatenate([t.fcns for t in tables]), meta, info, series)


def _merge_info(infos: list[dict]) -> dict:
    """Merge provenance dicts: nested dicts (e.g. exclusion counts per site) are merged key by key,
    lists are concatenated, numbers added; any other value keeps the first table's."""
    merged: dict = {}
    for info in infos:
        for key, value in info.items():
            if key not in merged:
                merged[key] = value if not isinstance(value, (dict, list)) else type(value)(value)
            elif isinstance(value, dict) and isinstance(merged[key], dict):
                merged[key] = _merge_info([merged[key], value])
            elif isinstance(value, list) and isinstance(merged[key], list):
                merged[key] = merged[key] + value
            elif isinstance(value, (int, float)) and isinstance(merged[key], (int, float)):
                merged[key] = merged[key] + value
    return merged
