"""Instruction records from subjects' attributes: the three paradigms, as chat messages.

- predictive: "<graph>\nWhat is this subject's age?" -> "34";
- judgment: "<graph>\nIs this subject older than 30 years? Answer yes or no." -> "Yes";
- comparative: "Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two subjects is older, the first
  or the second?" -> "The first" (pairs from the same split and dataset; answers balanced exactly).

Missing values are skipped and counted (per split and attribute), never invented.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from datasets_scripts.attributes import Attribute, AttributeRegistry

GRAPH_TOKEN = "<graph>"
FIRST, SECOND = "The first", "The second"


@dataclass
class InstructionSet:
    """Records (dicts with the `instructions` config's columns) and what was skipped."""

    records: list[dict] = field(default_factory=list)
    skipped_missing: Counter = field(default_factory=Counter)  # attribute -> subjects with no value
    skipped_ties: Counter = field(default_factory=Counter)  # attribute -> comparative pairs not formed


def _message(question: str, answer: str, num_graphs: int) -> list[dict]:
    if num_graphs == 1:
        prompt = f"{GRAPH_TOKEN}\n{question}"
    else:
        prompt = "".join(f"Subject {i + 1}: {GRAPH_TOKEN}\n" for i in range(num_graphs)) + question
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def _thresholds(attr: Attribute, values: np.ndarray) -> list[float]:
    """Cut-offs for judgment questions that split this cohort reasonably (10th-90th percentile)."""
    lo, hi = np.quantile(values, [0.1, 0.9])
    inside = [t for t in attr.thresholds if lo <= t <= hi]
    return inside or [float(np.round(np.median(values), attr.decimals))]


def _single(attr: Attribute, value, rng: np.random.Generator, thresholds: list[float]) -> list[tuple[str, str, str]]:
    """(paradigm, question, answer) for the single-subject paradigms."""
    out = []
    if attr.templates["predictive"]:
        out.append(("predictive", str(rng.choice(attr.templates["predictive"])), attr.format_value(value)))
    if attr.templates["judgment"]:
        template = str(rng.choice(attr.templates["judgment"]))
        if attr.kind == "continuous":
            choices = [t for t in thresholds if float(value) != t] or thresholds
            threshold = float(rng.choice(choices))
            question = template.format(threshold=attr.format_threshold(threshold), units=attr.units)
            answer = "Yes" if float(value) > threshold else "No"
        elif attr.kind == "categorical":
            asked = value if rng.random() < 0.5 else str(rng.choice([c for c in attr.classes if c != value]))
            question = template.format(phrase=attr.class_phrases[asked])
            answer = "Yes" if asked == value else "No"
        else:
            question, answer = template, ("Yes" if float(value) == 1.0 else "No")
        out.append(("judgment", question, answer))
    return out


def _pairs(attr: Attribute, ids: np.ndarray, values: np.ndarray, rng: np.random.Generator) -> tuple[list, int]:
    """Pairs (higher_index, lower_index) for comparative questions, and the number of ties skipped."""
    if attr.kind == "binary":
        pos, neg = rng.permutation(np.flatnonzero(values == 1)), rng.permutation(np.flatnonzero(values == 0))
        return list(zip(pos, neg[: len(pos)])) if len(neg) >= len(pos) else list(zip(pos[: len(neg)], neg)), 0
    order = rng.permutation(len(ids))
    pairs, ties = [], 0
    for a, b in zip(order[0::2], order[1::2]):
        if values[a] == values[b]:
            ties += 1
            continue
        pairs.append((a, b) if values[a] > values[b] else (b, a))
    return pairs, ties


def build_instruction_set(meta: pd.DataFrame, split: str, registry: AttributeRegistry,
                          rng: np.random.Generator, comparative_per_subject: float = 0.5) -> InstructionSet:
    """All instructions of one split.

    Args:
        meta: the split's subjects (`subject_id`, `dataset`, `site` and attribute columns named by
            registry keys; missing = NaN/None).
        comparative_per_subject: comparative pairs per attribute, as a fraction of its subjects.
    """
    out = InstructionSet()
    attrs = [c for c in meta.columns if c not in ("subject_id", "dataset", "site", "atlas", "num_rois")]
    registry.select(attrs)  # unknown columns raise, naming the allowed keys
    counter = 0

    def add(paradigm, attr, question, answer, rows):
        nonlocal counter
        sites = list(dict.fromkeys(meta["site"].iloc[r] for r in rows))
        out.records.append({
            "id": f"{split}-{counter:07d}",
            "messages": _message(question, answer, len(rows)),
            "subject_ids": [str(meta["subject_id"].iloc[r]) for r in rows],
            "paradigm": paradigm, "attribute": attr.key, "answer": answer,
            "dataset": str(meta["dataset"].iloc[rows[0]]), "site": "|".join(map(str, sites)),
        })
        counter += 1

    for key in attrs:
        attr = registry[key]
        column = meta[key]
        present = np.array([not attr.is_missing(v) for v in column])
        out.skipped_missing[key] += int((~present).sum())
        rows = np.flatnonzero(present)
        if not len(rows):
            continue
        for r in rows:
            attr.check_value(column.iloc[r], where=f"subject {meta['subject_id'].iloc[r]!r}")
        values = column.iloc[rows].to_numpy()
        thresholds = _thresholds(attr, values.astype(float)) if attr.kind == "continuous" else []
        for r, value in zip(rows, values):
            for paradigm, question, answer in _single(attr, value, rng, thresholds):
                add(paradigm, attr, question, answer, [r])
        if attr.kind == "categorical" or not attr.templates["comparative"]:
            continue
        n_pairs = 0
        for _, group in pd.Series(rows).groupby(meta["dataset"].iloc[rows].to_numpy()):
            idx = group.to_numpy()
            vals = column.iloc[idx].to_numpy().astype(float)
            pairs, ties = _pairs(attr, idx, vals, rng)
            out.skipped_ties[key] += ties
            keep = int(round(comparative_per_subject * len(idx)))
            for hi, lo in pairs[:keep]:
                lower = bool(attr.templates["comparative_lower"]) and rng.random() < 0.5
                template = str(rng.choice(attr.templates["comparative_lower" if lower else "comparative"]))
                target, other = (idx[lo], idx[hi]) if lower else (idx[hi], idx[lo])
                # Alternate which position holds the answer: "The first"/"The second" exactly balanced.
                first = n_pairs % 2 == 0
                n_pairs += 1
                add("comparative", attr, template, FIRST if first else SECOND,
                    [target, other] if first else [other, target])
    return out
