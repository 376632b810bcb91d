"""Training batches of similar token length that still mix instructions of every kind.

`LengthBucketSampler` draws a random permutation, cuts it into buckets of `bucket_batches` batches,
sorts each bucket by token length, cuts it into batches and shuffles the order of all batches. A
batch then pads only to the longest of a few neighbours in length, yet consecutive steps see every
paradigm and attribute (transformers' `LengthGroupedSampler` sorts buckets of 50 batches and walks
each from longest to shortest, so runs of steps see one paradigm only: two-graph comparative prompts
first, then judgments, then predictive questions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthBucketSampler(Sampler[int]):
    """Indices `(len(lengths),)` in batches of `batch_size` rows of similar `lengths`.

    Args:
        lengths: token count of each row.
        batch_size: rows per optimizer step (per device batch x gradient accumulation).
        bucket_batches: batches per length-sorted bucket (1: random batches; larger: less padding,
            less mixing).
        generator: the torch generator the Trainer seeds.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, bucket_batches: int = 4, generator=None):
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size and bucket_batches must be at least 1, got {batch_size} and {bucket_batches}.")
        if len(lengths) == 0:
            raise ValueError("No rows to sample: lengths is empty.")
        self.lengths = [int(n) for n in lengths]
        self.batch_size, self.bucket_batches, self.generator = batch_size, bucket_batches, generator

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        """This epoch's batches (a fresh draw each call)."""
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        bucket = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(order), bucket):
            rows = sorted(order[start : start + bucket], key=lambda i: self.lengths[i])
            batches += [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]  # the last bucket's remainder, kept last
        shuffled = [full[i] for i in torch.randperm(len(full), generator=self.generator).tolist()]
        return shuffled + partial

    def __iter__(self) -> Iterator[int]:
        return iter([i for batch in self.batches() for i in batch])
