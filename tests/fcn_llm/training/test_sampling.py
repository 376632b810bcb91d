"""Length-bucketed batches: every row once, less padding than random batches, paradigms still mixed."""

import types

import datasets
import numpy as np
import pytest
import torch

from fcn_llm.training.sampling import LengthBucketSampler
from fcn_llm.training.trainer import FCNTrainer

# judgments/predictive (35-50 tokens) and comparatives (70-79), as on the demo data
LENGTHS = list(np.random.default_rng(0).integers(35, 51, 500)) + list(np.random.default_rng(1).integers(70, 80, 100))


def _padding(lengths, batches):
    lengths = np.asarray(lengths)
    return 1 - sum(lengths[b].sum() for b in batches) / sum(len(b) * lengths[b].max() for b in batches)


def test_every_row_once_in_full_batches_of_similar_length():
    sampler = LengthBucketSampler(LENGTHS, batch_size=8, bucket_batches=8, generator=torch.Generator().manual_seed(0))
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert sorted(sampler) == list(range(len(LENGTHS)))  # a fresh epoch: again every row once
    random = LengthBucketSampler(LENGTHS, batch_size=8, bucket_batches=1, generator=torch.Generator().manual_seed(0))
    assert _padding(LENGTHS, batches) < 0.10 < _padding(LENGTHS, random.batches())


def test_batch_order_is_shuffled_not_swept_from_long_to_short():
    batches = LengthBucketSampler(LENGTHS, batch_size=8, bucket_batches=8,
                                  generator=torch.Generator().manual_seed(0)).batches()
    longest = [max(LENGTHS[i] for i in b) for b in batches]
    long_batches = [k for k, n in enumerate(longest) if n >= 70]  # batches holding a comparative
    assert len(long_batches) > 5
    assert np.mean(np.diff(long_batches) == 1) < 0.5  # not one run of comparatives after another


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="bucket_batches"):
        LengthBucketSampler(LENGTHS, batch_size=8, bucket_batches=0)
    with pytest.raises(ValueError, match="empty"):
        LengthBucketSampler([], batch_size=8)


def test_trainer_uses_the_bucket_sampler_on_the_length_column():
    args = types.SimpleNamespace(train_sampling_strategy="group_by_length", length_column_name="length", seed=0,
                                 data_seed=None, train_batch_size=4, gradient_accumulation_steps=2,
                                 length_bucket_batches=3)
    trainer = types.SimpleNamespace(args=args, train_dataset=datasets.Dataset.from_dict({"length": LENGTHS[:50]}))
    sampler = FCNTrainer._get_train_sampler(trainer)
    assert isinstance(sampler, LengthBucketSampler)
    assert sampler.batch_size == 8 and sampler.bucket_batches == 3 and len(sampler) == 50
