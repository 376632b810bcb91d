"""Checking attribution maps against the ground truth recorded in the dataset folder.

The builder writes the simulator's planted effects into ``DIR/truth/`` (`build_instructions.write_truth`):
``effects.json`` (per attribute: its ROI-, block- and whole-brain components as readable lists) and
``effects.safetensors`` (``<attribute>.<component>``: the covariance change per unit code on every
upper-triangle edge). The truth is read from there, so a dataset is checked against the effects it
was built with; a folder without them (real cohorts, older builds) raises `MissingTruthError`.

Planted edges are those of the localised components: the ROI level (a region's edges to its target
networks) and the block level (every edge of a planted network pair); whole-brain components (global
coupling, segregation, the distributed pattern) touch every edge and are kept as maps only.

Metrics for one attribute's cohort edge-importance map W `(N, N)` (e.g. mean |attribution| over subjects):
- ``planted_edge_auc``: the AUC of W at separating planted edges from all other edges (i < j);
- ``planted_pair_rank``: the best rank (1 = first) of a planted block pair among the K(K+1)/2 network
  pairs ranked by a `(K, K)` pair importance (the explain CLI passes the permutation z of the
  cohort's mean |block total| of signed attributions, `CohortMap.network_total_z`; default: the
  block mean of W);
  ``primary_pair_rank``: the rank of the block pair with the largest planted |weight|;
- ``spread`` (every attribute, the only check for those with no planted effect): how much the top
  pair stands out: ``top_pair_z`` = (max - mean) / SD of the pair scores and ``top_over_median``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets_scripts.effects import YEO7
from datasets_scripts.simulate import yeo7_assignment
from processing.atlases import load_atlas

from .attribution import network_block_mean

TRUTH_JSON = Path("truth") / "effects.json"
TRUTH_ARRAYS = Path("truth") / "effects.safetensors"
LOCAL_COMPONENTS = ("roi", "blocks")


class MissingTruthError(ValueError):
    """A dataset folder without recorded planted effects."""


@dataclass(frozen=True)
class PlantedEffect:
    """Ground truth of one attribute, as recorded in a dataset folder.

    Attributes:
        attribute: registry key.
        pairs: planted block pairs (network_a, network_b, weight), Yeo-7 names ([] without a block component).
        assignment: `(N,)` Yeo-7 index of every ROI.
        edge_mask: `(N, N)` bool, True on planted edges of the ROI and block components (symmetric, diagonal False).
        edge_weight: `(N, N)` the planted change of those components per unit code (0 elsewhere).
        components: {component: `(N, N)` planted change} for every recorded component (roi, blocks, whole_brain).
        regions: the ROI-level entries of the truth file ({region, roi, targets, weight, amplitude}).
    """

    attribute: str
    pairs: tuple[tuple[str, str, float], ...]
    assignment: np.ndarray
    edge_mask: np.ndarray
    edge_weight: np.ndarray
    components: dict = field(default_factory=dict)
    regions: tuple = ()

    @property
    def has_effect(self) -> bool:
        return bool(self.edge_mask.any())

    @property
    def primary_pair(self) -> tuple[str, str] | None:
        if not self.pairs:
            return None
        a, b, _ = max(self.pairs, key=lambda p: abs(p[2]))
        return a, b


def load_truth(data_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(the truth JSON, {``<attribute>.<component>``: `(E,)` edge array}) of a dataset folder."""
    from safetensors.numpy import load_file

    folder = Path(data_dir)
    if not (folder / TRUTH_JSON).is_file() or not (folder / TRUTH_ARRAYS).is_file():
        raise MissingTruthError(f"{folder} has no recorded planted effects ({TRUTH_JSON} and {TRUTH_ARRAYS}): only "
                                "datasets built from the simulator by datasets_scripts/build_instructions.py carry a "
                                "ground truth; rebuild it, or use a folder that has one.")
    return json.loads((folder / TRUTH_JSON).read_text()), load_file(str(folder / TRUTH_ARRAYS))


def planted_effect(attribute: str, data_dir: str | Path) -> PlantedEffect:
    """The planted effect of `attribute` recorded in the dataset folder `data_dir` (no effect if not listed)."""
    meta, arrays = load_truth(data_dir)
    n = int(meta["num_rois"])
    assignment = yeo7_assignment(load_atlas(meta["atlas"]))
    iu = np.triu_indices(n, 1)
    components = {}
    for comp in meta["arrays"].get(attribute, []):
        mat = np.zeros((n, n), dtype=np.float64)
        mat[iu] = arrays[f"{attribute}.{comp}"]
        components[comp] = mat + mat.T
    weight = sum((components[c] for c in LOCAL_COMPONENTS if c in components), np.zeros((n, n)))
    entry = meta["attributes"].get(attribute, {})
    pairs = tuple((a, b, float(w)) for a, b, w, *_ in entry.get("blocks", []))
    return PlantedEffect(attribute, pairs, assignment, weight != 0, weight, components, tuple(entry.get("roi", [])))


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
                 "planted_pairs": [list(p) for p in truth.pairs],
                 "planted_regions": [r["region"] for r in truth.regions], **spread(scores),
                 "pair_ranking": [[a, b, round(scores[(a, b)], 8)] for a, b in ranked]}
    if truth.has_effect:
        planted = [_key(a, b) for a, b, _ in truth.pairs]
        if "roi" in truth.components:
            roi_mask = truth.components["roi"] != 0
            out["roi_edge_auc"] = edge_auc(importance[iu], roi_mask[iu])
        ranks = {f"{p[0]}-{p[1]}": ranked.index(p) + 1 for p in planted if p in scores}
        primary = _key(*truth.primary_pair) if truth.primary_pair else None
        out.update(
            planted_edge_auc=edge_auc(importance[iu], truth.edge_mask[iu]),
            planted_pair_rank=min(ranks.values()) if ranks else None,
            primary_pair=list(primary) if primary else None,
            primary_pair_rank=ranks.get(f"{primary[0]}-{primary[1]}") if primary else None,
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


__all__ = ["MissingTruthError", "PlantedEffect", "load_truth", "class_difference_map", "edge_auc", "evaluate_map", "ground_truth_table", "pair_scores", "planted_effect", "spread"]
