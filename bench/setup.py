"""What the sections share: the bench's instruction set, FCN-LLMs next to their bare backbones, batches."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from datasets_scripts.graph_lookup import GraphLookup
from datasets_scripts.loading import load_instruction_set
from modeling_fcnllm import FCNEncoderConfig, FCNLLMForCausalLM
from processing import FCNProcessor, load_atlas
from fcn_llm.training.collator import FCNInstructionCollator

DEFAULT_ATLAS = "schaefer100-7"
LLAVA_IMAGE_TOKENS = 576  # LLaVA-1.5: 24 x 24 CLIP ViT-L/14 patches at 336 px


@dataclass
class BenchData:
    """An instruction set: rows per split and the subjects' FCNs."""

    rows: dict[str, list[dict]]
    lookup: GraphLookup | Mapping[str, torch.Tensor]
    atlas: str
    datasets: dict | None = None  # split -> `datasets.Dataset` (what the Trainer's loader reads), if any


@dataclass
class Setup:
    """An FCN-LLM and its backbone alone (the same weights and vocabulary, `<graph>` row included)."""

    name: str
    model: FCNLLMForCausalLM
    processor: FCNProcessor
    bare: PreTrainedModel

    @property
    def filler_id(self) -> int:
        """A word's token id that stands in for `<graph>` tokens in the bare LLM's input."""
        return int(self.processor.tokenizer(" brain", add_special_tokens=False)["input_ids"][0])


def build_dataset(out_dir: str | Path, subjects: int = 300, atlas: str = DEFAULT_ATLAS, seed: int = 0) -> Path:
    """Build a small simulated instruction set with `datasets_scripts/build_instructions.py` (seconds)."""
    from datasets_scripts import build_instructions

    with contextlib.redirect_stdout(io.StringIO()):
        build_instructions.main(["--out", str(out_dir), "--subjects", str(subjects), "--atlas", atlas,
                                 "--seed", str(seed), "--check-train", "100"])
    return Path(out_dir)


def load_bench_data(folder: str | Path) -> BenchData:
    """Rows of every split and a `GraphLookup` of all subjects."""
    subjects, instructions = load_instruction_set(folder)
    split = next(iter(subjects.values()))
    return BenchData(rows={name: part.to_list() for name, part in instructions.items()},
                     lookup=GraphLookup.from_dataset(subjects), atlas=split[0]["atlas"], datasets=dict(instructions))


def encoder_config(atlas: str = DEFAULT_ATLAS, **overrides) -> FCNEncoderConfig:
    """The default encoder (train.py's defaults) for a bundled atlas."""
    spec = load_atlas(atlas)
    kwargs = dict(num_rois=spec.num_rois, network_assignment=spec.network_assignment, network_names=spec.network_names)
    kwargs.update(overrides)
    return FCNEncoderConfig(**kwargs)


def default_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (the default backbone's)."""
    from modeling_fcnllm.backbone import default_backbone_dir

    return AutoTokenizer.from_pretrained(default_backbone_dir())


def backbone_lm(kind: str, vocab_size: int) -> PreTrainedModel:
    """``"default"``: SmolLM2-135M-Instruct (135 M parameters); ``"tiny"``: a random 2-layer Llama of
    width 64 with the same vocabulary (~3 M parameters, mostly embeddings)."""
    if kind == "default":
        from modeling_fcnllm.backbone import default_backbone_dir

        return AutoModelForCausalLM.from_pretrained(default_backbone_dir())
    if kind == "tiny":
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=4096))
    raise ValueError(f"Unknown backbone kind {kind!r}; choose default or tiny.")


def wrap(name: str, lm: PreTrainedModel, tokenizer, config: FCNEncoderConfig) -> Setup:
    """FCN-LLM around `lm` (weights copied; `lm` gets the `<graph>` row too and stays the bare baseline)."""
    torch.manual_seed(0)
    model = FCNLLMForCausalLM.from_text_model(lm, config, tokenizer=tokenizer)
    processor = FCNProcessor.from_model_config(tokenizer, model.config)
    return Setup(name=name, model=model, processor=processor, bare=lm)


def sample_rows(rows: Sequence[dict], count: int, seed: int = 0, paradigms: Sequence[str] | None = None,
                longest_first: bool = False) -> list[dict]:
    """`count` rows drawn without replacement (seeded), optionally of some paradigms only.

    `longest_first` puts a comparative row (the longest prompts) first, so every prefix of the
    sample pads to the same length (memory at several batch sizes stays comparable).
    """
    pool = [r for r in rows if paradigms is None or r["paradigm"] in paradigms]
    if len(pool) < count:
        raise ValueError(f"Only {len(pool)} rows of paradigms {paradigms}, {count} wanted.")
    picked = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[:count]]
    if longest_first:
        picked.sort(key=lambda r: -len(r["subject_ids"]))
    return picked


def collate(setup: Setup, data: BenchData, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
    """A training batch of `rows` exactly as train.py's collator builds it."""
    return FCNInstructionCollator(setup.processor, data.lookup)(list(rows))


def bare_batch(setup: Setup, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tokens for the bare LLM: `<graph>` ids replaced by a word's id, no `graph_values`."""
    ids = batch["input_ids"].masked_fill(batch["input_ids"] == setup.model.config.graph_token_id, setup.filler_id)
    out = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
    if "labels" in batch:
        out["labels"] = batch["labels"]
    return out
