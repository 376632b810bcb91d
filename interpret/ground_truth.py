"""Checking attribution maps against the simulator's ground truth.

The simulator (`datasets_scripts/simulate.py`) plants each attribute's effect on named Yeo-7 network
blocks (`EFFECTS[key].pairs`: (network_a, network_b, weight)); at the edge level the effect map is
L E L^T (L the ROI-to-network indicator), nonzero exactly on the edges whose two ROIs fall in a
planted pair of networks. The builder's dataset folder does not store these, so they are rebuilt
here from the simulator's effect definitions and the dataset's atlas (no subject is re-simulated;
the planted *edges* depend only on the atlas' network assignment).

Metrics for one attribute's cohort edge-importance map W `(N, N)` (e.g. mean |attribution| over subjects):
- ``planted_edge_auc``: the AUC of W at separating planted edges from all other edges (i < j);
- ``planted_pair_rank``: the best rank (1 = first) of a planted pair among the K(K+1)/2 network
  pairs ranked by a `(K, K)` pair importance (the explain CLI passes the permutation z of the
  cohort's mean |block total| of signed attributions, `CohortMap.network_total_z`; default: the
  block mean of W);
  ``primary_pair_rank``: the rank of the pair with the largest planted |weight|;
- ``spread`` (every attribute, the only check for those with no planted effect): how much the top
  pair stands out: ``top_pair_z`` = (max - mean) / SD of the pair scores and ``top_over_median``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datasets_scripts.simulate import EFFECTS, YEO7, yeo7_assignment
from processing.atlases import load_atlas

from .attribution import network_block_mean


@dataclass(frozen=True)
class PlantedEffect:
    """Ground truth of one attribute on one atlas.

    Attributes:
        attribute: registry key.
        pairs: planted (network_a, network_b, weight), Yeo-7 names ([] when the attribute has no effect).
        assignment: `(N,)` Yeo-7 index of every ROI.
        edge_mask: `(N, N)` bool, True on planted edges (symmetric, diagonal False).
        edge_weight: `(N, N)` the planted weight of each edge's network pair (0 elsewhere).
    """

    attribute: str
    pairs: tuple[tuple[str, str, float], ...]
    assignment: np.ndarray
    edge_mask: np.ndarray
    edge_weight: np.ndarray

    @property
    def has_effect(self) -> bool:
        return bool(self.pairs)

    @property
    def primary_pair(self) -> tuple[str, str] | None:
        if not self.pairs:
            return None
        a, b, _ = max(self.pairs, key=lambda p: abs(p[2]))
        return a, b


def planted_effect(attribute: str, atlas_or_assignment) -> PlantedEffect:
    """The planted effect of `attribute` for an atlas name, an `Atlas`, or a Yeo-7 assignment `(N,)`."""
    if isinstance(atlas_or_assignment, str):
        assignment = yeo7_assignment(load_atlas(atlas_or_assignment))
    elif hasattr(atlas_or_assignment, "network_assignment"):
        assignment = yeo7_assignment(atlas_or_assignment)
    else:
        assignment = np.asarray(atlas_or_assignment, dtype=int)
    effect = EFFECTS.get(attribute)
    pairs = tuple(effect.pairs) if effect is not None else ()
    block = np.zeros((len(YEO7), len(YEO7)))
    for a, b, w in pairs:
        i, j = YEO7.index(a), YEO7.index(b)
        block[i, j] = block[j, i] = w
    weight = block[assignment][:, assignment]
    np.fill_diagonal(weight, 0.0)
    return PlantedEffect(attribute, pairs, assignment, weight != 0, weight)


def edge_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC (Mann-Whitney, ties counted half) of `scores` separating `positive` from the rest; NaN if one class is empty."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks for ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pair_scores(importance: np.ndarray, assignment: np.ndarray, pair_importance: np.ndarray | None = None
                ) -> dict[tuple[str, str], float]:
    """Per unordered Yeo-7 pair present in the atlas: `pair_importance[i, j]` `(K, K)`, or the block mean
    of the symmetric `(N, N)` importance map."""
    k = len(YEO7)
    if pair_importance is not None and np.shape(pair_importance) != (k, k):
        raise ValueError(f"pair_importance must be ({k}, {k}) (Yeo-7 network pairs), got {np.shape(pair_importance)}.")
    blocks = network_block_mean(importance, assignment, k) if pair_importance is None else np.asarray(pair_importance)
    present = set(np.asarray(assignment).tolist())
    out = {}
    for i in range(k):
        for j in range(i, k):
            if i in present and j in present and (i != j or (np.asarray(assignment) == i).sum() > 1):
                out[(YEO7[i], YEO7[j])] = float(blocks[i, j])
    return out


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if YEO7.index(a) <= YEO7.index(b) else (b, a)


def spread(scores: dict) -> dict:
    """How much the strongest network pair stands out among all pairs."""
    values = np.array(list(scores.values()))
    top = max(scores, key=scores.get)
    sd = values.std()
    return {
        "top_pair": list(top),
        "top_pair_z": float((values.max() - values.mean()) / sd) if sd > 0 else 0.0,
        "top_over_median": float(values.max() / np.median(values)) if np.median(values) > 0 else float("inf"),
        "coefficient_of_variation": float(sd / values.mean()) if values.mean() > 0 else 0.0,
    }


def evaluate_map(importance: np.ndarray, truth: PlantedEffect, pair_importance: np.ndarray | None = None) -> dict:
    """Ground-truth metrics of a non-negative importance map `(N, N)` and, optionally, a network-pair
    importance `(K, K)` to rank the pairs by (see the module docstring)."""
    importance = np.asarray(importance, float)
    iu = np.triu_indices(importance.shape[0], 1)
    scores = pair_scores(importance, truth.assignment, pair_importance)
    ranked = sorted(scores, key=scores.get, reverse=True)
    out: dict = {"attribute": truth.attribute, "has_effect": truth.has_effect,
                 "planted_pairs": [list(p) for p in truth.pairs], **spread(scores),
                 "pair_ranking": [[a, b, round(scores[(a, b)], 8)] for a, b in ranked]}
    if truth.has_effect:
        planted = [_key(a, b) for a, b, _ in truth.pairs]
        ranks = {f"{p[0]}-{p[1]}": ranked.index(p) + 1 for p in planted if p in scores}
        primary = _key(*truth.primary_pair)
        out.update(
            planted_edge_auc=edge_auc(importance[iu], truth.edge_mask[iu]),
            planted_pair_rank=min(ranks.values()) if ranks else None,
            primary_pair=list(primary),
            primary_pair_rank=ranks.get(f"{primary[0]}-{primary[1]}"),
            planted_pair_ranks=ranks,
            num_pairs=len(scores),
        )
    return out


def class_difference_map(fcns: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`(N, N)` |Cohen's d| per edge between label-1 and label-0 FCNs `(S, N, N)`: the data's own effect map.

    Scored with `evaluate_map`, it is a model-free reference for what an attribution map can reach
    (the planted effect as visible in FCNs of this cohort size, through correlation and noise).
    """
    labels = np.asarray(labels)
    a, b = fcns[labels == 1], fcns[labels == 0]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Need at least 2 subjects per class, got {len(a)} and {len(b)}.")
    pooled = np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2)
    d = np.where(pooled > 0, (a.mean(0) - b.mean(0)) / np.where(pooled > 0, pooled, 1), 0.0)
    np.fill_diagonal(d, 0.0)
    return np.abs(d)


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def ground_truth_table(rows: Sequence[dict]) -> str:
    """A markdown table of ground-truth rows (one per attribute): the activation pattern's numbers (the row's
    own, when ``row["map"] == "activation pattern"``) beside the gradient maps' (``row["gradient"]``)."""
    lines = ["| attribute | planted pairs | edge AUC: pattern / gradient | gradient contrast AUC | "
             "planted-pair rank: pattern z / block mean | gradient pair rank: permutation z / total / edge mean | "
             "primary-pair rank: pattern / gradient | top pair | top-pair spread z | top-pair p (FWE) | "
             "subjects: pattern / gradient | data effect-size map: AUC / pair rank |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pattern = r if r.get("map") == "activation pattern" else {}
        gradient = r.get("gradient", r)
        planted = "; ".join(f"{a}-{b}" for a, b, _ in r.get("planted_pairs", [])) or "none"
        ceiling = r.get("data_ceiling", {})
        lines.append(
            f"| {r['attribute']} | {planted} | {_fmt(pattern.get('planted_edge_auc'))} / "
            f"{_fmt(gradient.get('planted_edge_auc'))} | "
            f"{_fmt(gradient.get('contrast', {}).get('planted_edge_auc'))} | "
            f"{_fmt(pattern.get('planted_pair_rank'))} / {_fmt(pattern.get('pair_rank_by_block_mean'))} "
            f"(of {r.get('num_pairs', '-')}) | {_fmt(gradient.get('planted_pair_rank'))} / "
            f"{_fmt(gradient.get('pair_rank_by_total'))} / {_fmt(gradient.get('pair_rank_by_edge_mean'))} | "
            f"{_fmt(pattern.get('primary_pair_rank'))} / {_fmt(gradient.get('primary_pair_rank'))} | "
            f"{'-'.join(r['top_pair'])} | {r['top_pair_z']:.2f} | {_fmt(r.get('top_pair_p_fwe'))} | "
            f"{_fmt(pattern.get('pattern_subjects'))} / {_fmt(gradient.get('subjects'))} | "
            f"{_fmt(ceiling.get('planted_edge_auc'))} / {_fmt(ceiling.get('planted_pair_rank'))} |")
    return "\n".join(lines)


__all__ = ["PlantedEffect", "class_difference_map", "edge_auc", "evaluate_map", "ground_truth_table", "pair_scores", "planted_effect", "spread"]
