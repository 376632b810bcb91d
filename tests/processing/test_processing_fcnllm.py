import numpy as np
import pytest
import torch

from processing import FCNProcessor, normalize_fcn
from tests.conftest import NUM_ROIS, random_fcns

QUESTION = "<graph>\nDoes this subject have ADHD? Answer yes or no."
COMPARE = "Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two subjects is older?"


def test_each_placeholder_expands_to_g_graph_tokens(processor):
    out = processor(text=[QUESTION, COMPARE], fcns=random_fcns(3))
    g = processor.num_graph_tokens
    per_sample = (out["input_ids"] == processor.graph_token_id).sum(-1).tolist()
    assert per_sample == [g, 2 * g]
    assert out["graph_values"].shape == (3, NUM_ROIS, NUM_ROIS)
    assert out["graph_values"].dtype == torch.float32
    assert set(out) == {"input_ids", "attention_mask", "graph_values"}


def test_fcn_inputs_may_be_nested_per_sample(processor):
    fcns = random_fcns(3)
    flat = processor(text=[QUESTION, COMPARE], fcns=fcns)
    nested = processor(text=[QUESTION, COMPARE], fcns=[[fcns[0]], [fcns[1], fcns[2]]])
    torch.testing.assert_close(flat["graph_values"], nested["graph_values"])


def test_time_series_are_turned_into_fcns(processor):
    rng = np.random.default_rng(0)
    series = rng.normal(size=(60, NUM_ROIS))
    from_series = processor(text=QUESTION, time_series=series)["graph_values"][0]
    expected = normalize_fcn(np.corrcoef(series.T).astype(np.float32), "zscore")
    np.testing.assert_allclose(from_series.numpy(), expected, atol=1e-5)


def test_zscore_normalization_is_label_free_and_per_subject():
    fcn = random_fcns(1)[0]
    z = normalize_fcn(fcn, "zscore")
    off = ~np.eye(NUM_ROIS, dtype=bool)
    assert abs(z[off].mean()) < 1e-5 and abs(z[off].std() - 1) < 1e-4
    assert np.all(np.diag(z) == 0)
    np.testing.assert_allclose(normalize_fcn(fcn * 0.5 + 0.2, "zscore"), z, atol=1e-4)  # site-level scale/shift gone
    np.testing.assert_array_equal(normalize_fcn(fcn, "none"), fcn)


def test_text_only_prompts_have_no_graph_values(processor):
    out = processor(text="What is FCN-LLM?")
    assert "graph_values" not in out


def test_chat_template_has_no_system_prompt_and_keeps_placeholders(processor):
    text_messages = [{"role": "user", "content": QUESTION}]
    part_messages = [{"role": "user", "content": [{"type": "graph"}, {"type": "text", "text": "\nDoes this subject have ADHD? Answer yes or no."}]}]
    rendered = processor.apply_chat_template(text_messages, add_generation_prompt=True)
    assert rendered == f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    assert processor.apply_chat_template(part_messages, add_generation_prompt=True) == rendered
    batch = processor(text=rendered, fcns=random_fcns(1))
    assert (batch["input_ids"] == processor.graph_token_id).sum() == processor.num_graph_tokens


def test_chat_template_tokenizes_with_graphs(processor):
    messages = [{"role": "user", "content": COMPARE}]
    out = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True,
        processor_kwargs={"fcns": random_fcns(2)},
    )
    assert out["graph_values"].shape[0] == 2


def test_save_and_reload_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = FCNProcessor.from_pretrained(tmp_path)
    for attr in ("graph_token", "num_graph_tokens", "num_rois", "normalization", "connectivity_kind", "chat_template"):
        assert getattr(reloaded, attr) == getattr(processor, attr)
    fcns = random_fcns(3)
    a, b = processor(text=[QUESTION, COMPARE], fcns=fcns), reloaded(text=[QUESTION, COMPARE], fcns=fcns)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


# --- bad input ---------------------------------------------------------------------------------
def test_placeholder_count_mismatch_names_both_counts(processor):
    with pytest.raises(ValueError, match=r"3 <graph> placeholder\(s\) \(per sample: \[1, 2\]\) but 2 graph\(s\)"):
        processor(text=[QUESTION, COMPARE], fcns=random_fcns(2))
    with pytest.raises(ValueError, match=r"1 <graph> placeholder\(s\).* but 0 graph\(s\)"):
        processor(text=QUESTION)


def test_graphs_without_placeholder(processor):
    with pytest.raises(ValueError, match="2 graph\\(s\\) were given but the text has no <graph> placeholder"):
        processor(text="Does this subject have ADHD?", fcns=random_fcns(2))


def test_truncation_that_cuts_an_expansion(processor):
    with pytest.raises(ValueError, match="truncation cut a <graph> expansion"):
        processor(text="Subject: " + QUESTION, fcns=random_fcns(1), truncation=True, max_length=5)


@pytest.mark.parametrize(
    "fcn,message",
    [
        (random_fcns(1)[0][:, :-1], "square"),
        (random_fcns(1, num_rois=NUM_ROIS + 2)[0], "N=14 ROIs but the model expects num_rois=12"),
        (np.where(np.eye(NUM_ROIS, dtype=bool), np.nan, random_fcns(1)[0]), "NaN or inf"),
        (random_fcns(1)[0] + np.triu(np.full((NUM_ROIS, NUM_ROIS), 0.01), 1), "not symmetric"),
        (np.ones(NUM_ROIS), "ndim=1"),
        (random_fcns(1)[0].astype(str), "dtype"),
    ],
)
def test_bad_fcns(processor, fcn, message):
    with pytest.raises(ValueError, match=message):
        processor(text=QUESTION, fcns=[fcn])


def test_constant_roi_and_short_time_series(processor):
    rng = np.random.default_rng(0)
    series = rng.normal(size=(60, NUM_ROIS))
    series[:, 4] = 1.0
    with pytest.raises(ValueError, match="constant ROI"):
        processor(text=QUESTION, time_series=series)
    with pytest.raises(ValueError, match="timepoints"):
        processor(text=QUESTION, time_series=rng.normal(size=(2, NUM_ROIS)))
    partial = FCNProcessor(processor.tokenizer, num_graph_tokens=processor.num_graph_tokens, connectivity_kind="partial correlation")
    with pytest.raises(ValueError, match=f"needs at least {NUM_ROIS + 1}"):
        partial(text=QUESTION, time_series=rng.normal(size=(NUM_ROIS, NUM_ROIS)))


def test_processor_must_match_the_model(processor):
    from tests.conftest import make_tiny_model

    model = make_tiny_model(processor.tokenizer)
    model.config.graph_token_id = 5
    with pytest.raises(ValueError, match="graph_token_id is 5"):
        FCNProcessor.from_model_config(processor.tokenizer, model.config)


def test_prompt_messages_drop_the_answer_turn_and_need_a_question():
    turns = [{"role": "user", "content": "<graph>\nAge?"}, {"role": "assistant", "content": "34"}]
    assert FCNProcessor.prompt_messages(turns) == turns[:1]
    with pytest.raises(ValueError, match="without a user turn"):
        FCNProcessor.prompt_messages([{"role": "assistant", "content": "34"}])


def test_end_of_turn_is_what_the_template_writes_after_an_answer(processor):
    assert processor.end_of_turn == "<|im_end|>"


def test_answer_ids_follow_the_prompt_and_need_g(processor):
    prompt = processor.apply_chat_template([{"role": "user", "content": "<graph>\nADHD?"}], add_generation_prompt=True)
    ids = processor.answer_ids(prompt, "Yes<|im_end|>")
    assert processor.tokenizer.decode(ids) == "Yes<|im_end|>"
    assert processor.expand_graphs(prompt).count(processor.graph_token) == processor.num_graph_tokens
    with pytest.raises(ValueError, match="num_graph_tokens"):
        FCNProcessor(processor.tokenizer).expand_graphs(prompt)


def _chat(processor, text):
    return processor.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)


def test_answers_follow_their_prompts_and_only_they_carry_labels(processor):
    prompts = [_chat(processor, QUESTION), _chat(processor, COMPARE)]
    out = processor(text=prompts, fcns=random_fcns(3), answers=["Yes", "The second"], padding_side="right")
    assert set(out) == {"input_ids", "attention_mask", "labels", "graph_values"}
    assert out["labels"].shape == out["input_ids"].shape
    for i, (prompt, answer) in enumerate(zip(prompts, ["Yes", "The second"])):
        labelled = out["labels"][i][out["labels"][i] != -100].tolist()
        assert labelled == processor.answer_ids(prompt, answer + processor.end_of_turn)  # what scoring measures
        length = int(out["attention_mask"][i].sum())
        assert out["input_ids"][i, length - len(labelled):length].tolist() == labelled  # right after the prompt
    assert (out["labels"][out["attention_mask"] == 0] == -100).all()
    assert out["attention_mask"][0, -1] == 0  # the shorter sample is padded on the right


def test_answers_pad_on_the_left_when_asked(processor):
    prompts = [_chat(processor, QUESTION), _chat(processor, COMPARE)]
    out = processor(text=prompts, fcns=random_fcns(3), answers=["Yes", "No"], padding_side="left")
    assert out["attention_mask"][0, 0] == 0 and out["labels"][0, 0] == -100
    assert out["input_ids"][0, -1] == out["input_ids"][1, -1]  # both end with the end-of-turn marker


def test_an_answer_over_max_length_raises_naming_the_sample(processor):
    prompts = [_chat(processor, "Is this text-only?"), _chat(processor, QUESTION)]
    fits = processor(text=prompts[:1], answers=["Yes"], max_length=1000)
    length = fits["input_ids"].shape[1]
    assert processor(text=prompts[:1], answers=["Yes"], max_length=length)["input_ids"].shape[1] == length
    with pytest.raises(ValueError, match=rf"Sample 1 is \d+ tokens long .*over max_length={length}"):
        processor(text=prompts, fcns=random_fcns(1), answers=["Yes", "No"], max_length=length)
    with pytest.raises(ValueError, match="never truncated"):
        processor(text=prompts[:1], answers=["Yes"], max_length=length, truncation=True)


def test_answers_must_match_the_prompts(processor):
    with pytest.raises(ValueError, match=r"2 prompt\(s\) but 1 answer\(s\)"):
        processor(text=["a", "b"], answers=["Yes"])


def test_prepare_fcn_stack_validates_then_normalises():
    from processing import prepare_fcn_stack

    fcns = random_fcns(3)
    np.testing.assert_allclose(prepare_fcn_stack(fcns, "zscore"), normalize_fcn(fcns, "zscore"), atol=1e-5)
    bad = fcns.copy()
    bad[1, 0, 1] = bad[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="FCN 1 has 2 NaN or inf"):
        prepare_fcn_stack(bad, "zscore")
