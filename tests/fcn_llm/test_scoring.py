"""Choice log-likelihoods equal a manual computation with the model's forward; one prefill per prompt."""

import numpy as np
import pytest
import torch

from fcn_llm.scoring import (
    choice_log_likelihoods,
    generate_answers,
    length_sorted_batches,
    parse_number,
)
from processing import FCNProcessor
from tests.conftest import make_tiny_model, random_fcns

QUESTIONS = [
    "<graph>\nDoes this subject have ADHD? Answer yes or no.",
    "<graph>\nWhat is this subject's sex?",
    "<graph>\n<graph>\nWhich of the two subjects is older, the first or the second?",
]


def _setup(tokenizer, family, attribute_evidence=False):
    processor = FCNProcessor(tokenizer)
    model = make_tiny_model(processor.tokenizer, family=family, live_conditioning=True,  # must never read answers
                            attribute_evidence=attribute_evidence)
    processor = FCNProcessor.from_model_config(processor.tokenizer, model.config)
    prompts = [processor.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
               for q in QUESTIONS]
    f = random_fcns(4)
    return model, processor, prompts, [[f[0]], [f[1]], [f[2], f[3]]]


@torch.no_grad()
def _manual(model, processor, prompt, fcns, answer):
    """Sum of log P(answer tokens) from one full forward of prompt + answer (no cache, no batching);
    instruction conditioning reads the prompt only."""
    full = processor(text=prompt + answer, fcns=fcns)
    start = processor(text=prompt, fcns=fcns)["input_ids"].shape[1]
    prompt_only = torch.arange(full["input_ids"].shape[1])[None] < start
    logp = torch.log_softmax(model(**full, instruction_mask=prompt_only).logits[0].float(), -1)
    ids = full["input_ids"][0]
    return float(sum(logp[j - 1, ids[j]] for j in range(start, len(ids))))


@pytest.mark.parametrize("single_pass", [True, False])
@pytest.mark.parametrize("family,attribute_evidence", [("llama", False), ("gpt2", False), ("llama", True)])
def test_choice_log_likelihoods_match_manual_forward(tokenizer, family, attribute_evidence, single_pass):
    """Both paths: choices as masked branches of one forward, and prefill + cached continuation."""
    model, processor, prompts, fcns = _setup(tokenizer, family, attribute_evidence)
    choices = ["Yes", "No", "The second", "Ambidextrous"]  # single- and multi-token answers
    scores = choice_log_likelihoods(model, processor, prompts, fcns, choices, batch_size=2, single_pass=single_pass)
    assert scores.shape == (3, 4)
    eot = processor.end_of_turn
    assert eot == "<|im_end|>"
    manual = np.array([[_manual(model, processor, p, f, c + eot) for c in choices] for p, f in zip(prompts, fcns)])
    np.testing.assert_allclose(scores, manual, atol=1e-4)


@pytest.mark.parametrize("single_pass", [True, False])
def test_without_end_of_turn_scores_the_answer_alone(tokenizer, single_pass):
    model, processor, prompts, fcns = _setup(tokenizer, "llama")
    scores = choice_log_likelihoods(model, processor, prompts[:1], fcns[:1], ["Yes", "No"], append_end_of_turn=False,
                                    single_pass=single_pass)
    manual = [_manual(model, processor, prompts[0], fcns[0], c) for c in ("Yes", "No")]
    np.testing.assert_allclose(scores[0], manual, atol=1e-4)


def test_one_prefill_per_prompt_batch(tokenizer):
    """Graphs are encoded once per batch of prompts, not once per choice."""
    model, processor, prompts, fcns = _setup(tokenizer, "llama")
    calls = []
    handle = model.model.graph_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    choice_log_likelihoods(model, processor, prompts, fcns, ["Yes", "No", "Ambidextrous"], batch_size=8)
    handle.remove()
    assert calls == [4]  # one encoder call over the 4 FCNs of the 3 prompts


def test_generate_answers_returns_text(tokenizer):
    model, processor, prompts, fcns = _setup(tokenizer, "llama")
    answers = generate_answers(model, processor, prompts, fcns, batch_size=2, max_new_tokens=3)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


@pytest.mark.parametrize("text,value", [("34", 34.0), (" about 23.5 years", 23.5), ("-2", -2.0),
                                        ("1,200", 1200.0), ("no idea", None), ("", None)])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_length_sorted_batches_pad_little_and_cover_every_prompt(tokenizer):
    _, processor, prompts, _ = _setup(tokenizer, "llama")
    prompts = [prompts[2], prompts[1], prompts[0], prompts[1], prompts[2], prompts[0]]  # long, short, mid mixed
    batches = length_sorted_batches(processor, prompts, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(len(prompts)))
    lengths = [processor(text=p, fcns=[random_fcns(1)[0]] * p.count("<graph>"))["input_ids"].shape[1] for p in prompts]
    assert all(lengths[b[0]] == lengths[b[-1]] for b in batches)  # pairs of equal prompts share a batch
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches(processor, prompts, batch_size=0)


def test_generate_answers_keep_the_prompts_order(tokenizer):
    model, processor, prompts, fcns = _setup(tokenizer, "llama")
    together = generate_answers(model, processor, prompts, fcns, batch_size=3, max_new_tokens=3)
    alone = [generate_answers(model, processor, [p], [f], batch_size=1, max_new_tokens=3)[0] for p, f in zip(prompts, fcns)]
    assert together == alone


def test_every_scoring_and_generation_batch_re_reads_the_free_cores(tokenizer, monkeypatch):
    import fcn_llm.scoring as scoring

    model, processor, prompts, fcns = _setup(tokenizer, "llama")
    calls = []
    monkeypatch.setattr(scoring, "rebalance", lambda: calls.append(1) or 1)
    choice_log_likelihoods(model, processor, prompts, fcns, ["Yes", "No"], batch_size=1)
    assert len(calls) == len(prompts)
    generate_answers(model, processor, prompts, fcns, batch_size=2, max_new_tokens=2)
    assert len(calls) == len(prompts) + -(-len(prompts) // 2)
