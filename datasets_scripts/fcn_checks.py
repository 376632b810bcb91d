"""Checks shared by the real-cohort loaders: atlas sizes, FCN stacks, time-series exclusions.

Bad input is a clear error or a counted skip, never a silent loss:
- an FCN / time series of the wrong size for the atlas, or an FCN with NaN: ValueError naming them;
- a time series too short, with constant ROIs or non-finite values: the subject is excluded, counted
  per site and reason (`ExclusionLog`), logged, and a warning names any site that lost everyone.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from processing.atlases import available_atlases, load_atlas
from processing.connectivity import min_timepoints as connectivity_min_timepoints

logger = logging.getLogger("datasets_scripts.loaders")

REASON_TOO_SHORT = "too_short"
REASON_CONSTANT_ROI = "constant_roi"
REASON_NON_FINITE = "non_finite"
REASON_NAN_FCN = "nan_fcn"


def atlas_num_rois(atlas: str, num_rois: int | None = None) -> int | None:
    """ROI count of an atlas: `num_rois` if given (checked against a known atlas), else the atlas
    file's count, else None (an atlas we do not ship, e.g. ABIDE's cc200: sizes come from the data)."""
    known = atlas.lower().replace("_", "-") in available_atlases()
    if not known:
        return num_rois
    size = load_atlas(atlas).num_rois
    if num_rois is not None and num_rois != size:
        raise ValueError(f"num_rois={num_rois} but atlas {atlas!r} has {size} ROIs.")
    return size


def check_fcn_stack(
    fcns: np.ndarray,
    subject_ids: Sequence[str],
    atlas: str,
    num_rois: int | None = None,
    symmetry_atol: float = 1e-3,
) -> np.ndarray:
    """Validate FCNs `(S, N, N)` against the atlas and return them as float32.

    Raises ValueError for a wrong shape, a size other than the atlas' (naming both sizes), NaN/inf
    (naming the subjects) or an asymmetric matrix (naming the subjects).
    """
    fcns = np.asarray(fcns)
    if fcns.ndim != 3 or fcns.shape[1] != fcns.shape[2]:
        raise ValueError(f"FCNs must have shape (S, N, N), got {fcns.shape}.")
    if not (np.issubdtype(fcns.dtype, np.floating) or np.issubdtype(fcns.dtype, np.integer)):
        raise ValueError(f"FCNs must be numeric, got dtype {fcns.dtype}.")
    if len(subject_ids) != fcns.shape[0]:
        raise ValueError(f"{fcns.shape[0]} FCNs but {len(subject_ids)} subject ids.")
    expected = atlas_num_rois(atlas, num_rois)
    if expected is not None and fcns.shape[1] != expected:
        raise ValueError(f"FCNs are {fcns.shape[1]} x {fcns.shape[1]} but atlas {atlas!r} has {expected} ROIs.")
    bad = np.nonzero(~np.isfinite(fcns).all(axis=(1, 2)))[0]
    if bad.size:
        names = [subject_ids[i] for i in bad[:10]]
        raise ValueError(f"FCN of subject(s) {names} has NaN or inf values ({bad.size} subject(s) in all).")
    asym = np.abs(fcns - np.swapaxes(fcns, 1, 2)).max(axis=(1, 2)) if fcns.size else np.zeros(len(fcns))
    bad = np.nonzero(asym > symmetry_atol)[0]
    if bad.size:
        names = [subject_ids[i] for i in bad[:10]]
        raise ValueError(
            f"FCN of subject(s) {names} is not symmetric (max |A - A.T| = {asym[bad[0]]:.3g} > {symmetry_atol:g})."
        )
    return fcns.astype(np.float32, copy=False)


def time_series_problem(
    ts: np.ndarray, kind: str = "correlation", min_timepoints: int = 0, cov_estimator: str = "empirical"
) -> tuple[str, str] | None:
    """Why a subject's time series `(T, N)` cannot give an FCN, as (reason, detail); None if fine.

    The same tests as `processing.connectivity.validate_time_series`, as a reason to count (a
    Ledoit-Wolf covariance needs fewer timepoints than an empirical one for partial correlation).
    """
    num_t, num_rois = ts.shape
    if not np.isfinite(ts).all():
        rois = np.unique(np.nonzero(~np.isfinite(ts))[1])
        return REASON_NON_FINITE, f"NaN or inf in ROI(s) {rois[:10].tolist()}"
    needed = max(min_timepoints, connectivity_min_timepoints(kind, num_rois, cov_estimator))
    if num_t < needed:
        return REASON_TOO_SHORT, f"{num_t} timepoints, at least {needed} needed"
    constant = np.nonzero(ts.std(axis=0) <= 1e-12 * (1.0 + np.abs(ts).max()))[0]
    if constant.size:
        return REASON_CONSTANT_ROI, f"{constant.size} constant ROI(s), e.g. {constant[:10].tolist()}"
    return None


@dataclass
class ExclusionLog:
    """Subjects a loader excluded, with their site and reason."""

    records: list[dict] = field(default_factory=list)

    def add(self, subject_id: str, site: str, reason: str, detail: str = "") -> None:
        self.records.append({"subject_id": subject_id, "site": site, "reason": reason, "detail": detail})

    def counts(self) -> dict[str, dict[str, int]]:
        """``{site: {reason: count}}``."""
        out: dict[str, dict[str, int]] = {}
        for rec in self.records:
            site = out.setdefault(rec["site"], {})
            site[rec["reason"]] = site.get(rec["reason"], 0) + 1
        return out

    def report(self, kept_sites: Sequence[str], source: str) -> None:
        """Log the count per site (logging WARNING); a site that lost all its subjects also gets a
        `UserWarning` naming it (the silent loss of a whole site is what users of other tools report)."""
        kept = Counter(kept_sites)
        for site, reasons in sorted(self.counts().items()):
            total = sum(reasons.values())
            logger.warning(
                "%s: excluded %d subject(s) of site %r (%s); %d kept.",
                source, total, site, ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())), kept[site],
            )
            if kept[site] == 0:
                message = (
                    f"{source}: every subject of site {site!r} was excluded ({total}: "
                    f"{', '.join(f'{r}: {n}' for r, n in sorted(reasons.items()))}); the site is dropped."
                )
                logger.warning(message)
                warnings.warn(message, UserWarning, stacklevel=3)
