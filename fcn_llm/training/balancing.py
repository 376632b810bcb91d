"""Answer balancing for yes/no-style instructions: a frozen LLM otherwise learns the prior ("No").

Condition judgments follow prevalence (10-25 % "Yes" in the default data), so the cheapest way to
lower the loss is to always answer "No"; a small alignment budget never gets past that. Balancing
keeps, per (attribute, paradigm), as many instructions of each answer as the rarest answer has,
for every group with at most `max_answers` distinct answers (binary and categorical questions;
generated numbers are left alone).
"""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd


def balanced_indices(frame: pd.DataFrame, seed: int = 0, max_answers: int = 4) -> np.ndarray:
    """Sorted row indices of `frame` (columns attribute, paradigm, answer) with answers balanced per group."""
    missing = [c for c in ("attribute", "paradigm", "answer") if c not in frame.columns]
    if missing:
        raise ValueError(f"Cannot balance answers: the instructions lack column(s) {missing}.")
    rng = np.random.default_rng(seed)
    keep = []
    for _, group in frame.groupby(["attribute", "paradigm"], sort=True):
        counts = group["answer"].value_counts()
        if len(counts) > max_answers or len(counts) < 2:
            keep.append(group.index.to_numpy())
            continue
        smallest = int(counts.min())
        for _, rows in group.groupby("answer", sort=True):
            keep.append(rng.choice(rows.index.to_numpy(), size=smallest, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def balance_answers(split: datasets.Dataset, seed: int = 0, max_answers: int = 4) -> datasets.Dataset:
    """`split` restricted to answer-balanced rows (see `balanced_indices`)."""
    frame = split.select_columns(["attribute", "paradigm", "answer"]).to_pandas()
    return split.select(balanced_indices(frame, seed, max_answers).tolist())
