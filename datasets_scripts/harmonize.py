"""Site harmonisation of FCNs with ComBat (neuroHarmonize), for cohorts whose sites were seen.

    fcns_h, model = harmonize_fcns(fcns, sites, covariates)          # learn on (S, N, N) FCNs
    held_out_h = apply_harmonization(held_out, held_out_sites, held_out_covariates, model)

ComBat (Johnson et al. 2007; Fortin et al. 2017/2018 for imaging) models every edge as
``z = alpha + X beta + gamma_site + delta_site * eps``: it removes each site's additive (gamma) and
multiplicative (delta) effect, pooled across edges by empirical Bayes, while the covariates X (age,
sex, ...) keep their effects. Here the features are the Fisher-z upper-triangle edges
``arctanh(r)``; harmonised edges go back through ``tanh`` into symmetric matrices with each
subject's original diagonal. A harmonised FCN is a symmetric matrix with entries in (-1, 1) but, like
any edge-wise correction, it is not guaranteed to be positive semi-definite.

A site's effect can only be estimated from that site's subjects: the learned model applies to other
subjects of the *same* sites (e.g. a validation split), never to unseen sites (a zero-shot split),
for which `apply_harmonization` raises. ComBat here has no randomness (linear covariate model, no
smooth terms): the same input gives the same output.

neuroHarmonize 2.5.2 pins numpy<2 and pandas<3 but runs on numpy 2 / pandas 3 for the calls used
here (tested), so the Makefile installs it and neuroCombat with ``--no-deps`` (their real
dependencies, statsmodels and nibabel, come with the ``data`` extra).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

SITE_COLUMN = "SITE"  # the batch column neuroHarmonize requires
_CLIP = 1 - 1e-7  # |r| clip before arctanh, as processing.connectivity.apply_fisher_z


class HarmonizationWarning(UserWarning):
    """A covariate was dropped (missing values, a single value, or confounded with site)."""


@dataclass
class HarmonizationModel:
    """What `harmonize_fcns` learned; `apply_harmonization` reuses it for more subjects of the same sites.

    Attributes:
        combat: neuroHarmonize's model dict (`harmonizationLearn`'s first output).
        sites: the learned sites, in neuroHarmonize's (sorted) order.
        site_counts: subjects per site in the learning set.
        covariates: the covariate columns kept (their effects are preserved), in design order.
        levels: categorical covariates: their levels (first = reference; the others dummy-coded).
        design_columns: the numeric columns handed to ComBat (a categorical column becomes
            ``"col=level"`` dummies).
        dropped: covariates not used, with the reason.
        num_rois: N of the FCNs.
        fisher_z: whether edges were Fisher-z transformed before ComBat.
        varying: `(E,)` bool, edges that vary across the learning subjects (constant edges have no
            site effect to remove and are passed through unchanged).
    """

    combat: dict
    sites: tuple[str, ...]
    site_counts: dict[str, int]
    covariates: tuple[str, ...]
    levels: dict[str, list[str]]
    design_columns: tuple[str, ...]
    dropped: dict[str, str]
    num_rois: int
    fisher_z: bool
    varying: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        return {"sites": list(self.sites), "site_counts": dict(self.site_counts), "covariates": list(self.covariates),
                "dropped_covariates": dict(self.dropped), "num_rois": self.num_rois, "fisher_z": self.fisher_z,
                "empirical_bayes": bool(self.combat.get("eb", True))}


# --------------------------------------------------------------------------------------------------
# Checks and conversions
# --------------------------------------------------------------------------------------------------
def _import_neuroharmonize():
    try:
        from neuroHarmonize import harmonizationApply, harmonizationLearn
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Site harmonisation needs neuroHarmonize: `pip install statsmodels nibabel && pip install --no-deps "
            "neuroHarmonize==2.5.2 neuroCombat==0.2.12` (what `make install` does).") from err
    return harmonizationLearn, harmonizationApply


def _check_fcns(fcns: np.ndarray, fisher_z: bool, what: str = "fcns") -> np.ndarray:
    fcns = np.asarray(fcns)
    if fcns.ndim != 3 or fcns.shape[1] != fcns.shape[2]:
        raise ValueError(f"{what} must have shape (S, N, N), got {tuple(fcns.shape)}.")
    if fcns.shape[1] < 2:
        raise ValueError(f"{what} must have at least 2 ROIs (N >= 2), got N={fcns.shape[1]}.")
    bad = np.flatnonzero(~np.isfinite(fcns).all(axis=(1, 2)))
    if len(bad):
        raise ValueError(f"{what} contain NaN or infinite values in {len(bad)} subject(s) (indices "
                         f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}); ComBat needs complete FCNs: "
                         "drop or repair those subjects first.")
    if fisher_z:
        iu = np.triu_indices(fcns.shape[1], 1)
        worst = float(np.abs(fcns[:, iu[0], iu[1]]).max()) if len(iu[0]) else 0.0
        if worst > 1 + 1e-6:
            raise ValueError(f"{what} have off-diagonal values up to |{worst:.3g}| > 1: not correlations, so Fisher z "
                             "(arctanh) does not apply; pass fisher_z=False for tangent-space or other matrices.")
    return fcns


def _check_sites(sites, n: int, what: str = "sites") -> np.ndarray:
    sites = pd.Series(np.asarray(sites, dtype=object).ravel())
    if len(sites) != n:
        raise ValueError(f"{what} has {len(sites)} entries but there are {n} FCNs; give one site label per subject.")
    missing = np.flatnonzero(sites.isna().to_numpy())
    if len(missing):
        raise ValueError(f"{what} has missing labels for {len(missing)} subject(s) (indices {missing[:10].tolist()}).")
    return sites.astype(str).to_numpy()


def _check_frame(covariates, n: int) -> pd.DataFrame:
    if covariates is None:
        return pd.DataFrame(index=range(n))
    if not isinstance(covariates, pd.DataFrame):
        raise TypeError(f"covariates must be a pandas DataFrame (one row per subject) or None, got {type(covariates).__name__}.")
    if len(covariates) != n:
        raise ValueError(f"covariates has {len(covariates)} rows but there are {n} FCNs; give one row per subject.")
    if SITE_COLUMN in covariates.columns:
        raise ValueError(f"covariates has a {SITE_COLUMN!r} column: that name is reserved for the site labels, "
                         "which are passed separately (`sites`).")
    return covariates.reset_index(drop=True)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{what} missing covariate column(s) {missing}; available columns: {list(frame.columns)}.")


def to_edges(fcns: np.ndarray, fisher_z: bool = True) -> np.ndarray:
    """`(S, E)` float64 upper-triangle edges (no diagonal), Fisher z (arctanh) when `fisher_z`."""
    iu = np.triu_indices(fcns.shape[1], 1)
    edges = np.asarray(fcns, dtype=np.float64)[:, iu[0], iu[1]]
    return np.arctanh(np.clip(edges, -_CLIP, _CLIP)) if fisher_z else edges


def from_edges(edges: np.ndarray, diagonal: np.ndarray, fisher_z: bool = True) -> np.ndarray:
    """`(S, N, N)` symmetric matrices from `(S, E)` edges (tanh'd back when `fisher_z`) and `(S, N)` diagonals."""
    s, n = diagonal.shape
    values = np.tanh(edges) if fisher_z else edges
    out = np.zeros((s, n, n), dtype=np.float64)
    iu = np.triu_indices(n, 1)
    out[:, iu[0], iu[1]] = values
    out[:, iu[1], iu[0]] = values
    out[:, np.arange(n), np.arange(n)] = diagonal
    return out


def _encode(frame: pd.DataFrame, columns: Sequence[str], levels: dict[str, list[str]]) -> pd.DataFrame:
    """Numeric design columns: numeric covariates as float, categoricals as dummies of their non-reference levels."""
    out = {}
    for col in columns:
        if col in levels:
            values = frame[col].astype(str)
            unknown = sorted(set(values) - set(levels[col]))
            if unknown:
                raise ValueError(f"Covariate {col!r} has level(s) {unknown} not seen when the model was learned "
                                 f"(known: {levels[col]}).")
            for level in levels[col][1:]:
                out[f"{col}={level}"] = (values == level).to_numpy(dtype=np.float64)
        else:
            out[col] = pd.to_numeric(frame[col]).to_numpy(dtype=np.float64)
    return pd.DataFrame(out, index=frame.index)


def _is_numeric(series: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return True
    present = series.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().all()


def _select_covariates(frame: pd.DataFrame, columns: Sequence[str], sites: np.ndarray
                       ) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """Covariates ComBat can use: complete, with at least two values, not confounded with site."""
    kept, levels, dropped = [], {}, {}
    for col in columns:
        series = frame[col]
        n_missing = int(series.isna().sum())
        if n_missing:
            dropped[col] = f"{n_missing} of {len(series)} subjects have no value (ComBat needs complete covariates)"
            continue
        if _is_numeric(series):
            distinct = pd.to_numeric(series).nunique()
        else:
            distinct = series.astype(str).nunique()
            levels[col] = sorted(series.astype(str).unique())
        if distinct < 2:
            dropped[col] = f"a single value ({series.iloc[0]!r}) for all subjects: no effect to preserve"
            levels.pop(col, None)
            continue
        kept.append(col)
    # Confounding: a covariate that the site indicators (and the covariates kept before it) already
    # explain makes the design singular; ComBat cannot separate its effect from the site's.
    design = pd.get_dummies(pd.Series(sites)).to_numpy(dtype=np.float64)
    final = []
    for col in kept:
        block = _encode(frame, [col], {col: levels[col]} if col in levels else {}).to_numpy()
        block = (block - block.mean(0)) / np.where(block.std(0) > 0, block.std(0), 1.0)
        trial = np.concatenate([design, block], axis=1)
        if np.linalg.matrix_rank(trial) < trial.shape[1]:
            dropped[col] = "confounded with site (collinear with the site indicators and the covariates kept before it)"
            levels.pop(col, None)
            continue
        design = trial
        final.append(col)
    return final, levels, dropped


# --------------------------------------------------------------------------------------------------
# Learn and apply
# --------------------------------------------------------------------------------------------------
def harmonize_fcns(fcns: np.ndarray, sites, covariates: pd.DataFrame | None = None, *,
                   columns: Sequence[str] | None = None, fisher_z: bool = True, eb: bool = True,
                   min_subjects_per_site: int = 2) -> tuple[np.ndarray, HarmonizationModel]:
    """Remove site effects from FCNs with ComBat, keeping the covariates' effects.

    Args:
        fcns: `(S, N, N)` FCNs (correlations unless `fisher_z=False`), no NaN.
        sites: `(S,)` site label per subject; at least two sites, each with `min_subjects_per_site`
            subjects (ComBat estimates a mean and a variance per site and edge).
        covariates: `S` rows of biological covariates whose effects must survive (age, sex, ...), or
            None. Numeric columns are used as they are, others are dummy-coded. A column with a
            missing value, a single value, or confounded with site is dropped with a
            `HarmonizationWarning` (and listed in `model.dropped`).
        columns: the covariate columns to use (default: all of `covariates`); each must exist.
        fisher_z: harmonise `arctanh(r)` edges (True) or the raw values (False, e.g. tangent space).
        eb: empirical Bayes pooling of the site effects across edges (ComBat's default).
        min_subjects_per_site: fewest subjects a site may have.

    Returns:
        `(S, N, N)` harmonised FCNs (symmetric, the input dtype, each subject's original diagonal)
        and the `HarmonizationModel` to apply to more subjects of the same sites.
    """
    harmonization_learn, _ = _import_neuroharmonize()
    fcns = _check_fcns(fcns, fisher_z)
    n_subjects = fcns.shape[0]
    sites = _check_sites(sites, n_subjects)
    frame = _check_frame(covariates, n_subjects)
    columns = list(frame.columns) if columns is None else list(columns)
    _require_columns(frame, columns, "covariates is")

    labels, counts = np.unique(sites, return_counts=True)
    if len(labels) < 2:
        raise ValueError(f"All {n_subjects} subjects come from one site ({labels[0]!r}): there is nothing to "
                         "harmonise (ComBat needs at least two sites).")
    small = {str(l): int(c) for l, c in zip(labels, counts) if c < min_subjects_per_site}
    if small:
        raise ValueError(f"Site(s) with fewer than {min_subjects_per_site} subjects: {small}. ComBat estimates a "
                         "mean and a variance per site, which needs at least two subjects: merge or drop these sites.")

    kept, levels, dropped = _select_covariates(frame, columns, sites)
    for col, why in dropped.items():
        warnings.warn(f"ComBat: covariate {col!r} dropped: {why}.", HarmonizationWarning, stacklevel=2)
    design = _encode(frame, kept, levels)
    n_params = len(labels) + design.shape[1]
    if n_subjects <= n_params:
        raise ValueError(f"{n_subjects} subjects cannot fit {len(labels)} site means plus {design.shape[1]} "
                         f"covariate column(s) ({n_params} parameters) with residual variance left; add subjects "
                         "or drop covariates.")

    edges = to_edges(fcns, fisher_z)
    varying = edges.std(axis=0) > 0
    if not varying.any():
        raise ValueError("Every edge has the same value in all subjects: there is no site effect to remove.")
    covars = pd.concat([pd.DataFrame({SITE_COLUMN: sites}), design.reset_index(drop=True)], axis=1)
    with warnings.catch_warnings():  # neuroHarmonize uses np.matrix (PendingDeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        combat, adjusted = harmonization_learn(edges[:, varying], covars, eb=eb)
    if not np.isfinite(adjusted).all():
        raise FloatingPointError("ComBat produced non-finite values (an edge with no variance inside some site?); "
                                 "check the FCNs of the smallest sites.")
    out = edges.copy()
    out[:, varying] = adjusted
    diagonal = np.diagonal(fcns, axis1=1, axis2=2).astype(np.float64)
    model = HarmonizationModel(combat=combat, sites=tuple(str(s) for s in combat["SITE_labels"]),
                               site_counts={str(l): int(c) for l, c in zip(labels, counts)}, covariates=tuple(kept),
                               levels=levels, design_columns=tuple(design.columns), dropped=dropped,
                               num_rois=fcns.shape[1], fisher_z=fisher_z, varying=varying)
    return from_edges(out, diagonal, fisher_z).astype(fcns.dtype, copy=False), model


def apply_harmonization(fcns: np.ndarray, sites, covariates: pd.DataFrame | None,
                        model: HarmonizationModel) -> np.ndarray:
    """Harmonise more subjects of the learned sites with `model` (neuroHarmonize's `harmonizationApply`).

    Raises for sites the model did not learn: their site effect is unknown (a zero-shot cohort cannot
    be harmonised with this model; leave it as it is or learn a model that includes it).
    """
    _, harmonization_apply = _import_neuroharmonize()
    fcns = _check_fcns(fcns, model.fisher_z)
    if fcns.shape[1] != model.num_rois:
        raise ValueError(f"fcns have N={fcns.shape[1]} ROIs but the harmonisation model was learned on N={model.num_rois}.")
    n_subjects = fcns.shape[0]
    sites = _check_sites(sites, n_subjects)
    unseen = sorted(set(sites) - set(model.sites))
    if unseen:
        raise ValueError(f"Cannot harmonise site(s) {unseen}: the model learned only {list(model.sites)}. ComBat "
                         "estimates each site's effect from its own subjects, so unseen sites (e.g. zero-shot "
                         "cohorts) cannot be harmonised with it.")
    if n_subjects == 0:
        return fcns.copy()
    if model.covariates:
        if covariates is None:
            raise KeyError(f"The model preserves covariate(s) {list(model.covariates)}: pass them (covariates is None).")
        frame = _check_frame(covariates, n_subjects)
        _require_columns(frame, model.covariates, "covariates is")
        for col in model.covariates:
            missing = np.flatnonzero(frame[col].isna().to_numpy())
            if len(missing):
                raise ValueError(f"Covariate {col!r} is missing for {len(missing)} subject(s) (indices "
                                 f"{missing[:10].tolist()}); the model needs it for every subject.")
        design = _encode(frame, model.covariates, model.levels)
    else:
        design = pd.DataFrame(index=range(n_subjects))
    # neuroHarmonize 2.5.2 builds the site one-hot from the sites *present* in the call, which only
    # lines up with the learned sites when all of them are present: pad with one throw-away row per
    # absent site (each row is adjusted independently of the others) and drop those rows afterwards.
    absent = [s for s in model.sites if s not in set(sites)]
    edges = to_edges(fcns, model.fisher_z)[:, model.varying]
    covars = pd.concat([pd.DataFrame({SITE_COLUMN: sites}), design.reset_index(drop=True)], axis=1)
    if absent:
        pad = pd.DataFrame({SITE_COLUMN: absent, **{c: 0.0 for c in design.columns}})
        covars = pd.concat([covars, pad], ignore_index=True)
        edges_in = np.concatenate([edges, np.zeros((len(absent), edges.shape[1]))])
    else:
        edges_in = edges
    adjusted = np.asarray(harmonization_apply(edges_in, covars, model.combat))[:n_subjects]
    if not np.isfinite(adjusted).all():
        raise FloatingPointError("ComBat (apply) produced non-finite values.")
    out = to_edges(fcns, model.fisher_z)
    out[:, model.varying] = adjusted
    diagonal = np.diagonal(fcns, axis1=1, axis2=2).astype(np.float64)
    return from_edges(out, diagonal, model.fisher_z).astype(fcns.dtype, copy=False)


def site_variance_share(fcns: np.ndarray, sites, fisher_z: bool = True) -> float:
    """Mean over edges of the between-site share of variance (eta squared: between-site sum of squares
    over total sum of squares) of the (Fisher-z) edges; 0 when site explains nothing."""
    edges = to_edges(np.asarray(fcns), fisher_z)
    sites = np.asarray(sites).astype(str)
    centred = edges - edges.mean(0)
    total = (centred ** 2).sum(0)
    between = np.zeros(edges.shape[1])
    for s in np.unique(sites):
        rows = sites == s
        between += rows.sum() * centred[rows].mean(0) ** 2
    ok = total > 0
    return float(np.mean(between[ok] / total[ok]))
