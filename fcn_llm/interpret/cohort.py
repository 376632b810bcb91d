"""Cohort maps: per-subject attributions averaged over subjects, with per-network-pair effect sizes.

For S subjects with edge maps S_s `(N, N)`:
- ``mean``: the signed mean map (what pushes the answer, on average);
- ``mean_abs``: the mean |S_s| (edge importance regardless of sign; the "magnitude" map);
- ``contrast`` (when labels are given): mean map of label-1 subjects minus mean map of label-0 subjects.
  With a cohort-mean reference, gradient x input is grad f * (X - X'), whose average over a balanced
  cohort cancels on every edge; the class contrast keeps grad f * (mean difference between classes),
  large where the model reads the features that separate the classes;
- ``network_abs_total``: per network pair, the mean over subjects of |the block's total signed
  attribution| (`network_block_total`): the block's share of the answer, which, unlike per-edge
  means, does not favour small networks (but grows with the block's size where edges are noise);
- ``network_total_z``: that statistic as a z-score against the same computed with the ROIs'
  network labels permuted (sizes kept, `permutation_z`): size-neutral, and ~N(0, 1) for a block
  that matters no more than a random set of as many edges; the ground-truth check ranks pairs by it;
- ``network_effect``: per network pair, Cohen's d of the subjects' block-mean attributions against 0
  (mean / SD over subjects); ``network_contrast_effect``: Cohen's d between label-1 and label-0
  subjects of the same block means (pooled SD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .attribution import GraphAttribution, network_block_mean, network_block_total


@dataclass
class CohortMap:
    """Cohort summaries of S per-subject attributions (shapes: N ROIs, K networks)."""

    mean: np.ndarray  # (N, N)
    mean_abs: np.ndarray  # (N, N)
    contrast: np.ndarray | None  # (N, N)
    roi_mean: np.ndarray  # (N,)
    roi_abs_mean: np.ndarray  # (N,)
    roi_attention: np.ndarray | None  # (N,)
    network_mean: np.ndarray  # (K, K)
    network_abs_mean: np.ndarray  # (K, K)
    network_abs_total: np.ndarray  # (K, K)
    network_total_z: np.ndarray  # (K, K)
    network_effect: np.ndarray  # (K, K) Cohen's d against 0
    network_contrast_effect: np.ndarray | None  # (K, K) Cohen's d label 1 vs 0
    margins: np.ndarray  # (S,)
    labels: np.ndarray | None  # (S,)
    subject_ids: list

    @property
    def num_subjects(self) -> int:
        return len(self.margins)


def _cohens_d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's d (pooled SD) of two groups of `(n, K, K)` block means; 0 where undefined."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros(a.shape[1:])
    pooled = np.sqrt(((len(a) - 1) * a.var(0, ddof=1) + (len(b) - 1) * b.var(0, ddof=1)) / (len(a) + len(b) - 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pooled > 0, (a.mean(0) - b.mean(0)) / np.where(pooled > 0, pooled, 1), 0.0)


def permutation_z(edges: np.ndarray, assignment: Sequence[int], permutations: int = 200, seed: int = 0) -> np.ndarray:
    """`(K, K)` z-score of the mean |block total| of symmetric maps `(S, N, N)` against random
    relabellings of the ROIs' networks (the same network sizes, the same relabelling for every subject)."""
    assignment = np.asarray(assignment, dtype=int)
    k = int(assignment.max() + 1)
    observed = np.abs(network_block_total(edges, assignment, k)).mean(0)
    rng = np.random.default_rng(seed)
    null = np.stack([np.abs(network_block_total(edges, rng.permutation(assignment), k)).mean(0)
                     for _ in range(permutations)])
    sd = null.std(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, (observed - null.mean(0)) / np.where(sd > 0, sd, 1), 0.0)


def cohort_map(attributions: Sequence[GraphAttribution], assignment: Sequence[int] | None,
               labels: Sequence[float] | None = None) -> CohortMap:
    """Average `attributions` (one per subject) and compute per-network-pair effect sizes.

    Args:
        assignment: `(N,)` network index of each ROI (None: one network).
        labels: optional 0/1 per subject (e.g. the condition); enables the contrast map and its effect sizes.
    """
    if not attributions:
        raise ValueError("No attributions to average: give at least one subject.")
    edges = np.stack([a.edges for a in attributions])  # (S, N, N)
    n = edges.shape[1]
    assignment = np.zeros(n, dtype=int) if assignment is None else np.asarray(assignment, dtype=int)
    blocks = np.stack([network_block_mean(e, assignment) for e in edges])  # (S, K, K)
    totals = network_block_total(edges, assignment)  # (S, K, K)
    sd = blocks.std(0, ddof=1) if len(blocks) > 1 else np.zeros(blocks.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.where(sd > 0, blocks.mean(0) / np.where(sd > 0, sd, 1), 0.0)
    contrast = contrast_effect = None
    y = None
    if labels is not None:
        y = np.asarray(labels, dtype=float)
        if len(y) != len(edges):
            raise ValueError(f"{len(y)} labels for {len(edges)} attributions.")
        pos, neg = y == 1, y == 0
        if pos.any() and neg.any():
            contrast = edges[pos].mean(0) - edges[neg].mean(0)
            contrast_effect = _cohens_d(blocks[pos], blocks[neg])
    attention = [a.roi_attention for a in attributions if a.roi_attention is not None]
    mean = edges.mean(0)
    mean_abs = np.abs(edges).mean(0)
    return CohortMap(
        mean=mean, mean_abs=mean_abs, contrast=contrast,
        roi_mean=0.5 * mean.sum(1), roi_abs_mean=0.5 * np.abs(edges).sum(2).mean(0),
        roi_attention=np.mean(attention, 0) if attention else None,
        network_mean=blocks.mean(0), network_abs_mean=network_block_mean(mean_abs, assignment),
        network_abs_total=np.abs(totals).mean(0), network_total_z=permutation_z(edges, assignment),
        network_effect=effect, network_contrast_effect=contrast_effect,
        margins=np.array([a.margin for a in attributions]), labels=y,
        subject_ids=[a.subject_id for a in attributions],
    )


def top_edges(edge_map: np.ndarray, labels: Sequence[str], k: int = 10) -> list[dict]:
    """The `k` strongest edges (by |value|) of a symmetric map, with ROI names."""
    iu = np.triu_indices(edge_map.shape[0], 1)
    values = edge_map[iu]
    order = np.argsort(-np.abs(values))[:k]
    return [{"roi_a": str(labels[iu[0][i]]), "roi_b": str(labels[iu[1][i]]), "value": float(values[i])} for i in order]


__all__ = ["CohortMap", "cohort_map", "permutation_z", "top_edges"]
