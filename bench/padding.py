"""Padding: the share of batch tokens that are padding, in training batches (random, train.py's default,
vs length-bucketed, `training.sampling.LengthBucketSampler`, its `group_by_length`) and in zero-shot scoring batches
(questions in order vs sorted by token length, as `evaluation.scoring` batches them)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from fcn_llm.questions import Question
from fcn_llm.scoring import length_sorted_batches
from fcn_llm.training.collator import FCNInstructionCollator
from fcn_llm.training.sampling import LengthBucketSampler

from .setup import BenchData, Setup


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Padding tokens / all tokens when each batch (indices into `lengths`) pads to its longest row."""
    lengths = np.asarray(lengths)
    total = sum(len(b) * lengths[list(b)].max() for b in batches)
    real = sum(lengths[list(b)].sum() for b in batches)
    return float(1 - real / total)


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def train_padding(setup: Setup, data: BenchData, batch_size: int = 8, rows: int = 2000, seed: int = 0,
                  bucket_batches: int = 8) -> dict:
    """Padding fraction of `rows` training instructions in random batches (train.py's default) and in
    length-bucketed ones (`--train_sampling_strategy group_by_length`, default `length_bucket_batches`)."""
    pool = data.rows["train"]
    picked = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[:rows]]
    collator = FCNInstructionCollator(setup.processor, data.lookup)
    lengths = [collator.token_length(row) for row in picked]
    generator = torch.Generator().manual_seed(seed)
    random_order = torch.randperm(len(lengths), generator=generator).tolist()
    bucketed = LengthBucketSampler(lengths, batch_size, bucket_batches=bucket_batches, generator=generator).batches()
    return {"rows": len(lengths), "batch_size": batch_size, "bucket_batches": bucket_batches,
            "tokens_per_row": float(np.mean(lengths)),
            "random": padding_fraction(lengths, _chunks(random_order, batch_size)),
            "group_by_length": padding_fraction(lengths, bucketed)}


def eval_padding(setup: Setup, questions: Sequence[Question], batch_size: int = 8) -> dict:
    """Padding fraction of the scoring batches (questions grouped by choices as `answer_questions`
    does), in question order and sorted by token length."""
    processor = setup.processor
    groups: dict[tuple, list[Question]] = defaultdict(list)
    for q in questions:
        groups[(q.target, q.choices)].append(q)
    lengths: list[int] = []
    in_order: list[list[int]] = []
    sorted_batches: list[list[int]] = []
    for group in groups.values():
        prompts = [processor.apply_chat_template(q.messages, add_generation_prompt=True, tokenize=False) for q in group]
        offset = len(lengths)
        lengths += [len(ids) for ids in processor.tokenizer([processor.expand_graphs(p) for p in prompts])["input_ids"]]
        in_order += [[offset + i for i in b] for b in _chunks(range(len(group)), batch_size)]
        sorted_batches += [[offset + i for i in b] for b in length_sorted_batches(processor, prompts, batch_size)]
    return {"questions": len(lengths), "batch_size": batch_size, "in_order": padding_fraction(lengths, in_order),
            "length_sorted": padding_fraction(lengths, sorted_batches)}
