"""ROI time series -> functional connectivity networks (FCNs), and FCN validation.

Measures (batched over subjects: torch `bmm` for the covariances, chunks of `CHUNK` subjects, no
Python loop over subjects or ROI pairs):

- ``"correlation"``: Pearson correlation. With ``cov_estimator="ledoit_wolf"`` the covariance of the
  z-scored signals is shrunk first, as nilearn's ``ConnectivityMeasure`` does by default.
- ``"partial correlation"``: ``-P_ij / sqrt(P_ii P_jj)`` of the precision matrix ``P``.
- ``"tangent"``: ``logm(G^-1/2 C G^-1/2)`` with ``G`` the geometric mean of the group's covariances
  (Varoquaux et al. 2010); needs a group (`compute_fcns`) or a given reference ``G``.

Correlation matrices are symmetric to rounding (~1e-16); the other kinds are symmetrised exactly.
Equal to nilearn's ``ConnectivityMeasure(kind=..., cov_estimator=EmpiricalCovariance() | LedoitWolf())``
to 1e-5 (tested), and faster: `bench/connectome.py` measures both on 1,000 subjects. Optional Fisher z:
``arctanh(r)`` off the diagonal, 0 on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

KINDS = ("correlation", "partial correlation", "tangent")
COV_ESTIMATORS = ("empirical", "ledoit_wolf")
CHUNK = 64  # subjects per batched matrix product: bounds memory (3 x CHUNK x N x max(T, N) doubles)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
def min_timepoints(kind: str, num_rois: int, cov_estimator: str = "empirical") -> int:
    """Fewest timepoints a measure needs: 3 for a correlation or a shrunk (Ledoit-Wolf) covariance,
    N + 1 for an invertible empirical covariance."""
    _check_kind(kind)
    _check_estimator(cov_estimator)
    return 3 if kind == "correlation" or cov_estimator == "ledoit_wolf" else num_rois + 1


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"Unknown connectivity kind {kind!r}; choose one of {KINDS}.")


def _check_estimator(cov_estimator: str) -> None:
    if cov_estimator not in COV_ESTIMATORS:
        raise ValueError(f"Unknown cov_estimator {cov_estimator!r}; choose one of {COV_ESTIMATORS}.")


def validate_time_series(
    time_series: np.ndarray, kind: str = "correlation", name: str = "time series", cov_estimator: str = "empirical"
) -> np.ndarray:
    """Check one subject's ROI time series `(T, N)` and return it as float64.

    Raises ValueError naming the problem: ndim, dtype, NaN/inf, too few timepoints, constant ROIs.
    """
    arr = _check_shape(time_series, kind, name, cov_estimator)
    _check_values(arr, name)
    return arr


def _check_shape(time_series: np.ndarray, kind: str, name: str, cov_estimator: str) -> np.ndarray:
    """The checks that need no pass over the values: ndim, dtype, enough timepoints."""
    _check_kind(kind)
    arr = np.asarray(time_series)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (T, N) = (timepoints, ROIs), got ndim={arr.ndim} shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric (float), got dtype {arr.dtype}.")
    num_t, num_rois = arr.shape
    needed = min_timepoints(kind, num_rois, cov_estimator)
    if num_t < needed:
        raise ValueError(
            f"{name} has {num_t} timepoints but kind={kind!r} with N={num_rois} ROIs needs at least {needed}."
        )
    return arr.astype(np.float64, copy=False)


def _check_values(arr: np.ndarray, name: str) -> None:
    """NaN/inf values and constant ROIs."""
    if not np.isfinite(arr).all():
        bad = np.unique(np.nonzero(~np.isfinite(arr))[1])
        raise ValueError(f"{name} has NaN or inf values in ROI(s) {bad[:10].tolist()}.")
    constant = np.nonzero(arr.std(axis=0) <= 1e-12 * (1.0 + np.abs(arr).max()))[0]
    if constant.size:
        raise ValueError(
            f"{name} has {constant.size} constant ROI(s) (zero variance), e.g. ROI(s) {constant[:10].tolist()}; "
            "their correlations are undefined. Drop those ROIs or the subject."
        )


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
# Covariances (torch float64, one chunk of subjects at a time)
# --------------------------------------------------------------------------------------------------
def _chunk_covariances(
    arrays: Sequence[np.ndarray], names: Sequence[str], kind: str, estimator: str, work: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """Write the covariances `(s, N, N)` of s series `(T, N)` of one length into `out`; return `out`.

    ``kind="correlation"`` gets correlations (the product's diagonal gives the norms). With
    Ledoit-Wolf (nilearn z-scores first, ddof=1) the shrunk covariance of the z-scored signals has a
    constant diagonal, so its correlation is ``(1 - shrinkage) r`` off the diagonal. Other kinds get
    maximum-likelihood covariances (divided by T), shrunk with ``"ledoit_wolf"``. `work` is a
    reusable `(>= s, T, N)` buffer. NaN/inf values and constant ROIs are caught from the column means
    and norms (no extra pass over the series) and reported by `validate_time_series`'s checks.
    """
    num_t, num_rois = arrays[0].shape
    centred = work[: len(arrays)]
    means = torch.empty(len(arrays), num_rois, dtype=torch.float64)
    for j, arr in enumerate(arrays):  # stack and centre, one subject at a time
        x = torch.from_numpy(arr)
        torch.mean(x, 0, out=means[j])
        torch.sub(x, means[j], out=centred[j])
    cov = torch.bmm(centred.transpose(1, 2), centred, out=out)
    sum_sq = cov.diagonal(dim1=1, dim2=2).clone()  # ||x_i - mean_i||^2, (s, N)
    # |x_ti| <= |mean_i| + ||x_i - mean_i||, so `bound` >= max |x|: no constant ROI slips through
    norms = sum_sq.sqrt()
    bound = (means.abs() + norms).amax(-1, keepdim=True)
    suspect = ~torch.isfinite(means).all(-1) | ~torch.isfinite(norms).all(-1)
    suspect |= (norms / math.sqrt(num_t) <= 1e-12 * (1.0 + bound)).any(-1)
    for j in torch.nonzero(suspect).flatten().tolist():
        _check_values(arrays[j], names[j])  # raises with the ROI indices

    if kind == "correlation":
        inv = norms.reciprocal()
        cov.mul_(inv.unsqueeze(-1)).mul_(inv.unsqueeze(-2))
        cov.diagonal(dim1=1, dim2=2).fill_(1.0)
        if estimator == "ledoit_wolf":
            # x = z-scored signals = sqrt(T - 1) (x - mean) / norm: cov = c r with c = (T - 1) / T,
            # trace = N c, mu = c; sum_i x_ti^2 = (T - 1) sum_i (x_ti - mean_i)^2 / norm_i^2
            c = (num_t - 1) / num_t
            trace = torch.full((len(arrays),), num_rois * c, dtype=torch.float64)
            # in place: the work buffer is free once the product is taken
            row_sq = (num_t - 1) * centred.mul_(inv.unsqueeze(1)).square_().sum(-1)  # (s, T)
            beta_sum = row_sq.square().sum(-1)
            delta_sum = c**2 * torch.linalg.vector_norm(cov.flatten(1), dim=-1).square()
            shrinkage = _ledoit_wolf_shrinkage(beta_sum, delta_sum, trace, num_rois, num_t)
            cov.mul_((1 - shrinkage)[:, None, None])
            cov.diagonal(dim1=1, dim2=2).fill_(1.0)
        return cov
    cov.div_(num_t)
    if estimator == "ledoit_wolf":
        trace = cov.diagonal(dim1=1, dim2=2).sum(-1)
        beta_sum = torch.linalg.vector_norm(centred, dim=-1).pow(4).sum(-1)
        delta_sum = torch.linalg.vector_norm(cov.flatten(1), dim=-1).square()
        shrinkage = _ledoit_wolf_shrinkage(beta_sum, delta_sum, trace, num_rois, num_t)
        cov.mul_((1 - shrinkage)[:, None, None])
        cov.diagonal(dim1=1, dim2=2).add_((shrinkage * trace / num_rois)[:, None])
    return cov


def _ledoit_wolf_shrinkage(
    beta_sum: torch.Tensor, delta_sum: torch.Tensor, trace: torch.Tensor, num_rois: int, num_t: int
) -> torch.Tensor:
    """Shrinkage `(s,)` towards mu I, the formula of ``sklearn.covariance.ledoit_wolf_shrinkage``.

    Args:
        beta_sum: sum_ij sum_t x_ti^2 x_tj^2 = sum_t (sum_i x_ti^2)^2 (O(T N), not O(T N^2)).
        delta_sum: ||cov||_F^2; trace: tr(cov); cov = x^T x / T of the centred signals x.
    """
    mu = trace / num_rois
    beta = (beta_sum / num_t - delta_sum) / (num_rois * num_t)
    delta = (delta_sum - 2 * mu * trace + num_rois * mu**2) / num_rois
    beta = torch.minimum(beta, delta)
    return torch.where(beta == 0, 0.0, beta / torch.where(delta == 0, 1.0, delta))


def _cov_to_corr_(cov: torch.Tensor) -> torch.Tensor:
    """Correlations of covariances `(..., N, N)`, in place, with an exact unit diagonal."""
    std = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    cov.div_(std.unsqueeze(-1)).div_(std.unsqueeze(-2))
    cov.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return cov


def _symmetrize(matrices: torch.Tensor) -> torch.Tensor:
    """``(A + A^T) / 2`` of matrices `(..., N, N)`."""
    return (matrices + matrices.transpose(-1, -2)).mul_(0.5)


def _map_eigenvalues(fn, matrices: torch.Tensor) -> torch.Tensor:
    """``V fn(w) V^T`` for symmetric matrices `(..., N, N)`."""
    vals, vecs = torch.linalg.eigh(matrices)
    return (vecs * fn(vals).unsqueeze(-2)) @ vecs.transpose(-1, -2)


def geometric_mean(covariances: np.ndarray | torch.Tensor, max_iter: int = 30, tol: float = 1e-7) -> np.ndarray:
    """Riemannian geometric mean `(N, N)` of SPD matrices `(S, N, N)` (Fletcher & Joshi 2007, Alg. 3)."""
    covs = torch.as_tensor(covariances, dtype=torch.float64)
    gmean = covs.mean(0)
    norm_old, step = math.inf, 1.0
    for _ in range(max_iter):
        vals, vecs = torch.linalg.eigh(gmean)
        inv_sqrt = (vecs / vals.sqrt()) @ vecs.T
        logs_mean = torch.zeros_like(gmean)
        for start in range(0, len(covs), CHUNK):  # chunks bound the (S, N, N) temporaries
            logs_mean += _map_eigenvalues(torch.log, inv_sqrt @ covs[start : start + CHUNK] @ inv_sqrt).sum(0)
        logs_mean /= len(covs)
        if torch.isnan(logs_mean).any():
            raise FloatingPointError("NaN in the matrix logarithm: a covariance is not positive definite.")
        norm = float(torch.linalg.norm(logs_mean))
        sqrt = (vecs * vals.sqrt()) @ vecs.T
        gmean = sqrt @ _map_eigenvalues(lambda v: torch.exp(v * step), logs_mean) @ sqrt
        if norm < norm_old:
            norm_old = norm
        elif norm > norm_old:
            step, norm = step / 2.0, norm_old
        if norm / gmean.numel() < tol:
            break
    return gmean.numpy()


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
    _check_estimator(cov_estimator)
    if isinstance(time_series, np.ndarray) and time_series.ndim == 2:
        time_series = [time_series]
    names = [f"time series of subject {i}" for i in range(len(time_series))]
    series = [_check_shape(ts, kind, name, cov_estimator) for ts, name in zip(time_series, names)]
    if not series:
        raise ValueError("No time series given.")
    sizes = {ts.shape[1] for ts in series}
    if len(sizes) > 1:
        raise ValueError(f"All subjects need the same number of ROIs, got N in {sorted(sizes)}.")
    if fisher_z and kind == "tangent":
        raise ValueError("Fisher z applies to correlations, not to tangent-space matrices.")

    # Subjects of one length form a stack; each chunk of it is one batched matrix product.
    num_rois = series[0].shape[1]
    out = torch.empty((len(series), num_rois, num_rois), dtype=torch.float64)
    by_length: dict[int, list[int]] = {}
    for i, ts in enumerate(series):
        by_length.setdefault(ts.shape[0], []).append(i)
    for num_t, idx in by_length.items():
        work = torch.empty((min(CHUNK, len(idx)), num_t, num_rois), dtype=torch.float64)
        for start in range(0, len(idx), CHUNK):
            chunk = idx[start : start + CHUNK]
            contiguous = chunk == list(range(chunk[0], chunk[0] + len(chunk)))
            if contiguous:  # write in place
                target = out[chunk[0] : chunk[0] + len(chunk)]
            else:
                target = torch.empty((len(chunk), num_rois, num_rois), dtype=torch.float64)
            _chunk_covariances([series[i] for i in chunk], [names[i] for i in chunk], kind, cov_estimator, work, target)
            if not contiguous:
                out[chunk] = target

    if kind == "partial correlation":
        for start in range(0, len(out), CHUNK):
            part = out[start : start + CHUNK]
            chol, info = torch.linalg.cholesky_ex(part)  # SPD: a Cholesky inverse is ~1.5x faster than LU
            precision = torch.cholesky_inverse(chol) if bool((info == 0).all()) else torch.linalg.inv(part)
            partial = _cov_to_corr_(precision).neg_()
            partial.diagonal(dim1=-2, dim2=-1).fill_(1.0)
            part.copy_(_symmetrize(partial))
    elif kind == "tangent":
        if reference is None:
            if len(series) < 2:
                raise ValueError("kind='tangent' needs a group of at least 2 subjects, or a `reference` covariance.")
            reference = geometric_mean(out)
        whitening = _map_eigenvalues(lambda v: 1.0 / v.sqrt(), torch.as_tensor(reference, dtype=torch.float64))
        for start in range(0, len(out), CHUNK):
            part = out[start : start + CHUNK]
            part.copy_(_symmetrize(_map_eigenvalues(torch.log, whitening @ part @ whitening)))
    fcns = out.numpy()
    return apply_fisher_z(fcns) if fisher_z else fcns


def compute_fcn(
    time_series: np.ndarray, kind: str = "correlation", fisher_z: bool = False, cov_estimator: str = "empirical"
) -> np.ndarray:
    """One subject's FCN `(N, N)` from its time series `(T, N)` (``"tangent"`` needs a group)."""
    if kind == "tangent":
        raise ValueError("kind='tangent' needs a group of subjects: use compute_fcns(list_of_time_series, 'tangent').")
    return compute_fcns([time_series], kind=kind, fisher_z=fisher_z, cov_estimator=cov_estimator)[0]
