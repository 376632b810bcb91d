"""Tiny setups for the benchmark suite's tests: a 12-ROI encoder, a 2-layer Llama, a handful of rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from bench.setup import BenchData, wrap
from tests.conftest import make_tokenizer, random_fcns, tiny_encoder_config, tiny_text_config

JUDGMENT = "<graph>\nDoes this subject have ADHD? Answer yes or no."
PREDICTIVE = "<graph>\nWhat is this subject's sex?"
COMPARATIVE = "Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two subjects is older, the first or the second?"


def tiny_setup(seed: int = 0, **encoder_overrides):
    """A tiny FCN-LLM next to its bare 2-layer Llama (same weights and vocabulary)."""
    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(tiny_text_config("llama", len(tokenizer) + 1))
    return wrap("tiny", lm, tokenizer, tiny_encoder_config(**encoder_overrides))


def _row(i: int, paradigm: str, question: str, subjects: list[str], answer: str, attribute: str) -> dict:
    return {"id": f"r{i}", "paradigm": paradigm, "attribute": attribute, "subject_ids": subjects, "answer": answer,
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def tiny_data(subjects: int = 16, seed: int = 0) -> BenchData:
    """Rows of the three paradigms about `subjects` random FCNs; answers follow a planted edge."""
    fcns = random_fcns(subjects, seed=seed)
    ids = [f"s{i:03d}" for i in range(subjects)]
    lookup = {sid: torch.from_numpy(f) for sid, f in zip(ids, fcns)}
    signal = fcns[:, 0, 1]
    rows = []
    for i, sid in enumerate(ids):
        rows.append(_row(len(rows), "judgment", JUDGMENT, [sid], "Yes" if signal[i] > np.median(signal) else "No",
                         "adhd"))
        rows.append(_row(len(rows), "predictive", PREDICTIVE, [sid], "Male" if i % 2 else "Female", "sex"))
        j = (i + 1) % subjects
        rows.append(_row(len(rows), "comparative", COMPARATIVE, [sid, ids[j]],
                         "The first" if signal[i] > signal[j] else "The second", "age"))
    return BenchData(rows={"train": rows, "zero_shot": rows}, lookup=lookup, atlas="tiny")


@pytest.fixture
def setup():
    return tiny_setup()


@pytest.fixture
def data():
    return tiny_data()
