"""The evidence at the answer position (`evidence_position="answer"`): where it is added, and that the answer
words' logits move linearly with the asked head's output."""

import numpy as np
import pytest
import torch

from fcn_llm.scoring import choice_log_likelihoods
from modeling_fcnllm import FCNLLMConfig, FCNLLMForCausalLM
from modeling_fcnllm.configuration_fcnllm import numeral_tokens_of
from tests.conftest import TINY_HEADS, random_fcns, tiny_encoder_config, tiny_text_config

ADHD = "<graph>\nDoes this subject have ADHD? Answer yes or no."
COMPARE = "Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two subjects is older, the first or the second?"


def answer_model(processor, **overrides) -> FCNLLMForCausalLM:
    """A tiny attribute-evidence model that adds its evidence where the processor's chat template starts an answer,
    with random (trained-looking) evidence columns."""
    torch.manual_seed(0)
    settings = dict(auxiliary_heads=TINY_HEADS, auxiliary_loss_weight=0.5, instruction_evidence="attributes",
                    evidence_position="answer", answer_prefix_ids=processor.answer_prefix_ids)
    config = FCNLLMConfig(
        text_config=tiny_text_config("llama", len(processor.tokenizer)), encoder_config=tiny_encoder_config(),
        graph_token_id=processor.graph_token_id, **{**settings, **overrides},
    )
    model = FCNLLMForCausalLM(config).eval()
    with torch.no_grad():
        model.model.instruction_conditioning.out.weight.normal_(std=0.5)
    return model


def adhd_read_along_yes_no(model, processor, scale: float) -> tuple[int, int]:
    """Route every question to the ADHD head and write its column so that log P(Yes) - log P(No) moves by `scale`
    per unit of its standardised output; returns the ids of "Yes" and "No"."""
    conditioning = model.model.instruction_conditioning
    yes, no = (processor.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
    direction = model.lm_head.weight[yes] - model.lm_head.weight[no]
    with torch.no_grad():
        conditioning.router.weight.zero_()
        conditioning.router.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
        conditioning.out.weight.zero_()
        conditioning.out.weight[:, 0] = scale * direction / direction.pow(2).sum()
    return yes, no


def chat(processor, *questions: str) -> list[str]:
    return [processor.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions]


def test_config_bad_input():
    with pytest.raises(ValueError, match="'graph' or 'answer'"):
        FCNLLMConfig(evidence_position="logits")
    with pytest.raises(ValueError, match="needs instruction_evidence='attributes'"):
        FCNLLMConfig(evidence_position="answer")
    with pytest.raises(ValueError, match="answer_prefix_ids must be token ids"):
        FCNLLMConfig(answer_prefix_ids=["assistant"])
    with pytest.raises(ValueError, match="evidence_decides_answer needs evidence_position='answer'"):
        FCNLLMConfig(evidence_decides_answer=True)


def test_processor_names_the_assistant_prefix(processor):
    prefix = processor.answer_prefix_ids
    assert processor.tokenizer.decode(prefix) == "<|im_start|>assistant\n"
    prompt_ids = processor.tokenizer(chat(processor, "Is this subject older than 30?")[0])["input_ids"]
    assert prompt_ids[-len(prefix):] == prefix


def test_answer_positions(processor):
    model = answer_model(processor)
    prompts = chat(processor, ADHD, "<graph>\nHow old is this subject, in years?")
    batch = processor(text=prompts, fcns=random_fcns(2), padding=True, padding_side="left")
    starts = model.answer_positions(batch["input_ids"], batch["attention_mask"])
    assert starts.sum(1).tolist() == [1, 1] and starts[:, -1].all()  # where the prompt ends: the first answer token
    # no chat template: the last attended position (right padding), or the position before the first label
    raw = processor(text=[ADHD, "<graph>\nAge?"], fcns=random_fcns(2), padding=True, padding_side="right")
    starts = model.answer_positions(raw["input_ids"], raw["attention_mask"])
    assert starts.nonzero()[:, 1].tolist() == (raw["attention_mask"].sum(1) - 1).tolist()
    shift_labels = torch.full_like(raw["input_ids"], -100)
    shift_labels[:, 4:6] = 7
    assert model.answer_positions(raw["input_ids"], raw["attention_mask"], shift_labels).nonzero()[:, 1].tolist() == [4, 4]
    # a 4-D mask (scored branches) without the prefix: nowhere
    assert not model.answer_positions(raw["input_ids"], torch.zeros(2, 1, 3, 3)).any()


def test_graph_tokens_are_left_alone_and_only_the_answer_logits_move(processor):
    model = answer_model(processor)
    batch = processor(text=chat(processor, ADHD, COMPARE), fcns=random_fcns(3), padding=True, padding_side="left")
    out = model(**batch)
    plain, _ = model.model.get_graph_features(batch["graph_values"])
    torch.testing.assert_close(out.graph_hidden_states, plain)  # nothing added to the graph tokens
    assert out.answer_evidence.shape == (2, model.config.text_config.hidden_size)
    with torch.no_grad():
        model.model.instruction_conditioning.out.weight.zero_()
        model.model.instruction_conditioning.out.bias.zero_()
    without = model(**batch)
    moved = (out.logits - without.logits).abs().amax(-1)  # (B, L)
    assert (moved[:, -1] > 1e-4).all() and (moved[:, :-1] < 1e-5).all()
    expected = model.lm_head(out.answer_evidence)
    torch.testing.assert_close(out.logits[:, -1] - without.logits[:, -1], expected, atol=1e-4, rtol=1e-4)


def test_the_answer_margin_is_linear_in_the_asked_heads_output(processor):
    """With the ADHD column along unit(u_Yes - u_No) and the router sure of ADHD, log P(Yes) - log P(No) moves by
    the column's scale times the change in the head's (standardised) output, whatever the LLM does with the graph."""
    model = answer_model(processor)
    conditioning = model.model.instruction_conditioning
    yes, no = adhd_read_along_yes_no(model, processor, 3.0)
    batch = processor(text=chat(processor, ADHD) * 4, fcns=random_fcns(4, seed=3), padding=True, padding_side="left")
    out = model(**batch)
    margin = out.logits[:, -1, yes] - out.logits[:, -1, no]
    standard = conditioning.evidence_norm(out.graph_attribute_outputs.float())[:, 0]  # running stats: identity here
    with torch.no_grad():
        conditioning.out.weight.zero_()
    base = model(**batch).logits[:, -1]
    torch.testing.assert_close(margin - (base[:, yes] - base[:, no]), 3.0 * standard, atol=1e-4, rtol=1e-4)


def test_with_evidence_decides_answer_the_margin_is_the_evidence_whatever_the_wording(processor):
    """`evidence_decides_answer`: along the readout's answer directions the LLM's own margin (and the readout's bias)
    is removed at the answer position, so log P(Yes) - log P(No) is the evidence's margin for any wording of the
    question."""
    model = answer_model(processor, evidence_decides_answer=True)
    conditioning = model.model.instruction_conditioning
    yes, no = adhd_read_along_yes_no(model, processor, 3.0)
    with torch.no_grad():
        conditioning.out.bias.normal_(std=1.0)  # a bias along the answer direction must not move the margin either
    wordings = [ADHD, "<graph>\nIs ADHD present in this participant?", "<graph>\nWould you diagnose ADHD here?"]
    fcns = random_fcns(1, seed=3)
    margins = []
    for wording in wordings:
        batch = processor(text=chat(processor, wording), fcns=fcns)
        out = model(**batch)
        margins.append((out.logits[0, -1, yes] - out.logits[0, -1, no]).detach())
        standard = conditioning.evidence_norm(out.graph_attribute_outputs.float())[0, 0]
        torch.testing.assert_close(margins[-1], 3.0 * standard, atol=1e-4, rtol=1e-4)
    # without it, the wording's prior shows in the margin
    model.config.evidence_decides_answer = False
    with torch.no_grad():
        free = [model(**processor(text=chat(processor, w), fcns=fcns)).logits[0, -1] for w in wordings]
    assert max(abs(float((f[yes] - f[no]) - m)) for f, m in zip(free, margins)) > 1e-3


def test_scoring_single_pass_and_cached_agree_and_generation_reads_the_evidence_once(processor):
    model = answer_model(processor)
    prompts = chat(processor, ADHD, COMPARE)
    fcns = [[random_fcns(1, seed=1)[0]], list(random_fcns(2, seed=2))]
    single = choice_log_likelihoods(model, processor, prompts, fcns, ["Yes", "No", "The first"], single_pass=True)
    cached = choice_log_likelihoods(model, processor, prompts, fcns, ["Yes", "No", "The first"], single_pass=False)
    np.testing.assert_allclose(single, cached, atol=1e-4)
    batch = processor(text=prompts, fcns=[f for row in fcns for f in row], padding=True, padding_side="left")
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    torch.testing.assert_close(model.generate(**batch, use_cache=True, **kwargs),
                               model.generate(**batch, use_cache=False, **kwargs))


def test_the_answer_evidence_is_trained_through_a_frozen_llm(processor):
    model = answer_model(processor).train()
    model.language_model.requires_grad_(False)
    model.lm_head.requires_grad_(False)
    batch = processor(text=chat(processor, ADHD), fcns=random_fcns(1), answers=["Yes"])
    assert model.answer_positions(batch["input_ids"], batch["attention_mask"]).sum() == 1
    model(**batch).loss.backward()
    assert model.model.instruction_conditioning.out.weight.grad.abs().sum() > 0


AGE = "<graph>\nWhat is this subject's age?"
AGE_HEAD = {"key": "age", "kind": "continuous", "num_outputs": 1, "mean": 40.0, "std": 20.0, "valid_range": [5, 90]}


def writing_model(processor, paradigm: str = "predictive", **overrides) -> FCNLLMForCausalLM:
    """`answer_model` with the age head's range and rounding, number tokens, one readout per paradigm, the router
    sure of "age" and the paradigm classifier sure of `paradigm`."""
    heads = [TINY_HEADS[0], TINY_HEADS[1], AGE_HEAD]
    model = answer_model(processor, auxiliary_heads=heads, numeral_tokens=numeral_tokens_of(processor.tokenizer),
                         evidence_paradigms=["predictive", "judgment", "comparative"],
                         answer_end_id=processor.answer_end_id, **overrides)
    conditioning = model.model.instruction_conditioning
    with torch.no_grad():
        conditioning.router.weight.zero_()
        conditioning.router.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
        conditioning.paradigm_bias.copy_(torch.tensor([50.0 * (p == paradigm) for p in conditioning.paradigms]))
    return model


def set_age_estimate(model, years: float) -> None:
    """Make the age head say `years` for every subject (its token weights zeroed, its bias set)."""
    head = model.graph_attribute_heads.heads["age"]
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.zero_()
        head.bias.fill_((years - AGE_HEAD["mean"]) / AGE_HEAD["std"])


def generate(model, processor, prompts, fcns, **kwargs):
    batch = processor(text=prompts, fcns=fcns, padding=True, padding_side="left")
    output = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
                            eos_token_id=processor.answer_end_id, **kwargs)
    return processor.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("years, written", [(37.4, "37"), (8.0, "8"), (140.0, "90"), (-30.0, "5")])
def test_predictive_numbers_are_the_heads_estimate_in_range(processor, years, written):
    model = writing_model(processor)
    set_age_estimate(model, years)
    prompts = chat(processor, AGE, AGE)
    for use_cache in (True, False):
        assert generate(model, processor, prompts, random_fcns(2), use_cache=use_cache) == [written, written]
    batch = processor(text=prompts[:1], fcns=random_fcns(1))
    out = model(**batch)
    assert processor.tokenizer.decode(out.number_plan[0][out.number_plan[0] >= 0]) == written + "<|im_end|>"
    assert out.number_gate.item() == pytest.approx(1.0, abs=1e-3)


def test_numbers_are_written_only_for_predictive_questions_at_inference(processor):
    prompts, fcns = chat(processor, AGE), random_fcns(1)
    plain = writing_model(processor, number_writing_bias=0.0)
    set_age_estimate(plain, 37.0)
    expected = generate(plain, processor, prompts, fcns)
    judged = writing_model(processor, paradigm="judgment")
    set_age_estimate(judged, 37.0)
    assert generate(judged, processor, prompts, fcns) == expected  # the gate is the predictive paradigm's weight
    writer = writing_model(processor)
    set_age_estimate(writer, 37.0)
    assert generate(writer, processor, prompts, fcns) == ["37"] != expected
    # training and labelled passes score the LLM's own answer: no estimate is written into their logits
    batch = processor(text=prompts, fcns=fcns, answers=["21"])
    torch.testing.assert_close(writer(**batch).loss, plain(**batch).loss)
    assert writer.train()(**batch).loss.isfinite()
    # a question routed to a class head ("sex") writes nothing, even asked for a prediction
    with torch.no_grad():
        writer.model.instruction_conditioning.router.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
    assert writer.eval()(**processor(text=prompts, fcns=fcns)).number_gate.item() == 0.0
    # a comparison (two graphs) writes nothing
    two = processor(text=chat(processor, COMPARE), fcns=random_fcns(2))
    assert writer.eval()(**two).number_gate.item() == 0.0


def test_a_chat_template_without_an_assistant_prefix_is_an_error(tokenizer):
    from processing import FCNProcessor

    bare = FCNProcessor(tokenizer, chat_template="{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    with pytest.raises(ValueError, match="writes no assistant prefix"):
        bare.answer_prefix_ids


SEX = "<graph>\nWhat is this subject's sex?"


def word_writer(processor, words: list[str], first: str, **overrides) -> FCNLLMForCausalLM:
    """`answer_model` routed to the sex head, whose answer words are `words`, with a readout bias that makes every
    answer start with the first token of `first`."""
    model = answer_model(processor, class_answer_ids={"sex": processor.answer_word_ids(words)},
                         answer_end_id=processor.answer_end_id, **overrides)
    conditioning = model.model.instruction_conditioning
    first_token = processor.answer_word_ids([first])[0][0]
    with torch.no_grad():
        conditioning.router.weight.zero_()
        conditioning.router.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
        conditioning.out.weight.zero_()
        conditioning.out.bias.copy_(50.0 * model.lm_head.weight[first_token] / model.lm_head.weight[first_token].norm())
    return model


def test_config_rejects_class_answer_ids_that_are_not_words_of_tokens():
    with pytest.raises(ValueError, match=r"class_answer_ids\['sex'\] must list two or more answer words"):
        FCNLLMConfig(class_answer_ids={"sex": [[5]]})
    with pytest.raises(ValueError, match=r"class_answer_ids\['sex'\] must list two or more answer words"):
        FCNLLMConfig(class_answer_ids={"sex": [[5], []]})
    with pytest.raises(ValueError, match=r"class_answer_ids\['sex'\] must list two or more answer words"):
        FCNLLMConfig(class_answer_ids={"sex": [[5], [-1]]})


@pytest.mark.parametrize("first", ["Right", "Mixed"])
def test_a_begun_class_word_is_written_whole(processor, first):
    words = ["Right", "Mixed"]
    assert all(len(ids) > 2 for ids in processor.answer_word_ids(words))  # several tokens each
    prompts, fcns = chat(processor, SEX, SEX), random_fcns(2)
    alone = generate(word_writer(processor, words, first, number_writing_bias=0.0), processor, prompts, fcns)
    assert alone[0] != first  # the tiny LLM alone does not finish the word the evidence began
    writer = word_writer(processor, words, first)
    for use_cache in (True, False):
        assert generate(writer, processor, prompts, fcns, use_cache=use_cache) == [first, first]
    # a question routed to a head without answer words (age) is left to the LLM
    with torch.no_grad():
        writer.model.instruction_conditioning.router.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
    assert generate(writer, processor, prompts, fcns) == alone


def test_words_that_go_on_differently_from_what_is_written_are_left_to_the_llm(processor):
    words = ["Closed", "Control"]  # both begin with "C"
    writer, plain = (word_writer(processor, words, "Closed", number_writing_bias=bias) for bias in (20.0, 0.0))
    prompt = chat(processor, SEX)[0]
    fcns = random_fcns(1)
    for written, same in (("C", True), ("Co", False)):
        batch = processor(text=[prompt + written], fcns=fcns)
        assert torch.allclose(writer(**batch).logits[0, -1], plain(**batch).logits[0, -1]) == same


def test_writing_words_leaves_scores_and_labelled_losses_alone(processor):
    words = ["Ambidextrous", "Left-handed"]
    writer = word_writer(processor, words, "Ambidextrous")
    plain = word_writer(processor, words, "Ambidextrous", number_writing_bias=0.0)
    prompts, fcns = chat(processor, SEX), [random_fcns(1)]
    for single_pass in (True, False):
        np.testing.assert_allclose(
            choice_log_likelihoods(writer, processor, prompts, fcns, words, single_pass=single_pass),
            choice_log_likelihoods(plain, processor, prompts, fcns, words, single_pass=single_pass), atol=1e-5)
    batch = processor(text=prompts, fcns=fcns[0], answers=["Ambidextrous"])
    torch.testing.assert_close(writer(**batch).loss, plain(**batch).loss)


@pytest.mark.parametrize("paradigm", ["predictive", "judgment"])
def test_a_predictive_answer_starts_with_one_of_the_routed_heads_words(processor, paradigm):
    words = ["Right", "Mixed"]
    prompts, fcns = chat(processor, SEX), random_fcns(1)
    answers = {}
    for bias in (20.0, 0.0):
        model = word_writer(processor, words, "Right", number_writing_bias=bias,
                            evidence_paradigms=["predictive", "judgment", "comparative"])
        conditioning = model.model.instruction_conditioning
        with torch.no_grad():
            conditioning.out.bias.zero_()  # no evidence: the LLM alone would start with a word of its own
            conditioning.paradigm_bias.copy_(torch.tensor([50.0 * (p == paradigm) for p in conditioning.paradigms]))
        answers[bias] = generate(model, processor, prompts, fcns)[0]
    assert answers[0.0] not in words
    assert (answers[20.0] in words) == (paradigm == "predictive")
    if paradigm == "judgment":  # a judgment is answered in its own words ("Yes"/"No"), not the class words
        assert answers[20.0] == answers[0.0]
