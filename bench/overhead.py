"""Item 1: one training step of FCN-LLM vs the bare backbone on the same tokens, stages 1 and 2.

The bare LLM gets the same `input_ids` with every `<graph>` token replaced by a word (graph tokens
count as tokens), the same mask and labels. Stage 1 (`train.freeze_for_stage(model, "align")`): FCN-LLM
trains encoder + projector through the frozen LLM; its bare counterpart is the frozen LLM
back-propagating to its input embeddings (what any alignment of a frozen LLM pays). Stage 2: every
weight trains, AdamW steps on both. The encoder + projector alone (forward + backward) is timed in
the same rounds, to show where the difference goes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping

import torch

from fcn_llm.cli.train import freeze_for_stage

from .setup import Setup, bare_batch
from .timing import interleaved, paired_ratio

STAGES = {"stage1": "align", "stage2": "joint"}


def training_step(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], lr: float = 1e-6) -> Callable[[], float]:
    """One AdamW step of `model` on `batch` (its trainable parameters only); returns the loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr) if params else None

    def step() -> float:
        loss = model(**batch).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def frozen_input_step(lm: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> Callable[[], float]:
    """Forward + backward of a frozen LLM down to its input embeddings (stage 1's unavoidable cost)."""
    embed = lm.get_input_embeddings()

    def step() -> float:
        inputs = embed(batch["input_ids"]).detach().requires_grad_(True)
        loss = lm(inputs_embeds=inputs, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        return float(loss.detach())

    return step


def encoder_step(setup: Setup, batch: Mapping[str, torch.Tensor]) -> Callable[[], None]:
    """Forward + backward of the graph encoder and projector alone on the batch's FCNs."""

    def step() -> None:
        features, _ = setup.model.model.get_graph_features(batch["graph_values"])
        features.float().square().mean().backward()
        setup.model.zero_grad(set_to_none=True)

    return step


def batch_stats(setup: Setup, batch: Mapping[str, torch.Tensor]) -> dict:
    ids = batch["input_ids"]
    return {"size": int(ids.shape[0]), "padded_length": int(ids.shape[1]),
            "tokens": int(batch["attention_mask"].sum()),
            "graph_tokens": int((ids == setup.model.config.graph_token_id).sum()),
            "graphs": int(batch["graph_values"].shape[0])}


def step_overhead(setup: Setup, batch: Mapping[str, torch.Tensor], repeats: int = 5, warmup: int = 1) -> dict:
    """Step times (ms) of FCN-LLM and the bare LLM and their ratio, per stage, on one batch."""
    model, bare = setup.model, setup.bare
    plain = bare_batch(setup, batch)
    out: dict = {"backbone": setup.name, "batch": batch_stats(setup, batch),
                 "parameters_m": {"fcn_llm": sum(p.numel() for p in model.parameters()) / 1e6,
                                  "bare_llm": sum(p.numel() for p in bare.parameters()) / 1e6}}
    model.train()
    bare.train()
    try:
        for label, stage in STAGES.items():
            freeze_for_stage(model, stage, freeze_encoder=False)
            if stage == "align":
                bare.requires_grad_(False)
                bare_fn = frozen_input_step(bare, plain)
            else:
                bare.requires_grad_(True)
                bare_fn = training_step(bare, plain)
            fns = {"fcn_llm": training_step(model, batch), "bare_llm": bare_fn, "encoder": encoder_step(setup, batch)}
            times = interleaved(fns, repeats=repeats, warmup=warmup)
            fcn, plain_ms = times["fcn_llm"].median, times["bare_llm"].median
            out[label] = {name: t.as_dict() for name, t in times.items()}
            # median of the per-round ratios: each round's two steps ran back to back (drift cancels)
            out[label]["ratio"] = paired_ratio(times["fcn_llm"], times["bare_llm"])
            out[label]["ratio_of_medians"] = fcn / plain_ms
            out[label]["encoder_share"] = times["encoder"].median / fcn
            del fns, bare_fn
            gc.collect()
    finally:
        model.requires_grad_(True)
        bare.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        bare.zero_grad(set_to_none=True)
        model.eval()
        bare.eval()
    return out
