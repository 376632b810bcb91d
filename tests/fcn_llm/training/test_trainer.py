"""FCNTrainer's optimizer: the evidence token's parameters in their own groups at a multiple of the learning rate."""

import pytest
import torch
from transformers import TrainingArguments

from fcn_llm.training.trainer import FCNTrainer
from tests.conftest import make_tiny_model


def _trainer(tokenizer, tmp_path, **kwargs):
    model = make_tiny_model(tokenizer, attribute_evidence=True)
    model.language_model.requires_grad_(False)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, report_to="none",
                             use_cpu=True, optim="adamw_torch")
    return model, FCNTrainer(model=model, args=args, **kwargs)


def test_multiplied_parameters_get_their_own_groups(tokenizer, tmp_path):
    model, trainer = _trainer(tokenizer, tmp_path, lr_multipliers={"instruction_conditioning": 10.0})
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW) and trainer.optimizer is optimizer
    conditioning = {id(p) for p in model.model.instruction_conditioning.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(trainable)  # each trainable parameter once, frozen ones absent
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= conditioning or not ids & conditioning
        assert group["lr"] == pytest.approx(1e-2 if ids <= conditioning else 1e-3)
    decay = set(trainer.get_decay_parameter_names(model))
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        assert {names[id(p)] in decay for p in group["params"]} == {group["weight_decay"] == 0.1}
    settings = [(round(g["lr"], 9), g["weight_decay"]) for g in optimizer.param_groups]
    assert settings == [(1e-3, 0.1), (1e-3, 0.0), (1e-2, 0.1), (1e-2, 0.0)]  # one group per setting


def test_the_longest_matching_fragment_sets_the_multiplier(tokenizer, tmp_path):
    """The evidence's readout at 10x, its question maps (router, paradigm, turn, sign) at the base rate."""
    model, trainer = _trainer(tokenizer, tmp_path, lr_multipliers={
        "instruction_conditioning": 10.0, "instruction_conditioning.router": 1.0})
    optimizer = trainer.create_optimizer()
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    conditioning = model.model.instruction_conditioning
    assert rate[id(conditioning.router.weight)] == pytest.approx(1e-3)
    assert rate[id(conditioning.out.weight)] == pytest.approx(1e-2)


def test_scheduler_keeps_the_ratio(tokenizer, tmp_path):
    _, trainer = _trainer(tokenizer, tmp_path, lr_multipliers={"instruction_conditioning": 10.0})
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.optimizer.step()
    trainer.lr_scheduler.step()
    lrs = sorted({round(g["lr"], 12) for g in trainer.optimizer.param_groups})
    assert len(lrs) == 2 and lrs[1] == pytest.approx(10 * lrs[0])


def test_without_multipliers_the_trainer_builds_its_own(tokenizer, tmp_path):
    for multipliers in (None, {"instruction_conditioning": 1.0}):
        _, trainer = _trainer(tokenizer, tmp_path, lr_multipliers=multipliers)
        optimizer = trainer.create_optimizer()
        assert len(optimizer.param_groups) == 2  # the Trainer's decay / no-decay split
        assert {g["lr"] for g in optimizer.param_groups} == {1e-3}


def test_bad_multipliers_are_named(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="multiplier of 'instruction_conditioning' must be positive, got 0"):
        _trainer(tokenizer, tmp_path, lr_multipliers={"instruction_conditioning": 0.0})
    _, trainer = _trainer(tokenizer, tmp_path, lr_multipliers={"instruction_conditioning": 10.0})
    trainer.optimizer_cls_and_kwargs = (torch.optim.AdamW, {"lr": 1e-3, "params": []})  # as GaLore's kwargs
    with pytest.raises(ValueError, match="builds its own parameter groups"):
        trainer.create_optimizer()


def test_each_training_step_re_reads_the_free_cores_first(tokenizer, tmp_path, monkeypatch):
    from transformers import Trainer

    from fcn_llm.training import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "rebalance", lambda: calls.append("rebalance") or 1)
    monkeypatch.setattr(Trainer, "training_step", lambda self, *a, **kw: calls.append("step") or torch.tensor(0.0))
    model, trainer = _trainer(tokenizer, tmp_path)
    for _ in range(2):
        trainer.training_step(model, {})
    assert calls == ["rebalance", "step", "rebalance", "step"]


def test_gradient_accumulation_averages_the_micro_batch_losses(tokenizer, tmp_path):
    """The model's loss is a per-batch mean: with 2 accumulation steps each micro-batch counts half."""
    from processing import FCNProcessor
    from tests.conftest import random_fcns

    tokenizer = FCNProcessor(tokenizer).tokenizer  # with <graph>
    model, trainer = _trainer(tokenizer, tmp_path)
    assert trainer.model_accepts_loss_kwargs is False
    processor = FCNProcessor.from_model_config(tokenizer, model.config)
    batch = dict(processor(text=["<graph> Is this subject older than 30?"], fcns=random_fcns(1), answers=["Yes"]))
    model.train()
    torch.manual_seed(0)
    expected = model(**batch).loss.item()
    trainer.current_gradient_accumulation_steps = 2
    torch.manual_seed(0)
    step_loss = trainer.training_step(model, dict(batch), num_items_in_batch=torch.tensor(3))
    assert step_loss.item() == pytest.approx(expected / 2, rel=1e-5)
