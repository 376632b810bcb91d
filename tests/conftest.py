"""Shared fixtures: a tiny offline tokenizer and tiny FCN-LLM models (any backbone family)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from modeling_fcnllm import FCNEncoderConfig, FCNLLMConfig, FCNLLMForCausalLM
from modeling_fcnllm.configuration_fcnllm import numeral_tokens_of
from processing import FCNProcessor

NUM_ROIS = 12
NETWORKS = [0] * 4 + [1] * 5 + [2] * 3
_CORPUS = [
    "What is this subject's age? Does this subject have ADHD? Answer yes or no.",
    "Which of the two subjects is older, the first or the second? The first. The second.",
    "Yes No Female Male Right Left user assistant system Subject 1: Subject 2:",
] * 20


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here in milliseconds (about 320 tokens), with chat tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )


def tiny_encoder_config(**overrides) -> FCNEncoderConfig:
    kwargs = dict(
        num_rois=NUM_ROIS,
        network_assignment=NETWORKS,
        hidden_size=16,
        num_layers=2,
        num_attention_heads=2,
        num_roi_tokens=3,
        edge_density=0.3,
        dropout=0.0,
    )
    kwargs.update(overrides)
    return FCNEncoderConfig(**kwargs)


def tiny_text_config(family: str, vocab_size: int):
    if family == "llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        )
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256)
    if family == "qwen2":
        return Qwen2Config(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        )
    raise ValueError(family)


TINY_HEADS = [
    {"key": "adhd", "kind": "binary", "num_outputs": 1},
    {"key": "sex", "kind": "categorical", "num_outputs": 2},
    {"key": "age", "kind": "continuous", "num_outputs": 1},
]


def make_tiny_model(
    tokenizer,
    family: str = "llama",
    seed: int = 0,
    live_conditioning: bool = False,
    attribute_evidence: bool = False,
    evidence_paradigms: list[str] | None = None,
    **encoder_overrides,
) -> FCNLLMForCausalLM:
    """A random tiny FCN-LLM whose vocabulary matches `tokenizer` (which must hold `<graph>`).

    `live_conditioning`: give the (zero-initialised) instruction conditioning random weights, as after
    training, so tests see whether a code path lets it read the question (and never the answer).
    `attribute_evidence`: add `TINY_HEADS` and let the conditioning read their outputs (one readout per
    paradigm of `evidence_paradigms`).
    """
    torch.manual_seed(seed)
    config = FCNLLMConfig(
        text_config=tiny_text_config(family, len(tokenizer)),
        encoder_config=tiny_encoder_config(**encoder_overrides),
        graph_token_id=tokenizer.convert_tokens_to_ids("<graph>"),
        **(dict(auxiliary_heads=TINY_HEADS, auxiliary_loss_weight=0.5, instruction_evidence="attributes",
                evidence_paradigms=evidence_paradigms) if attribute_evidence else {}),
    )
    model = FCNLLMForCausalLM(config).eval()
    if live_conditioning:
        conditioning = model.model.instruction_conditioning
        with torch.no_grad():
            if hasattr(conditioning, "query"):
                conditioning.query.normal_()
            conditioning.out.weight.normal_(std=0.5)
    return model


def make_number_reading_model(processor, heads=None):
    """A tiny attribute-evidence model that reads numbers with `processor`'s tokenizer, calibrated on 6 FCNs."""
    torch.manual_seed(0)
    heads = heads or [dict(h, **({"mean": 40.0, "std": 20.0} if h["kind"] == "continuous" else {})) for h in TINY_HEADS]
    config = FCNLLMConfig(
        text_config=tiny_text_config("llama", len(processor.tokenizer)), encoder_config=tiny_encoder_config(),
        graph_token_id=processor.graph_token_id, auxiliary_heads=heads, auxiliary_loss_weight=0.5,
        instruction_evidence="attributes", numeral_tokens=numeral_tokens_of(processor.tokenizer),
    )
    model = FCNLLMForCausalLM(config).eval()
    with torch.no_grad():
        model.model.instruction_conditioning.out.weight.normal_(std=0.5)
        encoded = model.model.get_graph_features(torch.from_numpy(np.stack(processor.prepare_fcns(random_fcns(6)))))[1]
        model.model.instruction_conditioning.calibrate(model.model.get_attribute_outputs(encoded))
    return model


def random_fcns(num: int, num_rois: int = NUM_ROIS, seed: int = 0) -> np.ndarray:
    """`num` real correlation matrices `(num, N, N)` from random time series."""
    rng = np.random.default_rng(seed)
    series = rng.normal(size=(num, 40, num_rois)) + rng.normal(size=(num, 40, 1))
    return np.stack([np.corrcoef(s.T) for s in series]).astype(np.float32)


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def processor(tokenizer):
    proc = FCNProcessor(tokenizer)  # adds <graph>
    model = make_tiny_model(proc.tokenizer)
    return FCNProcessor.from_model_config(proc.tokenizer, model.config)


@pytest.fixture
def model(processor):
    return make_tiny_model(processor.tokenizer)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP barriers stall
    two contended threads (~100x slower steps); every test runs on one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
