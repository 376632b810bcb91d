"""Controls that show where FCN-LLM's answers come from.

- `fcn_llm_shuffled`: the same questions, each subject's FCN replaced by another evaluated subject's
  from the same site: answers that come from the FC fall to chance, answers that come from the
  question's text (or the site) do not.
- `text_only`: the same questions with no graph at all (`<graph>` placeholders removed): the LLM's
  prior given the text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fcn_llm.questions import Question


def shuffled_partners(subjects: pd.DataFrame, rows: Sequence[int], seed: int = 0) -> dict[str, str]:
    """Each subject of `rows` -> another subject of `rows`, from the same site where the site has two or
    more of them (else the same dataset, else any): a derangement within each such group."""
    table = subjects.iloc[np.asarray(rows, dtype=np.int64)]
    if len(table) < 2:
        raise ValueError(f"A shuffled-FCN control needs at least two evaluated subjects, got {len(table)}.")
    rng = np.random.default_rng(seed)
    partners: dict[str, str] = {}
    leftovers: list[str] = []
    for _, group in table.groupby(["dataset", "site"], sort=True):
        ids = list(group["subject_id"])
        if len(ids) < 2:
            leftovers.extend(ids)
            continue
        partners.update(_derangement(ids, rng))
    if leftovers:  # single-subject sites: swap among themselves, or with anyone when alone
        pool = leftovers if len(leftovers) > 1 else list(table["subject_id"])
        shuffled = _derangement(pool, rng)
        partners.update({sid: shuffled[sid] for sid in leftovers})
    return partners


def _derangement(ids: list[str], rng: np.random.Generator) -> dict[str, str]:
    """A random cyclic shift of a shuffled order: nobody keeps their own id."""
    order = [ids[i] for i in rng.permutation(len(ids))]
    return {sid: order[(i + 1) % len(order)] for i, sid in enumerate(order)}


def without_graphs(question: Question, graph_token: str) -> Question:
    """`question` with every `graph_token` placeholder (and the line break after it) removed from its
    messages, and no subjects: the text the LLM is asked when it sees no FCN."""
    pattern = re.compile(re.escape(graph_token) + r"[ \t]*\n?")
    messages = [{**m, "content": pattern.sub("", m["content"])} if isinstance(m.get("content"), str) else m
                for m in question.messages]
    return dataclasses.replace(question, messages=messages, subject_ids=())
