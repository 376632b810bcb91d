"""Loader (b): BrainGB / Brain Network Transformer ``.npy`` dicts -> `SubjectTable`.

These files are a pickled dict (``np.load(path, allow_pickle=True).item()``) with keys
``corr`` `(S, N, N)`, ``label`` `(S,)`, ``site`` `(S,)` and optionally ``timeseires`` (sic, BNT)
or ``timeseries`` `(S, N, T)`, sometimes ``pcorr``. The label becomes the attribute the user names
(e.g. ``"autism"``), through `label_codes`.

Security: full unpickling runs whatever code the file's author put in it. By default a pickled
``.npy`` is read with a restricted unpickler that rebuilds only numpy arrays, dtypes and scalars inside
plain containers (dict, list, str, numbers); a file referring to anything else is refused with an
error naming it, and nothing in it runs. ``allow_pickle=True`` unpickles fully (trusted files only).
The same keys in a ``.npz`` (``np.savez``) load without pickle.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from processing.connectivity import compute_fcns

from .fcn_checks import REASON_NAN_FCN, ExclusionLog, atlas_num_rois, time_series_problem
from .load_fcn_stack import fcn_stack_to_table
from .phenotype_mappings import ColumnMapping, PhenotypeMapping, default_registry
from .subjects import SubjectTable

TIMESERIES_KEYS = ("timeseires", "timeseries")  # BNT spells it "timeseires"
SUBJECT_ID_KEYS = ("subject_id", "subject_ids", "id", "ids")

_PICKLE_REFUSED = (
    "{name} is a pickled Python object that refers to {what}, not only numpy arrays. Unpickling it can "
    "execute arbitrary code hidden in the file, so it is refused by default. If you trust where the file "
    "comes from, pass allow_pickle=True; or re-save its arrays without pickle: np.savez('{stem}.npz', **dict) "
    "and load that."
)
# The globals a pickled dict of numpy arrays needs (numpy 1.x and 2.x module names).
_SAFE_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
    ("numpy.dtypes", name) for name in dir(np.dtypes) if name.endswith("DType")
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


def _load_pickled_arrays(path: Path):
    """The object a pickled ``.npy`` holds, rebuilt by `_ArrayUnpickler` (no arbitrary code runs)."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"{path.name}: unsupported .npy format version {version}.")
        shape, _, dtype = readers[version](handle)
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        try:
            return _ArrayUnpickler(handle, encoding="latin1").load()
        except pickle.UnpicklingError as err:
            raise ValueError(_PICKLE_REFUSED.format(name=path.name, stem=path.stem, what=f"{err}")) from None


def read_braingb(path: str | Path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The dict of arrays stored in a BrainGB/BNT ``.npy`` (pickled dict: restricted unpickling unless
    `allow_pickle`) or ``.npz``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if suffix != ".npy":
        raise ValueError(f"A BrainGB/BNT file is .npy (pickled dict) or .npz, got {path.name!r}.")
    data = np.load(path, allow_pickle=True) if allow_pickle else _load_pickled_arrays(path)
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        data = data.item()
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path.name} holds {type(data).__name__} {getattr(data, 'shape', '')}, not a dict with 'corr' and "
            "'label'; for a plain (S, N, N) array use load_fcn_stack."
        )
    return {str(k): np.asarray(v) for k, v in data.items()}


def load_braingb(
    path: str | Path,
    label_attribute: str | None,
    *,
    atlas: str,
    allow_pickle: bool = False,
    label_codes: Mapping[Any, Any] | None = None,
    num_rois: int | None = None,
    dataset: str | None = None,
    site: str = "unknown",
    use_timeseries: bool = False,
    kind: str = "correlation",
    fisher_z: bool = False,
    cov_estimator: str = "empirical",
    min_timepoints: int = 20,
    on_nan: Literal["raise", "exclude"] = "raise",
) -> SubjectTable:
    """Load a BrainGB / BNT cohort file.

    Args:
        label_attribute: the registry key the ``label`` array fills (e.g. ``"autism"``); None drops it.
        atlas: atlas name stored with each subject; FCN sizes are checked against it.
        allow_pickle: fully unpickle a ``.npy`` dict (trusted files only); by default only numpy
            arrays in plain containers are rebuilt (see the module docstring).
        label_codes: raw label -> attribute value. Default for a binary attribute ``{0: 0, 1: 1}``
            (1 = has the condition; check your file: e.g. ``{0: 1, 1: 0}`` if 0 marks patients),
            none (numbers) for a continuous one; a categorical one needs codes.
        site: site of every subject when the file has no ``site`` array.
        use_timeseries: recompute FCNs from the time series (`(S, N, T)` as BNT stores it, or
            `(S, T, N)`) with `kind` / `fisher_z` / `cov_estimator`, excluding subjects whose series
            are too short or have constant ROIs (counted per site).
        on_nan: an FCN with NaN raises (naming the subject), or with ``"exclude"`` drops the subject,
            counted per site under ``"nan_fcn"``.
    """
    path = Path(path)
    data = read_braingb(path, allow_pickle=allow_pickle)
    dataset = dataset or path.stem
    ts_key = next((k for k in TIMESERIES_KEYS if k in data), None)
    if "corr" not in data and not (use_timeseries and ts_key):
        raise ValueError(f"{path.name} has no 'corr' array; its keys: {sorted(data)}.")
    count = len(data["corr"]) if "corr" in data else len(data[ts_key])
    if label_attribute is not None and "label" not in data:
        raise ValueError(f"{path.name} has no 'label' array for {label_attribute!r}; its keys: {sorted(data)}.")
    id_key = next((k for k in SUBJECT_ID_KEYS if k in data), None)
    ids = [str(s).strip() for s in data[id_key].tolist()] if id_key else [f"{dataset}-{i:05d}" for i in range(count)]
    sites = [str(s).strip() for s in data["site"].tolist()] if "site" in data else [site] * count
    for key, values in (("label", data.get("label")), ("site", sites), (id_key, ids)):
        if values is not None and key is not None and (np.ndim(values) != 1 or len(values) != count):
            raise ValueError(f"{path.name}: '{key}' must have one value per subject ({count}), got shape {np.shape(values)}.")

    frame = pd.DataFrame({"subject_id": ids, "site": sites})
    if label_attribute is not None:
        frame["label"] = data["label"].tolist()
        frame = _map_label(frame, label_attribute, label_codes, dataset, site)

    info: dict[str, Any] = {
        "source": {
            "format": "braingb", "path": str(path), "atlas": atlas, "keys": sorted(data),
            "fcn_from": "timeseries" if use_timeseries else "corr",
        },
        "unmatched": {},
    }
    exclusions = ExclusionLog()
    if use_timeseries:
        if ts_key is None:
            raise ValueError(f"use_timeseries=True but {path.name} has no time series; its keys: {sorted(data)}.")
        expected = atlas_num_rois(atlas, num_rois) or (data["corr"].shape[1] if "corr" in data else None)
        series = _series_per_subject(data[ts_key], expected, path.name)
        keep = []
        for i, ts in enumerate(series):
            problem = time_series_problem(ts, kind, min_timepoints, cov_estimator)
            if problem is None:
                keep.append(i)
            else:
                exclusions.add(ids[i], sites[i], problem[0], problem[1])
        if keep:
            fcns = compute_fcns([series[i] for i in keep], kind=kind, fisher_z=fisher_z, cov_estimator=cov_estimator)
    else:
        fcns = np.asarray(data["corr"])
        keep = list(range(count))
        if on_nan == "exclude" and fcns.ndim == 3:
            finite = np.isfinite(fcns).all(axis=(1, 2))
            for i in np.nonzero(~finite)[0]:
                exclusions.add(ids[i], sites[i], REASON_NAN_FCN, "NaN or inf in the FCN")
            keep = np.nonzero(finite)[0].tolist()
            fcns = fcns[keep]
        elif on_nan not in ("raise", "exclude"):
            raise ValueError(f"on_nan must be 'raise' or 'exclude', got {on_nan!r}.")

    kept = frame.iloc[keep].reset_index(drop=True)
    info["excluded"] = exclusions.counts()
    info["excluded_subjects"] = exclusions.records
    info["counts"] = {"subjects": count, "excluded": len(exclusions.records), "loaded": len(kept)}
    exclusions.report(kept["site"].tolist(), source=dataset)
    if not keep:
        raise ValueError(f"{dataset}: no subject left in {path.name}, all excluded ({info['excluded']}).")
    return fcn_stack_to_table(
        fcns,
        kept["subject_id"].tolist(),
        atlas=atlas,
        dataset=dataset,
        sites=kept["site"].tolist(),
        attributes=kept.drop(columns=["subject_id", "site"]),
        num_rois=num_rois,
        info=info,
    )


def _map_label(
    frame: pd.DataFrame, attribute: str, codes: Mapping[Any, Any] | None, dataset: str, site: str
) -> pd.DataFrame:
    """Replace the raw ``label`` column by the attribute column, through the mapping machinery."""
    registry = default_registry()
    if codes is None and attribute in registry and registry[attribute].kind == "binary":
        codes = {0: 0.0, 1: 1.0}
    mapping = PhenotypeMapping(
        name=dataset, subject_id="subject_id", site="site", columns=(ColumnMapping("label", attribute, codes=codes),)
    )
    mapped = mapping.apply(frame, default_site=site)
    if mapped.rows_without_id:
        raise ValueError(f"{dataset}: {mapped.rows_without_id} subject(s) have an empty subject id.")
    return mapped.frame


def _series_per_subject(stack: np.ndarray, num_rois: int | None, name: str) -> Sequence[np.ndarray]:
    """Time series `(S, N, T)` or `(S, T, N)` (or a list of `(N, T)`) as a list of `(T, N)` float64."""
    items = list(stack) if stack.dtype == object or stack.ndim != 3 else stack
    out = []
    for ts in items:
        ts = np.asarray(ts, dtype=np.float64)
        if ts.ndim != 2:
            raise ValueError(f"{name}: each subject's time series must be 2-D, got shape {ts.shape}.")
        if num_rois is None or ts.shape[0] == num_rois:  # BNT stores (N, T)
            ts = ts.T
        elif ts.shape[1] != num_rois:
            raise ValueError(f"{name}: time series of shape {ts.shape} has no axis of the atlas' {num_rois} ROIs.")
        out.append(ts)
    return out
