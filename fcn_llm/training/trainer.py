"""The HF `Trainer` with FCN-LLM's length-bucketed training batches."""

from __future__ import annotations

import torch
from transformers import Trainer

from .sampling import LengthBucketSampler


class FCNTrainer(Trainer):
    """`Trainer` whose `group_by_length` sampling is `LengthBucketSampler` (batches of similar token
    length, in random order, so consecutive steps mix paradigms); `args.length_bucket_batches` sets
    the bucket size in batches. Other sampling strategies are the Trainer's own."""

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        column = self.args.length_column_name
        if self.args.train_sampling_strategy != "group_by_length" or column not in getattr(dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator()
        generator.manual_seed(self.args.data_seed if self.args.data_seed is not None else self.args.seed)
        return LengthBucketSampler(
            dataset[column], self.args.train_batch_size * self.args.gradient_accumulation_steps,
            bucket_batches=getattr(self.args, "length_bucket_batches", 8), generator=generator,
        )
