"""Forward-model activation patterns of FCN-LLM answers (Haufe et al. 2014, NeuroImage 87:96-110).

A gradient map is a backward model's weights: it says how the answer changes with each edge, not
where the answer's information lies in the data. A model that reads network-level block means
gives each edge ~1/(edges in its block) of the gradient (small networks look important) and puts
weight on edges that only cancel noise. The forward model of the answer is its activation pattern
A = Cov(X, m): for S subjects with FCNs X_s `(N, N)` as the model sees them (`model_inputs`) and the
model's answer margins m_s (`AnswerMargin`, forward passes only, no labels),

    covariance_ij  = Cov_s(X_s[i, j], m_s),   correlation_ij = Corr_s(X_s[i, j], m_s),

symmetric with diagonal 0; an edge constant over the cohort has correlation 0. Per network pair, the
block mean of the signed correlation (a uniform effect on a block adds up; noise averages out) and
a permutation null that shuffles the margins across subjects (the FCNs keep their edge covariance):
a z and p per pair, and the family-wise p of a pair from the null distribution of the largest z over
all pairs (single-step max-T), so `top_pair_p_fwe` asks "does the map single out any block at all?"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .attribution import AnswerMargin, check_fcn_sizes, model_inputs, network_block_mean
from .questions import AttributionQuestion

MIN_SUBJECTS = 3


class ConstantMarginsError(ValueError):
    """The model gave (numerically) the same margin to every subject: there is no pattern to correlate."""


@dataclass
class ActivationPattern:
    """The activation pattern of the answer margins over S subjects, for one graph of the question.

    Attributes:
        correlation: `(N, N)` Pearson r over subjects of each edge with the margin (symmetric, diagonal 0).
        covariance: `(N, N)` covariance over subjects (ddof 1) of each edge with the margin.
        network: `(K, K)` mean of `correlation` over each network pair's distinct edges (signed).
        network_abs: `(K, K)` |network|.
        network_z: `(K, K)` z of |network| against the permutation null (0 for pairs without edges).
        network_p: `(K, K)` permutation p of |network|, uncorrected (1 for pairs without edges).
        network_p_fwe: `(K, K)` family-wise p (max-z over all pairs).
        top_pair: (a, b), a <= b, the network pair with the largest z.
        top_pair_p_fwe: its family-wise p.
        margins: `(S,)` the answer margins.
        permutations: P, the number of margin shuffles.
        subject_ids: S ids (this graph's subjects), if known.
        graph_index: which `<graph>` of the question.
    """

    correlation: np.ndarray
    covariance: np.ndarray
    network: np.ndarray
    network_abs: np.ndarray
    network_z: np.ndarray
    network_p: np.ndarray
    network_p_fwe: np.ndarray
    top_pair: tuple[int, int]
    top_pair_p_fwe: float
    margins: np.ndarray
    permutations: int
    subject_ids: list | None = None
    graph_index: int = 0

    @property
    def num_subjects(self) -> int:
        return len(self.margins)


def _standardised(x: np.ndarray, margins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Edges z-scored over subjects `(S, N, N)` (0 where an edge is constant), z-scored margins `(S,)`, the
    edges' SDs `(N, N)` and the margins' SD; ValueError on bad shapes or too few subjects, ConstantMarginsError."""
    x, margins = np.asarray(x, dtype=np.float64), np.asarray(margins, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError(f"FCNs must be a stack (S, N, N), got shape {x.shape}.")
    if margins.shape != (len(x),):
        raise ValueError(f"{len(x)} FCNs but {margins.size} margins (shape {margins.shape}).")
    s = len(x)
    if s < MIN_SUBJECTS:
        raise ValueError(f"An activation pattern (a correlation over subjects) needs at least {MIN_SUBJECTS} "
                         f"subjects, got {s}.")
    if not np.isfinite(margins).all():
        raise ValueError(f"{int((~np.isfinite(margins)).sum())} of the {s} margins are not finite.")
    centred = margins - margins.mean()
    sd = float(np.sqrt((centred ** 2).sum() / (s - 1)))
    if sd <= 1e-12 * max(1.0, float(np.abs(margins).max())):
        raise ConstantMarginsError(f"The margins are constant over the {s} subjects (value {margins[0]:.6g}): the "
                                   "model's answer does not vary with the FCN, so no edge covaries with it.")
    xc = x - x.mean(0)
    x_sd = np.sqrt((xc ** 2).sum(0) / (s - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        xs = np.where(x_sd > 0, xc / np.where(x_sd > 0, x_sd, 1.0), 0.0)
    return xs, centred / sd, x_sd, sd


def correlation_pattern(x: np.ndarray, margins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(correlation, covariance) `(N, N)` of each edge of `x` `(S, N, N)` with `margins` `(S,)` over subjects."""
    return _correlation(*_standardised(x, margins))


def _correlation(xs: np.ndarray, ms: np.ndarray, x_sd: np.ndarray, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """`correlation_pattern` from `_standardised`'s outputs."""
    correlation = np.einsum("s,sij->ij", ms, xs) / (len(ms) - 1)
    covariance = correlation * x_sd * sd
    for m in (correlation, covariance):
        m[:] = 0.5 * (m + m.T)
        np.fill_diagonal(m, 0.0)
    return correlation, covariance


def _pairs(assignment: np.ndarray, k: int) -> np.ndarray:
    """`(K, K)` bool: upper-triangle network pairs with at least one distinct edge."""
    sizes = np.bincount(assignment, minlength=k)
    counts = np.outer(sizes, sizes) - np.diag(sizes)
    return np.triu(counts > 0)


def permutation_null(x: np.ndarray, margins: np.ndarray, assignment: Sequence[int], permutations: int = 200,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Network-pair statistics of the correlation pattern against `permutations` shuffles of the margins.

    Returns `network` `(K, K)` (block means of the signed correlation) and its `z`, `p` and `p_fwe`
    `(K, K)` (see the module docstring). Block means are linear in the margins, so each shuffle
    costs one `(P, S) @ (S, K * K)` product on the subjects' block means of the z-scored edges.
    """
    xs, ms, _, _ = _standardised(x, margins)
    return _null(xs, ms, np.asarray(assignment, dtype=int), permutations, seed)


def _null(xs: np.ndarray, ms: np.ndarray, assignment: np.ndarray, permutations: int, seed: int) -> dict[str, np.ndarray]:
    """`permutation_null` from `_standardised`'s z-scored edges `(S, N, N)` and margins `(S,)`."""
    if len(assignment) != xs.shape[-1]:
        raise ValueError(f"The network assignment has {len(assignment)} ROIs but the FCNs have {xs.shape[-1]}.")
    if permutations < 1:
        raise ValueError(f"Need at least 1 permutation, got {permutations}.")
    k = int(assignment.max() + 1)
    s = len(ms)
    blocks = network_block_mean(xs, assignment, k).reshape(s, k * k)  # (S, K*K)
    observed = (ms @ blocks / (s - 1)).reshape(k, k)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([ms[rng.permutation(s)] for _ in range(permutations)])  # (P, S)
    null = np.abs(shuffled @ blocks / (s - 1)).reshape(permutations, k, k)
    valid = _pairs(assignment, k)
    mean, sd = null.mean(0), null.std(0)
    ok = valid & (sd > 0)
    safe_sd = np.where(ok, sd, 1.0)
    z = np.where(ok, (np.abs(observed) - mean) / safe_sd, 0.0)
    null_max = np.where(ok, (null - mean) / safe_sd, -np.inf).reshape(permutations, -1).max(1)  # (P,)
    p = (1 + (null >= np.abs(observed) - 1e-12).sum(0)) / (permutations + 1)
    p_fwe = (1 + (null_max[:, None, None] >= z - 1e-12).sum(0)) / (permutations + 1)
    return {"network": observed, "z": _mirror(z), "p": _mirror(np.where(ok, p, 1.0)),
            "p_fwe": _mirror(np.where(ok, p_fwe, 1.0)), "valid": valid}


def _mirror(upper: np.ndarray) -> np.ndarray:
    """A symmetric `(K, K)` matrix from the upper triangle of `upper`."""
    return np.triu(upper) + np.triu(upper, 1).T


def activation_pattern(x: np.ndarray, margins: np.ndarray, assignment: Sequence[int] | None, *,
                       permutations: int = 200, seed: int = 0, subject_ids: Sequence | None = None,
                       graph_index: int = 0) -> ActivationPattern:
    """The `ActivationPattern` of margins `(S,)` over FCNs `(S, N, N)` as the model sees them.

    Args:
        assignment: `(N,)` network index of each ROI (None: one network).
        permutations: margin shuffles for the network-pair null.
    """
    x = np.asarray(x, dtype=np.float64)
    assignment = np.zeros(x.shape[-1], dtype=int) if assignment is None else np.asarray(assignment, dtype=int)
    standardised = _standardised(x, margins)  # once: the (S, N, N) z-scored edges serve both statistics
    correlation, covariance = _correlation(*standardised)
    null = _null(standardised[0], standardised[1], assignment, permutations, seed)
    z = np.where(null["valid"], null["z"], -np.inf)
    a, b = np.unravel_index(int(np.argmax(z)), z.shape)
    return ActivationPattern(
        correlation=correlation, covariance=covariance, network=null["network"], network_abs=np.abs(null["network"]),
        network_z=null["z"], network_p=null["p"], network_p_fwe=null["p_fwe"], top_pair=(int(a), int(b)),
        top_pair_p_fwe=float(null["p_fwe"][a, b]), margins=np.asarray(margins, dtype=np.float64),
        permutations=permutations, subject_ids=None if subject_ids is None else list(subject_ids),
        graph_index=graph_index)


@torch.no_grad()
def answer_margins(model, processor, question: AttributionQuestion, groups: Sequence[Sequence[np.ndarray]], *,
                   answer: str = "full", batch_size: int = 16, margin_fn: AnswerMargin | None = None,
                   subject_ids: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """`AnswerMargin`'s margins `(S,)` of S questions, forward passes only, `batch_size` questions per pass.

    Args:
        groups: per question, its raw FCNs `(N, N)`, one per `<graph>`.
    """
    if any(len(g) != question.num_graphs for g in groups):
        raise ValueError(f"The {question.paradigm} question takes {question.num_graphs} FCN(s) per subject; got "
                         f"groups of {sorted({len(g) for g in groups})}.")
    flat = [f for g in groups for f in g]
    flat_ids = None if subject_ids is None else [str(i) for g in subject_ids for i in g]
    check_fcn_sizes(flat, model.config.encoder_config.num_rois, flat_ids)
    margin_fn = margin_fn or AnswerMargin(model, processor, question, answer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(groups), batch_size):
            chunk = [f for g in groups[start:start + batch_size] for f in g]
            x = torch.as_tensor(model_inputs(processor, chunk), device=device)
            margins, _ = margin_fn(x.view(-1, question.num_graphs, *x.shape[-2:]))
            out.append(margins.double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def model_pattern(model, processor, question: AttributionQuestion, groups: Sequence[Sequence[np.ndarray]], *,
                  answer: str = "full", permutations: int = 200, seed: int = 0, batch_size: int = 16,
                  margin_fn: AnswerMargin | None = None, subject_ids: Sequence[Sequence[str]] | None = None
                  ) -> list[ActivationPattern]:
    """The activation pattern of the model's answer margins over S questions, one per `<graph>`.

    Args:
        groups: S questions' raw FCNs `(N, N)`, one per `<graph>` each.
        subject_ids: per question, its subjects' ids (one per graph).
    """
    margins = answer_margins(model, processor, question, groups, answer=answer, batch_size=batch_size,
                             margin_fn=margin_fn, subject_ids=subject_ids)
    assignment = model.config.encoder_config.network_assignment
    patterns = []
    for g in range(question.num_graphs):
        x = model_inputs(processor, [group[g] for group in groups])
        ids = None if subject_ids is None else [str(i[g]) for i in subject_ids]
        patterns.append(activation_pattern(x, margins, assignment, permutations=permutations, seed=seed,
                                           subject_ids=ids, graph_index=g))
    return patterns


__all__ = ["ActivationPattern", "ConstantMarginsError", "activation_pattern", "answer_margins",
           "correlation_pattern", "model_pattern", "permutation_null"]
