"""End-to-end explain / ground-truth runs on a saved model and an instruction-set folder.

`explain_attribute` picks subjects of one split with a known value (balanced between the two sides
of the question: condition vs control, target class vs others, above vs below the threshold),
attributes the answer margin for each, averages a `CohortMap` (one per graph for comparative
questions), and writes PNGs, an HTML report, `summary.json` and the maps (`maps.npz`).
With `pattern_subjects` > 0 it also computes the activation pattern of the model's answers over that many
subjects of the split (`pattern.model_pattern`: forward passes only, no labels), the cohort's
forward-model map of where the answer's information lies (the gradient maps are per-subject
explanations, backward-model weights). `ground_truth` does this for every attribute the model was
trained on and scores the maps against the planted effects recorded in the dataset folder (`ground_truth.json`,
`ground_truth.md`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datasets_scripts.attributes import load_registry

from .attribution import AnswerMargin, AtlasMismatchError, attribute_question, completeness_gap, reference_fcn
from .cohort import CohortMap, cohort_map, top_edges
from .ground_truth import MissingTruthError, PlantedEffect, evaluate_map, planted_effect
from .pattern import MIN_SUBJECTS, ActivationPattern, ConstantMarginsError, model_pattern
from .questions import AttributionQuestion, check_attribute, make_question


def trained_attributes(model, subjects: pd.DataFrame | None = None) -> list[str]:
    """The attributes a model was trained on: its auxiliary heads' keys, else the registry attributes
    with values in the training split of `subjects` (train.py trains on every such attribute), else all."""
    registry = load_registry()
    heads = [h["key"] for h in (model.config.auxiliary_heads or []) if h.get("key") in registry]
    if heads:
        return heads
    if subjects is not None:
        train = subjects[subjects["split"] == "train"] if "split" in subjects else subjects
        found = [k for k in registry if k in train.columns and train[k].notna().any()]
        if found:
            return found
    return list(registry)


def atlas_name(subjects: pd.DataFrame) -> str | None:
    if "atlas" not in subjects.columns or subjects["atlas"].isna().all():
        return None
    return str(subjects["atlas"].dropna().iloc[0])


def side_labels(attr, values: pd.Series, question: AttributionQuestion, threshold: float | None) -> np.ndarray:
    """1 where the subject is on the explained side of the question (condition / target class / above), else 0."""
    if attr.kind == "binary":
        return (values.astype(float) == 1.0).astype(float).to_numpy()
    if attr.kind == "categorical":
        target = attr.classes[-1] if question.paradigm == "comparative" else None
        if target is None:
            target = question.choices[question.target] if question.paradigm == "predictive" else None
        if target is None:  # judgment: the class the question names
            target = question.target_class
        return (values == target).astype(float).to_numpy()
    return (values.astype(float) > float(threshold)).astype(float).to_numpy()


def pick_threshold(attr, values: np.ndarray) -> float:
    """The registry threshold closest to the median of `values` (the cut-off the model was asked about most)."""
    median = float(np.median(values))
    if attr.thresholds:
        return float(min(attr.thresholds, key=lambda t: abs(t - median)))
    return float(round(median, attr.decimals))


def balanced_rows(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` row indices, half from each label (the rest from the larger side when one is short)."""
    pos, neg = rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))
    half = count // 2
    take_pos = min(len(pos), max(half, count - len(neg)))
    take_neg = min(len(neg), count - take_pos)
    return np.sort(np.concatenate([pos[:take_pos], neg[:take_neg]])).astype(int)


@dataclass
class ExplainResult:
    attribute: str
    question: AttributionQuestion
    maps: list[CohortMap]  # one per graph of the question
    subjects: list[str]
    atlas: str | None
    seconds: float
    completeness_gaps: list[float]
    assignment: list[int]  # (N,) network of each ROI, as the model's encoder groups them
    network_names: list[str]  # K names
    patterns: list[ActivationPattern] | None = None  # one per graph; None when not computed
    pattern_note: str | None = None  # why there is no pattern


def explain_attribute(
    model, processor, subjects: pd.DataFrame, fcns: np.ndarray, attribute: str, *,
    num_subjects: int = 16, split: str = "zero_shot", paradigm: str = "judgment", method: str = "grad_x_input",
    steps: int = 16, answer: str = "full", target_class: str | None = None, threshold: float | None = None,
    reference_subjects: int = 200, seed: int = 0, allowed: Sequence[str] | None = None,
    pattern_subjects: int = 200, permutations: int = 200, log: Callable[[str], None] = print,
) -> ExplainResult:
    """Cohort attribution maps of one attribute's question on `num_subjects` subjects of `split`.

    Args:
        subjects: one row per subject (``subject_id``, ``split``, attribute columns); row i owns `fcns[i]`.
        fcns: `(S, N, N)` raw FCNs.
        allowed: attributes the model was trained on (default: `trained_attributes`).
        pattern_subjects: questions (of any subjects of `split`, labels unused) for the activation pattern;
            0: none.
        permutations: margin shuffles of the pattern's network-pair null.
    """
    t0 = time.perf_counter()
    allowed = trained_attributes(model, subjects) if allowed is None else list(allowed)
    attr = check_attribute(attribute, allowed)
    num_rois = model.config.encoder_config.num_rois
    if fcns.shape[-1] != num_rois:
        raise AtlasMismatchError(
            f"The data's FCNs have N={fcns.shape[-1]} ROIs (atlas {atlas_name(subjects)!r}) but the model's encoder "
            f"expects N={num_rois} ROIs: explain a model with data of the atlas it was trained on.")
    if attribute not in subjects.columns:
        raise ValueError(f"The data have no {attribute!r} column; attribute columns: "
                         f"{[c for c in subjects.columns if c in load_registry()]}.")
    in_split = subjects["split"] == split if "split" in subjects.columns else pd.Series(True, index=subjects.index)
    if not in_split.any():
        raise ValueError(f"No subjects in split {split!r}; splits: {sorted(subjects['split'].unique())}.")
    known = in_split & subjects[attribute].notna()
    if not known.any():
        raise ValueError(f"No subject of split {split!r} has a value of {attribute!r}.")
    rows = np.flatnonzero(known.to_numpy())
    values = subjects[attribute].iloc[rows]
    if attr.kind == "continuous" and paradigm != "comparative" and threshold is None:
        threshold = pick_threshold(attr, values.to_numpy(float))
    question = make_question(attr, paradigm, threshold=threshold, target_class=target_class)
    # the side each subject is on: above the threshold (judgment) or the median (comparative) for continuous
    cut = threshold if threshold is not None else (
        float(np.median(values.astype(float))) if attr.kind == "continuous" else None)
    labels = side_labels(attr, values, question, cut)
    rng = np.random.default_rng(seed)
    chosen = rows[balanced_rows(labels, num_subjects * question.num_graphs, rng)]
    chosen_labels = side_labels(attr, subjects[attribute].iloc[chosen], question, cut)

    ref_pool = np.flatnonzero((subjects["split"] == "train").to_numpy()) if "split" in subjects.columns else np.arange(len(fcns))
    ref_pool = ref_pool if len(ref_pool) else np.arange(len(fcns))
    ref_rows = rng.choice(ref_pool, min(reference_subjects, len(ref_pool)), replace=False)
    reference = reference_fcn(processor, list(fcns[ref_rows]))

    if question.num_graphs == 2:  # pairs: one from each side where possible, the explained side first half the time
        pos, neg = chosen[chosen_labels == 1], chosen[chosen_labels == 0]
        m = min(len(pos), len(neg))
        groups = [[p, q] if i % 2 == 0 else [q, p] for i, (p, q) in enumerate(zip(pos[:m], neg[:m]))]
        leftover = np.concatenate([pos[m:], neg[m:]])
        groups += [list(leftover[i:i + 2]) for i in range(0, len(leftover) - 1, 2)]
    else:
        groups = [[r] for r in chosen]
    if answer == "first":
        try:
            margin_fn = AnswerMargin(model, processor, question, "first")
        except ValueError:
            margin_fn = AnswerMargin(model, processor, question, "full")
    else:
        margin_fn = AnswerMargin(model, processor, question, answer)
    per_graph: list[list] = [[] for _ in range(question.num_graphs)]
    per_graph_labels: list[list] = [[] for _ in range(question.num_graphs)]
    gaps = []
    ids = subjects["subject_id"].astype(str).to_numpy()
    for i, group in enumerate(groups):
        result = attribute_question(model, processor, question, [fcns[r] for r in group], reference=reference,
                                    method=method, steps=steps, subject_ids=[ids[r] for r in group], margin_fn=margin_fn)
        gap = completeness_gap(result)
        if gap is not None:
            gaps.append(gap)
        for g, (res, r) in enumerate(zip(result, group)):
            per_graph[g].append(res)
            per_graph_labels[g].append(float(side_labels(attr, subjects[attribute].iloc[[r]], question, cut)[0]))
        if (i + 1) % max(1, len(groups) // 4) == 0 or i + 1 == len(groups):
            log(f"  {attribute}: {i + 1}/{len(groups)} questions ({time.perf_counter() - t0:.0f}s)")
    enc = model.config.encoder_config
    assignment = list(enc.network_assignment or [0] * num_rois)
    names = list(enc.network_names or ([f"net {i}" for i in range(enc.num_networks)] if enc.network_assignment
                                       else ["all"]))
    maps = [cohort_map(a, assignment, lab) for a, lab in zip(per_graph, per_graph_labels)]
    patterns, note = None, None
    if pattern_subjects > 0:
        pool = rng.permutation(np.flatnonzero(in_split.to_numpy()))
        count = min(pattern_subjects, len(pool) // question.num_graphs)
        pattern_groups = pool[:count * question.num_graphs].reshape(count, question.num_graphs)
        if count < MIN_SUBJECTS:
            note = f"no activation pattern: {count} question(s) from split {split!r}, need at least {MIN_SUBJECTS}"
        else:
            try:
                patterns = model_pattern(model, processor, question, [[fcns[r] for r in g] for g in pattern_groups],
                                         permutations=permutations, seed=seed, margin_fn=margin_fn,
                                         subject_ids=[[ids[r] for r in g] for g in pattern_groups])
            except ConstantMarginsError as err:
                note = f"no activation pattern: {err}"
        log(f"  {attribute}: " + (note or f"activation pattern over {count} questions "
                                          f"({time.perf_counter() - t0:.0f}s)"))
    return ExplainResult(attribute, question, maps, [ids[r] for grp in groups for r in grp], atlas_name(subjects),
                         time.perf_counter() - t0, gaps, assignment, names, patterns, note)


def _ground_truth_assignment(result: ExplainResult, data_dir):
    """The planted effect of `result.attribute` recorded in the dataset folder, or None if it has none."""
    if data_dir is None:
        return None
    try:
        return planted_effect(result.attribute, data_dir)
    except MissingTruthError:
        return None


def score_against_truth(result: ExplainResult, data_dir=None) -> dict | None:
    """Ground-truth metrics of graph 0: the activation pattern's (primary, `map` = "activation pattern"; edges
    by |correlation|, network pairs by the permutation z of |block mean r|, `pair_rank_by_block_mean` by
    |block mean r|, `top_pair_p_fwe` the top pair's family-wise p) with the gradient maps' under `gradient`
    (`gradient_truth_row`); without a pattern the gradient's numbers are also the primary ones."""
    truth = _ground_truth_assignment(result, data_dir)
    if truth is None:
        return None
    gradient = gradient_truth_row(result.maps[0], truth)
    if not result.patterns:
        return {**gradient, "map": "gradient", "gradient": gradient}
    pattern = result.patterns[0]
    importance = np.abs(pattern.correlation)
    row = evaluate_map(importance, truth, pair_importance=pattern.network_z)
    by_mean = evaluate_map(importance, truth, pair_importance=pattern.network_abs)
    row.update(map="activation pattern", pair_rank_by_block_mean=by_mean.get("planted_pair_rank"),
               primary_pair_rank_by_block_mean=by_mean.get("primary_pair_rank"),
               top_pair_p_fwe=pattern.top_pair_p_fwe, pattern_subjects=pattern.num_subjects,
               permutations=pattern.permutations, gradient=gradient)
    if truth.has_effect:
        row["planted_edge_auc_covariance"] = evaluate_map(np.abs(pattern.covariance), truth)["planted_edge_auc"]
    return row


def gradient_truth_row(cmap: CohortMap, truth: PlantedEffect) -> dict:
    """`evaluate_map` of the gradient magnitude map (network pairs ranked by the permutation z of block
    totals) and of the |class contrast| map; `pair_rank_by_total` and `pair_rank_by_edge_mean` rank the
    pairs by raw block totals and by per-edge block means."""
    row = evaluate_map(cmap.mean_abs, truth, pair_importance=cmap.network_total_z)
    row["pair_rank_by_total"] = evaluate_map(cmap.mean_abs, truth, pair_importance=cmap.network_abs_total).get(
        "planted_pair_rank")
    row["pair_rank_by_edge_mean"] = evaluate_map(cmap.mean_abs, truth).get("planted_pair_rank")
    if cmap.contrast is not None:
        contrast = evaluate_map(np.abs(cmap.contrast), truth)
        row["contrast"] = {k: contrast[k] for k in ("planted_edge_auc", "planted_pair_rank", "primary_pair_rank",
                                                     "top_pair", "top_pair_z") if k in contrast}
    row["subjects"] = cmap.num_subjects
    return row


def write_explain_outputs(result: ExplainResult, out: str | Path, *, method: str = "",
                          truth_row: dict | None = None) -> dict:
    """PNGs, `report.html`, `summary.json` and `maps.npz` under `out/<attribute>/`."""
    from processing.atlases import load_atlas

    from . import plots
    from .report import write_html

    folder = Path(out) / result.attribute
    folder.mkdir(parents=True, exist_ok=True)
    cmap0 = result.maps[0]
    n = cmap0.mean.shape[0]
    atlas = None
    if result.atlas:
        try:
            atlas = load_atlas(result.atlas)
        except (ValueError, ImportError):
            atlas = None
    if atlas is not None and atlas.num_rois != n:
        atlas = None
    labels = atlas.labels if atlas is not None else [f"ROI {i}" for i in range(n)]
    k = cmap0.network_mean.shape[0]
    names, assignment = result.network_names, np.asarray(result.assignment)
    figures = []
    highlight = [(a, b) for a, b, _ in (truth_row or {}).get("planted_pairs", [])]
    npz = {}
    for g, cmap in enumerate(result.maps):
        tag = f"_graph{g + 1}" if len(result.maps) > 1 else ""
        label = f" (graph {g + 1})" if len(result.maps) > 1 else ""
        shown = cmap.contrast if cmap.contrast is not None else cmap.mean
        kind = "class contrast" if cmap.contrast is not None else "mean"
        figures.append(plots.plot_matrix(shown, assignment, names, folder / f"matrix{tag}.png",
                                         f"{result.attribute}: edge attribution, {kind}{label}"))
        figures.append(plots.plot_network_matrix(cmap.network_mean, names, folder / f"networks{tag}.png",
                                                 f"{result.attribute}: mean attribution per network pair{label}",
                                                 highlight, "mean attribution"))
        effect = cmap.network_contrast_effect if cmap.network_contrast_effect is not None else cmap.network_effect
        figures.append(plots.plot_network_matrix(effect, names, folder / f"network_effects{tag}.png",
                                                 f"{result.attribute}: effect size per network pair{label}",
                                                 highlight, "Cohen's d"))
        if atlas is not None:
            try:
                figures.append(plots.plot_glass_brain(shown, atlas.coords, folder / f"glass_brain{tag}.png",
                                                      f"{result.attribute}{label}", node_values=cmap.roi_abs_mean))
            except ImportError as err:  # nilearn missing: the other figures still help
                print(f"  glass brain skipped: {err}")
        figures.append(plots.plot_roi_bars(cmap.roi_mean, labels, folder / f"rois{tag}.png",
                                           f"{result.attribute}: ROI attribution{label}"))
        for name in ("mean", "mean_abs", "contrast", "roi_mean", "roi_abs_mean", "roi_attention", "network_mean",
                     "network_abs_mean", "network_abs_total", "network_total_z", "network_effect", "network_contrast_effect", "margins", "labels"):
            value = getattr(cmap, name)
            if value is not None:
                npz[f"{name}{tag}"] = value
    for pattern in result.patterns or []:
        tag = f"_graph{pattern.graph_index + 1}" if len(result.patterns) > 1 else ""
        label = f" (graph {pattern.graph_index + 1})" if len(result.patterns) > 1 else ""
        figures.append(plots.plot_matrix(
            pattern.correlation, assignment, names, folder / f"pattern{tag}.png",
            f"{result.attribute}: activation pattern, r(edge, margin) over {pattern.num_subjects} subjects{label}",
            label="r"))
        figures.append(plots.plot_network_matrix(
            pattern.network, names, folder / f"pattern_networks{tag}.png",
            f"{result.attribute}: activation pattern, mean r per network pair{label}", highlight, "mean r"))
        for name in ("correlation", "covariance", "network", "network_z", "network_p", "network_p_fwe", "margins"):
            npz[f"pattern_{name}{tag}"] = getattr(pattern, name)
    np.savez_compressed(folder / "maps.npz", **npz)
    pattern0 = result.patterns[0] if result.patterns else None
    pairs = []
    for i in range(k):
        for j in range(i, k):
            contrast = cmap0.network_contrast_effect[i, j] if cmap0.network_contrast_effect is not None else ""
            pattern_cells = ("", "", "") if pattern0 is None else (
                pattern0.network[i, j], pattern0.network_z[i, j], pattern0.network_p_fwe[i, j])
            pairs.append((names[i], names[j], cmap0.network_mean[i, j], cmap0.network_effect[i, j], contrast,
                          *pattern_cells))
    edges = top_edges(cmap0.mean if cmap0.contrast is None else cmap0.contrast, labels)
    q = result.question
    summary = {
        "attribute": result.attribute, "question": q.text, "paradigm": q.paradigm,
        "explained_answer": f"{q.target_answer} vs {', '.join(c for i, c in enumerate(q.choices) if i != q.target)}",
        "method": method, "subjects": cmap0.num_subjects, "graphs_per_question": q.num_graphs,
        "atlas": result.atlas, "mean_margin": float(cmap0.margins.mean()), "seconds": round(result.seconds, 1),
    }
    if result.completeness_gaps:
        summary["mean_abs_completeness_gap"] = float(np.mean(np.abs(result.completeness_gaps)))
    if pattern0 is not None:
        summary.update(pattern_subjects=pattern0.num_subjects, pattern_top_pair="-".join(
            names[i] for i in pattern0.top_pair), pattern_top_pair_p_fwe=pattern0.top_pair_p_fwe)
    elif result.pattern_note:
        summary["pattern_note"] = result.pattern_note
    write_html(folder / "report.html", f"FCN-LLM attribution: {result.attribute}", summary, figures, pairs, edges,
               truth_row)
    payload = {**summary, "subject_ids": result.subjects, "top_edges": edges,
               "network_names": names, "pattern": _pattern_summary(result, names), "ground_truth": truth_row}
    (folder / "summary.json").write_text(json.dumps(payload, indent=2, default=_json_default))
    return payload


def _pattern_summary(result: ExplainResult, names: Sequence[str]) -> dict | None:
    """The activation pattern's headline numbers (graph 0) for `summary.json`; None without a pattern."""
    if not result.patterns:
        return None
    p = result.patterns[0]
    a, b = p.top_pair
    return {"subjects": p.num_subjects, "permutations": p.permutations, "top_pair": [names[a], names[b]],
            "top_pair_mean_r": float(p.network[a, b]), "top_pair_z": float(p.network_z[a, b]),
            "top_pair_p_fwe": p.top_pair_p_fwe, "mean_margin": float(p.margins.mean()),
            "sd_margin": float(p.margins.std(ddof=1)), "subject_ids": p.subject_ids}


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


__all__ = ["ExplainResult", "explain_attribute", "gradient_truth_row", "score_against_truth", "trained_attributes",
           "write_explain_outputs"]
