"""Instruction records from subjects' attributes: the three paradigms, as chat messages.

- predictive: "<graph>\nWhat is this subject's age?" -> "34";
- judgment: "<graph>\nIs this subject older than 30 years? Answer yes or no." -> "Yes";
- comparative: "Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two subjects is older, the first
  or the second?" -> "The first" (pairs from the same split and dataset; answers balanced exactly).

The questions come from the question bank (`question_bank.py`: frames x attribute terms x answer
instructions, with negated and reversed forms); each record says which form it is and what it asks
(`template_id`, `held_out`, `threshold`, `asked_class`, `negated`, `direction`). The `train` split
uses training forms only, `validation` held-out forms only, and `zero_shot` both: each subject's
questions (and each comparative pair) once from the training forms and, as extra rows, once from the
held-out forms (`SPLIT_POOLS`; other split names get both). Continuous judgments in `train` never name a
held-out threshold (a fixed fifth of each attribute's values); the other splits name any.

Missing values are skipped and counted (per split and attribute), never invented.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from datasets_scripts.attributes import Attribute, AttributeRegistry
from datasets_scripts.question_bank import POOLS, SPLIT_POOLS, Form, QuestionBank, compose, load_bank, threshold_span

GRAPH_TOKEN = "<graph>"
TRAIN_SPLIT = "train"  # its continuous judgments never name a held-out threshold (`threshold_held_out`)
# a comparison is answered "First" or "Second": the answers differ in their first token, where the model reads its evidence
FIRST, SECOND = "First", "Second"
FORM_COLUMNS = ("template_id", "held_out", "threshold", "asked_class", "negated", "direction")


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


def _pairs(attr: Attribute, ids: np.ndarray, values: np.ndarray, rng: np.random.Generator,
           rounds: int = 1) -> tuple[list, int]:
    """Pairs (higher_index, lower_index) for comparative questions (binary: (has the condition, has not)),
    from `rounds` random matchings (each subject in at most one pair per round, no pair twice), and the
    number of ties skipped."""
    pairs, seen, ties = [], set(), 0
    for _ in range(rounds):
        if attr.kind == "binary":
            pos, neg = rng.permutation(np.flatnonzero(values == 1)), rng.permutation(np.flatnonzero(values == 0))
            matched = list(zip(pos, neg))  # zip stops at the shorter side
        else:
            order = rng.permutation(len(ids))
            matched = []
            for a, b in zip(order[0::2], order[1::2]):
                if values[a] == values[b]:
                    ties += 1
                    continue
                matched.append((a, b) if values[a] > values[b] else (b, a))
        for pair in matched:
            if frozenset(pair) not in seen:
                seen.add(frozenset(pair))
                pairs.append(pair)
    return pairs, ties


def _form_columns(form: Form, threshold: float | None = None, asked_class: str | None = None) -> dict:
    return {"template_id": form.template_id, "held_out": form.held_out,
            "threshold": None if threshold is None else float(threshold), "asked_class": asked_class,
            "negated": form.negated, "direction": int(form.direction)}


def build_instruction_set(meta: pd.DataFrame, split: str, registry: AttributeRegistry,
                          rng: np.random.Generator, comparative_per_subject: float = 0.5,
                          bank: QuestionBank | None = None, pools: Sequence[str] | None = None) -> InstructionSet:
    """All instructions of one split.

    Args:
        meta: the split's subjects (`subject_id`, `dataset`, `site` and attribute columns named by
            registry keys; missing = NaN/None).
        comparative_per_subject: comparative pairs per attribute, as a fraction of its subjects (above 0.5,
            each subject is in several pairs: one per random matching).
        bank: the question bank (default: the bundled one).
        pools: which forms to ask with, each giving its own rows: ("train",), ("held_out",) or both;
            default `SPLIT_POOLS[split]` (both for other split names).
    """
    bank = bank or load_bank()
    pools = tuple(pools) if pools is not None else SPLIT_POOLS.get(split, POOLS)
    if not pools or set(pools) - set(POOLS):
        raise ValueError(f"pools must be a non-empty selection of {POOLS}; got {pools!r}.")
    out = InstructionSet()
    attrs = [c for c in meta.columns if c not in ("subject_id", "dataset", "site", "atlas", "num_rois")]
    registry.select(attrs)  # unknown columns raise, naming the allowed keys
    counter = 0

    def add(paradigm, attr, question, answer, rows, columns):
        nonlocal counter
        sites = list(dict.fromkeys(meta["site"].iloc[r] for r in rows))
        out.records.append({
            "id": f"{split}-{counter:07d}",
            "messages": _message(question, answer, len(rows)),
            "subject_ids": [str(meta["subject_id"].iloc[r]) for r in rows],
            "paradigm": paradigm, "attribute": attr.key, "answer": answer,
            "dataset": str(meta["dataset"].iloc[rows[0]]), "site": "|".join(map(str, sites)),
            **columns,
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
        forms = {(p, pool): bank.pool(attr, p, pool) for p in attr.paradigms() for pool in pools}
        values = column.iloc[rows].to_numpy()
        span = threshold_span(attr, values.astype(float)) if attr.kind == "continuous" else None
        for r, value in zip(rows, values):
            for paradigm in ("predictive", "judgment"):
                for pool in pools:
                    if (paradigm, pool) not in forms:
                        continue
                    composed = compose(attr, forms[paradigm, pool].draw(rng), value, rng, span,
                                       named_in_train=split == TRAIN_SPLIT)
                    add(paradigm, attr, composed.question, composed.answer, [r],
                        _form_columns(composed.form, composed.threshold, composed.asked_class))
        if attr.kind == "categorical" or "comparative" not in attr.paradigms():
            continue
        n_pairs = Counter()  # per pool: alternate which position holds the answer (exactly balanced)
        for _, group in pd.Series(rows).groupby(meta["dataset"].iloc[rows].to_numpy()):
            idx = group.to_numpy()
            vals = column.iloc[idx].to_numpy().astype(float)
            pairs, ties = _pairs(attr, idx, vals, rng, rounds=max(1, math.ceil(2 * comparative_per_subject)))
            out.skipped_ties[key] += ties
            keep = int(round(comparative_per_subject * len(idx)))
            for hi, lo in pairs[:keep]:
                for pool in pools:
                    form = forms["comparative", pool].draw(rng)
                    target, other = (idx[hi], idx[lo]) if form.direction > 0 else (idx[lo], idx[hi])
                    first = n_pairs[pool] % 2 == 0
                    n_pairs[pool] += 1
                    add("comparative", attr, form.text(attr), FIRST if first else SECOND,
                        [target, other] if first else [other, target], _form_columns(form))
    return out
