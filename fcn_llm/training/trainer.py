"""The HF `Trainer` with FCN-LLM's length-bucketed training batches, per-module learning rates, model card and
thread count re-read before each step (`fcn_llm.threads`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from transformers import Trainer
from transformers.trainer_optimizer import is_optimizer_factory

from fcn_llm.threads import rebalance

from .sampling import LengthBucketSampler

# optimizer kwargs with which `get_optimizer_cls_and_kwargs` replaces the parameter groups (GaLore, LOMO, layer-wise)
OWN_GROUPS = ("params", "model", "optimizer_dict")


class FCNTrainer(Trainer):
    """`Trainer` whose `group_by_length` sampling is `LengthBucketSampler` (batches of similar token
    length, in random order, so consecutive steps mix paradigms); `args.length_bucket_batches` sets
    the bucket size in batches. Other sampling strategies are the Trainer's own.

    `lr_multipliers` maps a parameter-name fragment to a learning-rate multiplier: `create_optimizer`
    builds the `--optim` optimizer (the Trainer's class and kwargs) with parameters whose name holds the
    fragment in their own groups at `multiplier x learning_rate` (the longest matching fragment wins, so
    `{"a": 10, "a.b": 1}` keeps `a.b` at the base rate), the Trainer's weight-decay split kept. Empty or
    all-1 multipliers: the Trainer's own optimizer.

    Before each training step the process's thread governor, where one is enabled (`fcn_llm.threads`), sets
    torch's thread count to the cores other processes leave free.

    `push_to_hub(model_card=card)` uploads `card` (a `huggingface_hub.ModelCard`) as the output folder's
    `README.md` instead of the Trainer's draft card.
    """

    def __init__(self, *args, lr_multipliers: Mapping[str, float] | None = None, **kwargs):
        multipliers = dict(lr_multipliers or {})
        for fragment, multiplier in multipliers.items():
            if not multiplier > 0:
                raise ValueError(f"The learning-rate multiplier of {fragment!r} must be positive, got {multiplier}.")
        self.lr_multipliers = {k: float(v) for k, v in multipliers.items()}
        super().__init__(*args, **kwargs)

    def training_step(self, *args, **kwargs) -> torch.Tensor:
        rebalance()
        return super().training_step(*args, **kwargs)

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

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is not None or all(m == 1.0 for m in self.lr_multipliers.values()):
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if is_optimizer_factory(optimizer_cls) or any(key in optimizer_kwargs for key in OWN_GROUPS):
            raise ValueError(
                f"--optim {self.args.optim} builds its own parameter groups, so the learning-rate multipliers "
                f"{self.lr_multipliers} cannot be applied; pick another --optim (e.g. adamw_torch) or set the "
                "multipliers to 1 (--evidence_lr_multiplier 1)."
            )
        self.optimizer = optimizer_cls(self.parameter_groups(opt_model), **optimizer_kwargs)
        return self.optimizer

    def parameter_groups(self, model: torch.nn.Module) -> list[dict]:
        """The trainable parameters in groups by (weight decay, learning-rate multiplier); empty groups dropped."""
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            fragment = max((f for f in self.lr_multipliers if f in name), key=len, default=None)
            multiplier = 1.0 if fragment is None else self.lr_multipliers[fragment]
            groups.setdefault((name in decay, multiplier), []).append(param)
        return [
            {"params": params, "weight_decay": self.args.weight_decay if decays else 0.0,
             "lr": self.args.learning_rate * multiplier}
            for (decays, multiplier), params in sorted(groups.items(), key=lambda item: (item[0][1], not item[0][0]))
        ]

    def create_model_card(self, model_card=None, **kwargs) -> None:
        if model_card is None:
            return super().create_model_card(**kwargs)
        if self.is_world_process_zero():
            model_card.save(os.path.join(self.args.output_dir, "README.md"))
