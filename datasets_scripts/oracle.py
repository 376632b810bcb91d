"""The simulator's oracle: Bayes-optimal attribute scores under its own generative model.

The simulator (see `simulate.py`) gives subject s at site k the covariance
``M_s = C_k + B (Psi_s - Psi_k) B^T`` (C_k: site covariance `(N, N)`; B: `(N, m)` effect basis of
network indicators, planted-region indicators, distributed loadings and motion fields;
Psi_k = (B^T C_k^-1 B)^-1 `(m, m)`; Psi_s its subject value, differing from Psi_k on p entries), then
``Sigma_s ~ InverseWishart(nu, c M_s)`` (c = nu - N - 1, so E Sigma_s = M_s) and ``X ~ N(0, Sigma_s)``
with T rows. Attributes and head motion act only on Psi_s, so the subject's evidence is the
likelihood of Psi_s. Integrating Sigma_s out (matrix-t) and using the determinant lemma it is

    f(Psi) = nu/2 logdet Psi - (nu+T)/2 logdet(Q + c Psi),   Q = (B^T A^-1 B)^-1 - c Psi_k,  A = c C_k + X^T X,

a function of (m, m) matrices only. We take its maximum and curvature over the varying entries
(Laplace: psi_hat, F) once per subject; then with the Gaussian prior of those entries given a
hypothesis h about the attribute (its effect, the conditional mean of the other attributes' and
motion's effects, subject variability), ``p(X | h) ~ N(psi_hat; mu_h, Omega + F^-1)``, and the
posterior over h gives the oracle score: the log-odds (binary), class posteriors (categorical) or
posterior mean (continuous).

Approximations: Laplace for f; nuisance attributes and motion enter through their conditional mean
and a pooled covariance; temporally autocorrelated scans enter as a Wishart with the effective T
(tr R^2 matching); the simulator's positive-definiteness clipping of Psi_s is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits


def vech_index(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the q = K(K+1)/2 upper-triangle entries (diagonal included)."""
    return np.triu_indices(k)


def vech(mats: np.ndarray) -> np.ndarray:
    """`(..., K, K)` symmetric -> `(..., q)`."""
    r, c = vech_index(mats.shape[-1])
    return mats[..., r, c]


def unvech(vecs: np.ndarray, k: int) -> np.ndarray:
    """`(..., q)` -> `(..., K, K)` symmetric."""
    r, c = vech_index(k)
    out = np.zeros(vecs.shape[:-1] + (k, k), dtype=vecs.dtype)
    out[..., r, c] = vecs
    out[..., c, r] = vecs
    return out


def duplication_matrix(k: int) -> np.ndarray:
    """`(K*K, q)` matrix D with vec(S) = D vech(S) for symmetric S."""
    r, c = vech_index(k)
    dup = np.zeros((k * k, len(r)))
    for j, (a, b) in enumerate(zip(r, c)):
        dup[a * k + b, j] = 1.0
        dup[b * k + a, j] = 1.0
    return dup


def wishart_like_cov(psi: np.ndarray, dof: float) -> np.ndarray:
    """Covariance `(q, q)` of vech(Psi^1/2 W Psi^1/2), W symmetric Gaussian (GOE) scaled by 1/dof.

    Cov(D_ij, D_kl) = (Psi_ik Psi_jl + Psi_il Psi_jk) / dof, the second moment of a Wishart with `dof`.
    """
    r, c = vech_index(psi.shape[0])
    return (psi[np.ix_(r, r)] * psi[np.ix_(c, c)] + psi[np.ix_(r, c)] * psi[np.ix_(c, r)]) / dof


@dataclass
class LaplaceFit:
    """Per-subject Laplace summary of the likelihood of Psi's varying entries.

    Attributes:
        psi_hat: `(S, d)` maximiser of f in the fit's coordinates (see `laplace_fit`).
        info: `(S, d, d)` observed information -d2f at psi_hat (projected to positive definite).
        info_inv: `(S, d, d)` its inverse (the Laplace covariance of psi_hat).
    """

    psi_hat: np.ndarray
    info: np.ndarray
    info_inv: np.ndarray


def active_weights(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`(p,)` 1 for a diagonal entry, 2 for an off-diagonal one: d tr(G Psi) / d Psi_ab = w_ab G_ab."""
    return np.where(np.asarray(rows) == np.asarray(cols), 1.0, 2.0)


def _curvature(p_mat: torch.Tensor, flat: tuple[torch.Tensor, ...], w2: torch.Tensor) -> torch.Tensor:
    """`(S, p, p)` tr(P E_i P E_j) over the active entries i = (a_i, b_i) (E_i: the symmetric unit matrix of
    entry i); `flat` holds the `(p, p)` flat indices a_i m + a_j, b_i m + b_j, a_i m + b_j, b_i m + a_j."""
    pf = p_mat.flatten(1)
    aa, bb, ab, ba = flat
    return (pf[:, aa] * pf[:, bb] + pf[:, ab] * pf[:, ba]) * w2


def _f_grad_hess(psi, q_mat, c, nu, t, active, derivatives: bool = True):
    """f `(S,)` at Psi `(S, m, m)` (-inf where not valid), and its gradient `(S, p)` and Hessian `(S, p, p)`
    in the active entries `active` = (rows, cols, weights, weights outer / 2)."""
    b = q_mat + c[:, None, None] * psi
    l0, ok0 = torch.linalg.cholesky_ex(psi)
    l1, ok1 = torch.linalg.cholesky_ex(b)
    valid = (ok0 == 0) & (ok1 == 0)
    logdet0 = 2 * torch.log(torch.diagonal(l0, dim1=-2, dim2=-1).abs()).sum(-1)
    logdet1 = 2 * torch.log(torch.diagonal(l1, dim1=-2, dim2=-1).abs()).sum(-1)
    a0, a1 = nu / 2, (nu + t) / 2
    f = torch.where(valid, a0 * logdet0 - a1 * logdet1, torch.full_like(logdet0, -torch.inf))
    if not derivatives:
        return f, None, None
    ra, rb, w, w2, flat = active
    eye = torch.eye(psi.shape[-1], dtype=psi.dtype).expand_as(psi)
    p0 = torch.cholesky_solve(eye, l0)
    p1 = torch.cholesky_solve(eye, l1)
    gmat = a0[:, None, None] * p0 - (a1 * c)[:, None, None] * p1
    grad = gmat[:, ra, rb] * w
    hess = (-a0[:, None, None] * _curvature(p0, flat, w2)
            + (a1 * c * c)[:, None, None] * _curvature(p1, flat, w2))
    return f, grad, hess


def _single_thread(fn):
    """Run `fn` with one BLAS thread: batched tiny (K, K) algebra is 100x slower when threads contend."""
    import functools

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with threadpool_limits(1):
            return fn(*args, **kwargs)

    return wrapped


@_single_thread
def laplace_fit(g1: np.ndarray, psi_site: np.ndarray, c: float, nu: float, timepoints: np.ndarray,
                iterations: int = 60, tol: float = 1e-7, active: tuple[np.ndarray, np.ndarray] | None = None,
                design: np.ndarray | None = None, chunk: int = 512) -> LaplaceFit:
    """Maximise f per subject by saddle-free damped Newton steps on the active entries of Psi.

    Args:
        g1: `(S, m, m)` B^T A^-1 B per subject (B the `(N, m)` basis of the covariance changes).
        psi_site: `(S, m, m)` the site's Psi_k per subject (the starting point; inactive entries stay there).
        c, nu: inverse-Wishart scale factor and degrees of freedom.
        timepoints: `(S,)` (effective) T per subject.
        tol: stop a subject when its Newton decrement g^T |H|^-1 g falls below this.
        active: (rows, cols) `(p,)` of the upper-triangle entries of Psi that vary (default: all, p = m(m+1)/2).
        design: `(p, d)` optional: the entries vary as Psi - psi_site = unvech(design @ phi) with d coordinates
            phi (entries that move together, e.g. every motion field by the subject's motion).
        chunk: subjects fitted at once.

    Returns:
        psi_hat: without `design` the active entries of Psi at the maximum `(S, p)`; with it phi `(S, d)`.
    """
    m = g1.shape[-1]
    rows, cols = vech_index(m) if active is None else (np.asarray(active[0]), np.asarray(active[1]))
    w = active_weights(rows, cols)
    ra, rb = torch.as_tensor(rows), torch.as_tensor(cols)
    flat = (ra[:, None] * m + ra[None], rb[:, None] * m + rb[None], ra[:, None] * m + rb[None], rb[:, None] * m + ra[None])
    act = (ra, rb, torch.as_tensor(w), torch.as_tensor(np.outer(w, w) / 2), flat)
    design_t = None if design is None else torch.as_tensor(np.asarray(design, dtype=float))
    parts = [_laplace_chunk(g1[i:i + chunk], psi_site[i:i + chunk], c, nu, timepoints[i:i + chunk], iterations, tol,
                            act, design_t) for i in range(0, len(g1), chunk)]
    return LaplaceFit(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("psi_hat", "info", "info_inv")))


def _laplace_chunk(g1, psi_site, c, nu, timepoints, iterations, tol, act, design) -> LaplaceFit:
    ra, rb = act[0], act[1]
    s = len(g1)
    g1_t = torch.as_tensor(np.array(g1), dtype=torch.float64)
    psi = torch.as_tensor(np.array(psi_site), dtype=torch.float64).clone()
    q_all = torch.linalg.inv(g1_t) - c * psi
    q_all = (q_all + q_all.transpose(-1, -2)) / 2
    nu_all = torch.full((s,), float(nu), dtype=torch.float64)
    t_all = torch.as_tensor(np.asarray(timepoints, dtype=float), dtype=torch.float64)
    c_all = torch.full((s,), float(c), dtype=torch.float64)
    d = len(ra) if design is None else design.shape[1]
    hess_out = torch.zeros(s, d, d, dtype=torch.float64)
    # Coordinates in units of sqrt(Psi_aa Psi_bb) at the start, so entries of very different sizes have
    # comparable curvature (the eigenvalue clamp below is relative).
    diag = torch.diagonal(psi, dim1=-2, dim2=-1).abs()
    units = torch.sqrt(diag[:, ra] * diag[:, rb])
    if design is not None:
        units = units @ design.abs() / design.abs().sum(0)
    phi = torch.zeros(s, d, dtype=torch.float64)
    # Start at the maximiser over all entries, Psi = nu Q / (c T) (where a0 Psi^-1 = a1 c (Q + c Psi)^-1),
    # moved along the active coordinates only, wherever it is valid and improves on the site's Psi.
    full = nu * q_all / (c * t_all[:, None, None])
    offset = full[:, ra, rb] - psi[:, ra, rb]
    phi0 = offset if design is None else offset @ torch.linalg.pinv(design).T
    off0 = phi0 if design is None else phi0 @ design.T
    start = psi.clone()
    start[:, ra, rb] += off0
    start[:, rb, ra] = start[:, ra, rb]
    f_site, _, _ = _f_grad_hess(psi, q_all, c_all, nu_all, t_all, act, derivatives=False)
    f_start, _, _ = _f_grad_hess(start, q_all, c_all, nu_all, t_all, act, derivatives=False)
    better = torch.isfinite(f_start) & (f_start > f_site)
    psi[better] = start[better]
    phi[better] = phi0[better]
    active = torch.arange(s)
    for it in range(iterations + 1):
        args = (q_all[active], c_all[active], nu_all[active], t_all[active], act)
        cur = psi[active]
        f, grad, hess = _f_grad_hess(cur, *args)
        if design is not None:
            grad, hess = grad @ design, design.T @ hess @ design
        hess_out[active] = hess
        u = units[active]
        grad = grad * u
        # Newton where -H is positive definite (Cholesky); elsewhere saddle-free Newton: |eigenvalues| of the
        # Hessian, so negative curvature is climbed, not jumped.
        neg = -hess * u[:, :, None] * u[:, None, :]
        chol, bad = torch.linalg.cholesky_ex(neg)
        step_all = torch.cholesky_solve(grad[..., None], chol)[..., 0]
        bad = bad != 0
        if bool(bad.any()):
            evals, evecs = torch.linalg.eigh(neg[bad])
            evals = evals.abs().clamp_min(1e-9 * evals.abs().amax(-1, keepdim=True))
            step_all[bad] = torch.einsum("sij,sj->si", evecs, torch.einsum("sij,si->sj", evecs, grad[bad]) / evals)
        decrement = (step_all * grad).sum(-1)
        keep = decrement > tol
        if it == iterations or not bool(keep.any()):
            break
        active, cur, f, args = active[keep], cur[keep], f[keep], tuple(a[keep] for a in args[:4]) + (act,)
        step_phi = step_all[keep] * u[keep]
        step_v = step_phi if design is None else step_phi @ design.T
        step = torch.zeros_like(cur)
        step[:, ra, rb] = step_v
        step[:, rb, ra] = step_v
        scale = torch.ones(len(cur), dtype=torch.float64)
        done = torch.zeros(len(cur), dtype=torch.bool)
        new = cur.clone()
        for _ in range(20):  # step halving until f increases and Psi stays valid
            trial = cur + scale[:, None, None] * step
            tf, _, _ = _f_grad_hess(trial, *args, derivatives=False)
            good = torch.isfinite(tf) & (tf >= f - 1e-9) & ~done
            new[good] = trial[good]
            done |= good
            if bool(done.all()):
                break
            scale = torch.where(done, scale, scale / 2)
        phi[active] += torch.where(done, scale, torch.zeros_like(scale))[:, None] * step_phi
        psi[active] = new
    info = -hess_out
    evals, evecs = torch.linalg.eigh((info + info.transpose(-1, -2)) / 2)
    evals = evals.clamp_min(1e-6 * evals.amax(-1, keepdim=True))
    f_inv = torch.einsum("sij,sj,skj->sik", evecs, 1.0 / evals, evecs)
    info = torch.einsum("sij,sj,skj->sik", evecs, evals, evecs)
    psi_hat = psi.numpy()[:, ra.numpy(), rb.numpy()] if design is None else phi.numpy()
    return LaplaceFit(psi_hat=psi_hat, info=info.numpy(), info_inv=f_inv.numpy())


@dataclass
class Hypotheses:
    """Prior of a subject's Laplace coordinates (`LaplaceFit.psi_hat`) under each hypothesis h about one
    attribute, at one site.

    Attributes:
        means: `(H, d)` prior mean of the coordinates given h.
        cov: `(d, d)` prior covariance (subject variability + other attributes' and motion's effects), pooled over h.
        log_prior: `(H,)` log p(h | site).
        values: `(H,)` numeric value of each hypothesis (continuous: bin mean; else class index).
    """

    means: np.ndarray
    cov: np.ndarray
    log_prior: np.ndarray
    values: np.ndarray


@_single_thread
def log_evidence(fit: LaplaceFit, rows: np.ndarray, hyp: Hypotheses) -> np.ndarray:
    """log p(X_s | h) + log p(h) up to a per-subject constant, `(len(rows), H)`."""
    f_inv = torch.as_tensor(fit.info_inv[rows])
    total = torch.as_tensor(hyp.cov) + f_inv
    chol = torch.linalg.cholesky(total)
    diff = torch.as_tensor(fit.psi_hat[rows])[:, None, :] - torch.as_tensor(hyp.means)[None]  # (S, H, q)
    z = torch.linalg.solve_triangular(chol, diff.transpose(1, 2), upper=False)  # (S, q, H)
    return (-0.5 * (z ** 2).sum(1)).numpy() + hyp.log_prior[None]


def posterior(fit: LaplaceFit, rows: np.ndarray, hyp: Hypotheses) -> np.ndarray:
    """Posterior `(len(rows), H)` over the hypotheses."""
    logp = log_evidence(fit, rows, hyp)
    logp -= logp.max(1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(1, keepdims=True)
