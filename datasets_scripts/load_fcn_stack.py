"""Loader (c): a stack of FCNs plus a CSV of attributes -> `SubjectTable`.

Inputs:
- ``.npy`` holding an array `(S, N, N)` (read without pickle), or
- ``.npz`` holding ``fcns`` `(S, N, N)` and optionally ``subject_ids`` `(S,)`;
- optionally a phenotype table (CSV/TSV path or DataFrame). With ``subject_ids`` in the stack, rows
  are matched by id (zero-padding tolerant) and the leftovers on either side are counted in
  ``info["unmatched"]``; without them, row i belongs to FCN i and the counts must agree. A
  ``dataset`` column (or a mapping's ``dataset``) names each row's cohort, for stacks of several.

`fcn_stack_to_table` is the common last step of every real-cohort loader, and
`load_hcp_individuals` runs brainspace's 24 real HCP FCNs through it as a real-data check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .fcn_checks import check_fcn_stack
from .hcp import PARCELLATIONS, load_individual_fcns
from .phenotype_mappings import PhenotypeMapping, load_mapping, read_phenotype_table
from .subject_ids import canonical_id
from .subjects import SubjectTable

logger = logging.getLogger("datasets_scripts.loaders")

MappingLike = PhenotypeMapping | Mapping[str, Any] | str | Path


def fcn_stack_to_table(
    fcns: np.ndarray,
    subject_ids: Sequence[str],
    *,
    atlas: str,
    dataset: str | Sequence[str],
    sites: Sequence[str] | str = "unknown",
    attributes: pd.DataFrame | None = None,
    num_rois: int | None = None,
    info: dict | None = None,
) -> SubjectTable:
    """Assemble a checked `SubjectTable` from FCNs `(S, N, N)` and S aligned metadata rows.

    Args:
        subject_ids: S ids.
        dataset: the cohort name, or S of them.
        sites: S sites, or one site for all.
        attributes: S rows in FCN order, columns = attribute keys (no id / site columns).
        num_rois: the atlas size when `atlas` is not one `processing.atlases` knows.
    Raises ValueError for an FCN size other than the atlas' or NaN in an FCN (naming the subject).
    """
    ids = [str(s) for s in subject_ids]
    fcns = check_fcn_stack(fcns, ids, atlas, num_rois)
    site_list = [sites] * len(ids) if isinstance(sites, str) else [str(s) for s in sites]
    datasets = [dataset] * len(ids) if isinstance(dataset, str) else [str(d) for d in dataset]
    meta = pd.DataFrame({"subject_id": ids, "dataset": datasets, "site": site_list, "atlas": atlas})
    if attributes is not None:
        if len(attributes) != len(ids):
            raise ValueError(f"{len(ids)} FCNs but {len(attributes)} attribute rows.")
        meta = pd.concat([meta, attributes.reset_index(drop=True)], axis=1)
    return SubjectTable(fcns=fcns, meta=meta, info=dict(info or {}))


def read_fcn_stack(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """FCNs `(S, N, N)` and subject ids (or None) from a ``.npy`` or ``.npz`` file, without pickle."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "fcns" not in data.files:
                raise ValueError(f"{path.name} has no array 'fcns'; its arrays: {data.files}.")
            fcns = data["fcns"]
            ids = [str(s) for s in data["subject_ids"].tolist()] if "subject_ids" in data.files else None
    elif path.suffix.lower() == ".npy":
        try:
            fcns = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(
                f"{path.name} holds Python objects, not an (S, N, N) array; for BrainGB/BNT dicts use load_braingb. ({err})"
            ) from None
        ids = None
    else:
        raise ValueError(f"FCN stack must be a .npy or .npz file, got {path.name!r}.")
    if fcns.ndim != 3 or fcns.shape[1] != fcns.shape[2]:
        raise ValueError(f"{path.name}: FCNs must have shape (S, N, N), got {fcns.shape}.")
    if ids is not None and len(ids) != len(fcns):
        raise ValueError(f"{path.name}: {len(fcns)} FCNs but {len(ids)} subject_ids.")
    return fcns, ids


def load_fcn_stack(
    path: str | Path,
    phenotype: str | Path | pd.DataFrame | None = None,
    mapping: MappingLike | None = None,
    *,
    atlas: str,
    num_rois: int | None = None,
    dataset: str | None = None,
    site: str = "unknown",
) -> SubjectTable:
    """Load FCNs `(S, N, N)` from ``.npy``/``.npz`` plus optional attributes.

    Args:
        phenotype: table of attributes; without `mapping` it must already be in our conventions
            (columns ``subject_id``, optional ``site``, then attribute keys: `PhenotypeMapping.native`).
        mapping: a `PhenotypeMapping`, dict, ready name (``"abide1"``) or JSON path.
        atlas: the atlas name stored with each subject; FCN sizes are checked against it.
        dataset: the cohort name (default: the mapping's name or the file's stem).
        site: the site of subjects whose table gives none.
    """
    path = Path(path)
    fcns, ids = read_fcn_stack(path)
    info: dict[str, Any] = {
        "source": {"format": "fcn_stack", "path": str(path), "atlas": atlas},
        "excluded": {},
        "unmatched": {},
    }
    if phenotype is None:
        dataset = dataset or path.stem
        ids = ids if ids is not None else _generated_ids(dataset, len(fcns))
        info["counts"] = {"fcns": len(fcns), "loaded": len(fcns)}
        return fcn_stack_to_table(
            fcns, ids, atlas=atlas, dataset=dataset, sites=site, num_rois=num_rois, info=info
        )

    table = read_phenotype_table(phenotype)
    if mapping is None:
        mapping = PhenotypeMapping.native(
            [str(c) for c in table.columns], name=dataset or path.stem, site="site" if "site" in table.columns else None
        )
    mapping = load_mapping(mapping)
    dataset = dataset or mapping.name
    if ids is None:
        if len(table) != len(fcns):
            raise ValueError(
                f"{path.name} has {len(fcns)} FCNs and no subject_ids, so rows are matched in order, but the "
                f"phenotype table has {len(table)} rows."
            )
        if mapping.subject_id not in table.columns:
            table = table.assign(**{mapping.subject_id: _generated_ids(dataset, len(fcns))})
    mapped = mapping.apply(table, default_site=site)
    frame = mapped.frame
    if ids is None:
        if mapped.rows_without_id:
            raise ValueError(
                f"{mapped.rows_without_id} phenotype row(s) have no subject id, so rows no longer align with FCNs."
            )
        keep = np.arange(len(fcns))
        rows = frame
    else:
        by_key = {canonical_id(s): i for i, s in enumerate(frame["subject_id"])}
        pairs = [(i, by_key[canonical_id(s)]) for i, s in enumerate(ids) if canonical_id(s) in by_key]
        keep = np.array([i for i, _ in pairs], dtype=int)
        rows = frame.iloc[[j for _, j in pairs]].reset_index(drop=True)
        matched_fcns, matched_rows = {i for i, _ in pairs}, {j for _, j in pairs}
        info["unmatched"] = {
            "fcns_without_phenotype": [s for i, s in enumerate(ids) if i not in matched_fcns],
            "phenotype_without_fcn": [s for j, s in enumerate(frame["subject_id"]) if j not in matched_rows],
        }
    info["unmatched"]["phenotype_rows_without_id"] = mapped.rows_without_id
    info["counts"] = {"fcns": len(fcns), "phenotype_rows": len(table), "loaded": int(len(keep))}
    _log_unmatched(dataset, info["unmatched"])
    return fcn_stack_to_table(
        fcns[keep],
        rows["subject_id"].tolist(),
        atlas=atlas,
        dataset=rows["dataset"].tolist() if "dataset" in rows.columns else dataset,
        sites=rows["site"].tolist(),
        attributes=rows.drop(columns=[c for c in ("subject_id", "site", "dataset") if c in rows.columns]),
        num_rois=num_rois,
        info=info,
    )


def load_hcp_individuals(parcellation: str = "schaefer_100") -> SubjectTable:
    """The 3 real HCP subjects brainspace ships for one parcellation (no attribute columns).

    Schaefer parcellations get the atlas name ``schaefer{N}-7`` (the ROI order of
    `processing.atlases`), Vos de Wael ones ``vosdewael{N}`` (size checked against N).
    """
    key = parcellation.lower()
    if key not in PARCELLATIONS:
        raise ValueError(f"Unknown HCP parcellation {parcellation!r}; available: {', '.join(PARCELLATIONS)}.")
    family, size = key.split("_")
    atlas = f"schaefer{size}-7" if family == "schaefer" else f"vosdewael{size}"
    subjects = load_individual_fcns(key)
    return fcn_stack_to_table(
        np.stack([s.fcn for s in subjects]),
        [s.subject_id for s in subjects],
        atlas=atlas,
        dataset="HCP",
        sites="HCP",
        num_rois=int(size),
        info={"source": {"format": "hcp_individual", "parcellation": key}, "excluded": {}, "unmatched": {}},
    )


def _generated_ids(dataset: str, count: int) -> list[str]:
    return [f"{dataset}-{i:05d}" for i in range(count)]


def _log_unmatched(source: str, unmatched: Mapping[str, Any]) -> None:
    for what, items in unmatched.items():
        count = items if isinstance(items, int) else len(items)
        if count:
            example = "" if isinstance(items, int) else f", e.g. {list(items)[:5]}"
            logger.warning("%s: %d %s%s.", source, count, what.replace("_", " "), example)
