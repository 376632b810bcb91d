"""ROI time series -> functional connectivity networks (FCNs), and FCN validation.

Measures (all batched over subjects with numpy, no Python loop over ROI pairs):

- ``"correlation"``: Pearson correlation. With ``cov_estimator="ledoit_wolf"`` the covariance of the
  z-scored signals is shrunk first, as nilearn's ``ConnectivityMeasure`` does by default.
- ``"partial correlation"``: ``-P_ij / sqrt(P_ii P_jj)`` of the precision matrix ``P``.
- ``"tangent"``: ``logm(G^-1/2 C G^-1/2)`` with ``G`` the geometric mean of the group's covariances
  (Varoquaux et al. 2010); needs a group (`compute_fcns`) or a given reference ``G``.

Equal to nilearn's ``ConnectivityMeasure(kind=..., cov_estimator=EmpiricalCovariance() | LedoitWolf())``
to 1e-5 (tested). Optional Fisher z: ``arctanh(r)`` off the diagonal, 0 on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KINDS = ("correlation", "partial correlation", "tangent")
COV_ESTIMATORS = ("empirical", "ledoit_wolf")


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
def min_timepoints(kind: str, num_rois: int) -> int:
    """Fewest timepoints a measure needs: 3 for a correlation, N + 1 for an invertible covariance."""
    _check_kind(kind)
    return 3 if kind == "correlation" else num_rois + 1


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"Unknown connectivity kind {kind!r}; choose one of {KINDS}.")


def validate_time_series(time_series: np.ndarray, kind: str = "correlation", name: str = "time series") -> np.ndarray:
    """Check one subject's ROI time series `(T, N)` and return it as float64.

    Raises ValueError naming the problem: ndim, dtype, NaN/inf, too few timepoints, constant ROIs.
    """
    _check_kind(kind)
    arr = np.asarray(time_series)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (T, N) = (timepoints, ROIs), got ndim={arr.ndim} shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric (float), got dtype {arr.dtype}.")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = np.unique(np.nonzero(~np.isfinite(arr))[1])
        raise ValueError(f"{name} has NaN or inf values in ROI(s) {bad[:10].tolist()}.")
    num_t, num_rois = arr.shape
    needed = min_timepoints(kind, num_rois)
    if num_t < needed:
        raise ValueError(
            f"{name} has {num_t} timepoints but kind={kind!r} with N={num_rois} ROIs needs at least {needed}."
        )
    constant = np.nonzero(arr.std(axis=0) <= 1e-12 * (1.0 + np.abs(arr).max()))[0]
    if constant.size:
        raise ValueError(
            f"{name} has {constant.size} constant ROI(s) (zero variance), e.g. ROI(s) {constant[:10].tolist()}; "
            "their correlations are undefined. Drop those ROIs or the subject."
        )
    return arr


def validate_fcn(
    fcn: np.ndarray, num_rois: int | None = None, symmetry_atol: float = 1e-4, name: str = "FCN"
) -> np.ndarray:
    """Check one FCN `(N, N)` and return it as float32.

    Raises ValueError naming the problem: ndim, dtype, not square, wrong N, NaN/inf, asymmetric.
    """
    arr = fcn.detach().cpu().numpy() if hasattr(fcn, "detach") else np.asarray(fcn)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, N) matrix, got ndim={arr.ndim} shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric (float), got dtype {arr.dtype}.")
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be square (N, N), got shape {arr.shape}.")
    if num_rois is not None and arr.shape[0] != num_rois:
        raise ValueError(f"{name} has N={arr.shape[0]} ROIs but the model expects num_rois={num_rois}.")
    if not np.isfinite(arr).all():
        count = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} has {count} NaN or inf value(s).")
    asym = float(np.abs(arr - arr.T).max()) if arr.size else 0.0
    if asym > symmetry_atol:
        raise ValueError(f"{name} is not symmetric: max |A - A.T| = {asym:.3g} > tolerance {symmetry_atol:g}.")
    return arr.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Covariances
# --------------------------------------------------------------------------------------------------
def _covariances(series: np.ndarray, estimator: str) -> np.ndarray:
    """Covariances `(S, N, N)` of centred series `(S, T, N)` (maximum likelihood, divided by T)."""
    if estimator not in COV_ESTIMATORS:
        raise ValueError(f"Unknown cov_estimator {estimator!r}; choose one of {COV_ESTIMATORS}.")
    num_t, num_rois = series.shape[1], series.shape[2]
    centred = series - series.mean(axis=1, keepdims=True)
    cov = np.einsum("stn,stm->snm", centred, centred) / num_t
    if estimator == "empirical":
        return cov
    # Ledoit-Wolf shrinkage towards mu * I, the formula of sklearn.covariance.ledoit_wolf_shrinkage.
    sq = centred**2
    trace = np.einsum("snn->s", cov)
    mu = trace / num_rois
    beta_sum = np.einsum("stn,stm->s", sq, sq)  # sum_ij sum_t x_ti^2 x_tj^2
    delta_sum = np.einsum("snm,snm->s", cov, cov)  # ||cov||_F^2
    beta = (beta_sum / num_t - delta_sum) / (num_rois * num_t)
    delta = (delta_sum - 2 * mu * trace + num_rois * mu**2) / num_rois
    beta = np.minimum(beta, delta)
    shrinkage = np.where(beta == 0, 0.0, beta / np.where(delta == 0, 1.0, delta))
    eye = np.eye(num_rois)
    return (1 - shrinkage)[:, None, None] * cov + (shrinkage * mu)[:, None, None] * eye


def _cov_to_corr(cov: np.ndarray) -> np.ndarray:
    std = np.sqrt(np.einsum("...nn->...n", cov))
    corr = cov / std[..., :, None] / std[..., None, :]
    idx = np.arange(cov.shape[-1])
    corr[..., idx, idx] = 1.0
    return corr


def _map_eigenvalues(fn, matrices: np.ndarray) -> np.ndarray:
    """``V fn(w) V^T`` for symmetric matrices `(..., N, N)`."""
    vals, vecs = np.linalg.eigh(matrices)
    return (vecs * fn(vals)[..., None, :]) @ np.swapaxes(vecs, -1, -2)


def geometric_mean(covariances: np.ndarray, max_iter: int = 30, tol: float = 1e-7) -> np.ndarray:
    """Riemannian geometric mean `(N, N)` of SPD matrices `(S, N, N)` (Fletcher & Joshi 2007, Alg. 3)."""
    gmean = covariances.mean(axis=0)
    norm_old, step = np.inf, 1.0
    for _ in range(max_iter):
        vals, vecs = np.linalg.eigh(gmean)
        inv_sqrt = (vecs / np.sqrt(vals)) @ vecs.T
        logs_mean = _map_eigenvalues(np.log, inv_sqrt @ covariances @ inv_sqrt).mean(axis=0)
        if np.isnan(logs_mean).any():
            raise FloatingPointError("NaN in the matrix logarithm: a covariance is not positive definite.")
        norm = float(np.linalg.norm(logs_mean))
        sqrt = (vecs * np.sqrt(vals)) @ vecs.T
        gmean = sqrt @ _map_eigenvalues(lambda v: np.exp(v * step), logs_mean) @ sqrt
        if norm < norm_old:
            norm_old = norm
        elif norm > norm_old:
            step, norm = step / 2.0, norm_old
        if norm / gmean.size < tol:
            break
    return gmean


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------
def apply_fisher_z(fcn: np.ndarray) -> np.ndarray:
    """``arctanh(r)`` off the diagonal (clipped to |r| <= 1 - 1e-7), 0 on the diagonal."""
    z = np.arctanh(np.clip(fcn, -1 + 1e-7, 1 - 1e-7))
    idx = np.arange(fcn.shape[-1])
    z[..., idx, idx] = 0.0
    return z


def compute_fcns(
    time_series: Sequence[np.ndarray] | np.ndarray,
    kind: str = "correlation",
    fisher_z: bool = False,
    cov_estimator: str = "empirical",
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """FCNs `(S, N, N)` float64 of S subjects' time series (each `(T_s, N)`; T may differ per subject).

    Args:
        kind: one of `KINDS`.
        fisher_z: apply Fisher z to correlations (not for ``"tangent"``).
        cov_estimator: ``"empirical"`` (plain Pearson) or ``"ledoit_wolf"`` (nilearn's default).
        reference: for ``"tangent"``, the `(N, N)` reference covariance; default the group's
            geometric mean (then at least 2 subjects are needed).
    """
    _check_kind(kind)
    if isinstance(time_series, np.ndarray) and time_series.ndim == 2:
        time_series = [time_series]
    series = [validate_time_series(ts, kind, name=f"time series of subject {i}") for i, ts in enumerate(time_series)]
    if not series:
        raise ValueError("No time series given.")
    sizes = {ts.shape[1] for ts in series}
    if len(sizes) > 1:
        raise ValueError(f"All subjects need the same number of ROIs, got N in {sorted(sizes)}.")
    if fisher_z and kind == "tangent":
        raise ValueError("Fisher z applies to correlations, not to tangent-space matrices.")

    # Group subjects by length so each group is one batched einsum.
    covs = np.empty((len(series), *series[0].shape[1:2] * 2))
    by_length: dict[int, list[int]] = {}
    for i, ts in enumerate(series):
        by_length.setdefault(ts.shape[0], []).append(i)
    for idx in by_length.values():
        stack = np.stack([series[i] for i in idx])
        if kind == "correlation":
            # z-score (ddof=1, as nilearn's zscore_sample) so shrinkage acts on the correlation scale
            stack = (stack - stack.mean(axis=1, keepdims=True)) / stack.std(axis=1, ddof=1, keepdims=True)
        covs[idx] = _covariances(stack, cov_estimator)

    if kind == "correlation":
        out = _cov_to_corr(covs)
    elif kind == "partial correlation":
        out = -_cov_to_corr(np.linalg.inv(covs))
        idx = np.arange(out.shape[-1])
        out[:, idx, idx] = 1.0
    else:
        if reference is None:
            if len(series) < 2:
                raise ValueError("kind='tangent' needs a group of at least 2 subjects, or a `reference` covariance.")
            reference = geometric_mean(covs)
        whitening = _map_eigenvalues(lambda v: 1.0 / np.sqrt(v), np.asarray(reference, dtype=np.float64))
        out = _map_eigenvalues(np.log, whitening @ covs @ whitening)
    out = 0.5 * (out + np.swapaxes(out, -1, -2))
    return apply_fisher_z(out) if fisher_z else out


def compute_fcn(
    time_series: np.ndarray, kind: str = "correlation", fisher_z: bool = False, cov_estimator: str = "empirical"
) -> np.ndarray:
    """One subject's FCN `(N, N)` from its time series `(T, N)` (``"tangent"`` needs a group)."""
    if kind == "tangent":
        raise ValueError("kind='tangent' needs a group of subjects: use compute_fcns(list_of_time_series, 'tangent').")
    return compute_fcns([time_series], kind=kind, fisher_z=fisher_z, cov_estimator=cov_estimator)[0]
