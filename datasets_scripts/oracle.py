"""The simulator's oracle: Bayes-optimal attribute scores under its own generative model.

The simulator (see `simulate.py`) gives subject s at site k the covariance
``M_s = C_k + L (Psi_s - Psi_k) L^T`` (C_k: site covariance `(N, N)`; L: `(N, K)` network indicator;
Psi_k = (L^T C_k^-1 L)^-1 the site's network-level matrix `(K, K)`; Psi_s its subject value), then
``Sigma_s ~ InverseWishart(nu, c M_s)`` (c = nu - N - 1, so E Sigma_s = M_s) and ``X ~ N(0, Sigma_s)``
with T rows. Attributes act only on Psi_s (network blocks), so the subject's evidence is the
likelihood of Psi_s. Integrating Sigma_s out (matrix-t) and using the determinant lemma it is

    f(Psi) = nu/2 logdet Psi - (nu+T)/2 logdet(Q + c Psi),   Q = (L^T A^-1 L)^-1 - c Psi_k,  A = c C_k + X^T X,

a function of (K, K) matrices only. We take its maximum and curvature (Laplace: psi_hat, F) once per
subject; then with the Gaussian prior of Psi_s given a hypothesis h about the attribute (its effect,
the conditional mean of the other attributes' effects, subject variability),
``p(X | h) ~ N(psi_hat; mu_h, Omega + F^-1)``, and the posterior over h gives the oracle score: the
log-odds (binary), class posteriors (categorical) or posterior mean (continuous).

Approximations: Laplace for f; nuisance attributes enter through their conditional mean and a pooled
covariance; the simulator's rare positive-definiteness clipping of Psi_s is ignored.
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
    """Per-subject Laplace summary of the network-level likelihood.

    Attributes:
        psi_hat: `(S, q)` maximiser of f (vech of Psi).
        info: `(S, q, q)` observed information -d2f at psi_hat (projected to positive definite).
        info_inv: `(S, q, q)` its inverse (the Laplace covariance of psi_hat).
    """

    psi_hat: np.ndarray
    info: np.ndarray
    info_inv: np.ndarray


def _f_grad_hess(psi, q_mat, c, nu, t, dup, derivatives: bool = True):
    """f `(S,)` at Psi `(S, K, K)` (-inf where not valid), and its vech gradient `(S, q)` and Hessian `(S, q, q)`."""
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
    eye = torch.eye(psi.shape[-1], dtype=psi.dtype).expand_as(psi)
    p0 = torch.cholesky_solve(eye, l0)
    p1 = torch.cholesky_solve(eye, l1)
    gmat = a0[:, None, None] * p0 - (a1 * c)[:, None, None] * p1
    grad = gmat.flatten(1) @ dup
    k0 = torch.einsum("sij,skl->sikjl", p0, p0).flatten(1, 2).flatten(2, 3)
    k1 = torch.einsum("sij,skl->sikjl", p1, p1).flatten(1, 2).flatten(2, 3)
    hess = dup.T @ (-a0[:, None, None] * k0 + (a1 * c * c)[:, None, None] * k1) @ dup
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
                iterations: int = 60, tol: float = 1e-7) -> LaplaceFit:
    """Maximise f per subject by saddle-free damped Newton steps on vech(Psi).

    Args:
        g1: `(S, K, K)` L^T A^-1 L per subject.
        psi_site: `(S, K, K)` the site's Psi_k per subject (the starting point).
        c, nu: inverse-Wishart scale factor and degrees of freedom.
        timepoints: `(S,)` T per subject.
        tol: stop a subject when its Newton decrement g^T |H|^-1 g falls below this.
    """
    k = g1.shape[-1]
    s = len(g1)
    dup = torch.as_tensor(duplication_matrix(k))
    g1_t = torch.as_tensor(np.array(g1), dtype=torch.float64)
    psi = torch.as_tensor(np.array(psi_site), dtype=torch.float64).clone()
    q_all = torch.linalg.inv(g1_t) - c * psi
    q_all = (q_all + q_all.transpose(-1, -2)) / 2
    nu_all = torch.full((s,), float(nu), dtype=torch.float64)
    t_all = torch.as_tensor(timepoints, dtype=torch.float64)
    c_all = torch.full((s,), float(c), dtype=torch.float64)
    r, cc = vech_index(k)
    hess_out = torch.zeros(s, len(r), len(r), dtype=torch.float64)
    active = torch.arange(s)
    for it in range(iterations + 1):
        args = (q_all[active], c_all[active], nu_all[active], t_all[active], dup)
        cur = psi[active]
        f, grad, hess = _f_grad_hess(cur, *args)
        hess_out[active] = hess
        # Saddle-free Newton: |eigenvalues| of the Hessian, so negative curvature is climbed, not jumped.
        evals, evecs = torch.linalg.eigh(-hess)
        evals = evals.abs().clamp_min(1e-3 * evals.abs().amax(-1, keepdim=True))
        coef = torch.einsum("sij,si->sj", evecs, grad) / evals
        decrement = (coef * torch.einsum("sij,si->sj", evecs, grad)).sum(-1)
        keep = decrement > tol
        if it == iterations or not bool(keep.any()):
            break
        active, cur, f, args = active[keep], cur[keep], f[keep], tuple(a[keep] for a in args[:4]) + (dup,)
        step_v = torch.einsum("sij,sj->si", evecs[keep], coef[keep])
        step = torch.zeros_like(cur)
        step[:, r, cc] = step_v
        step[:, cc, r] = step_v
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
        psi[active] = new
    info = -hess_out
    evals, evecs = torch.linalg.eigh((info + info.transpose(-1, -2)) / 2)
    evals = evals.clamp_min(1e-6 * evals.amax(-1, keepdim=True))
    f_inv = torch.einsum("sij,sj,skj->sik", evecs, 1.0 / evals, evecs)
    info = torch.einsum("sij,sj,skj->sik", evecs, evals, evecs)
    return LaplaceFit(psi_hat=vech(psi.numpy()), info=info.numpy(), info_inv=f_inv.numpy())


@dataclass
class Hypotheses:
    """Prior of vech(Psi_s) under each hypothesis h about one attribute, at one site.

    Attributes:
        means: `(H, q)` prior mean of vech(Psi_s) given h.
        cov: `(q, q)` prior covariance (subject variability + other attributes' effects), pooled over h.
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
