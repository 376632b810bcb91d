import numpy as np
import pytest
import torch

from tests.conftest import TINY_HEADS, make_tiny_model, random_fcns
from fcn_llm.training.collator import FCNInstructionCollator
from fcn_llm.training.router_fitting import (FRAME_CS, _folds, _logistic_regression_cv, fit_paradigms, fit_router,
                                             question_frames, routing_dataset)

# Templates share every word but the attribute's (and paraphrases share their frames across attributes),
# as the registry's do: a router that reads the shared tokens cannot tell the attributes apart.
FRAMES = ("<graph>\nDoes this subject have {}? Answer yes or no.",
          "<graph>\nHas this subject been diagnosed with {}? Answer yes or no.",
          "<graph>\nBased on this brain network, does the subject have {}? Please answer yes or no.")
NAMES = {"adhd": "ADHD", "sex": "a male sex", "age": "an older age"}


def _rows():
    return [{"id": f"{key}{i}", "attribute": key, "answer": "Yes", "subject_ids": ["a"],
             "messages": [{"role": "user", "content": frame.format(NAMES[key])}, {"role": "assistant", "content": "Yes"}]}
            for key in NAMES for i, frame in enumerate(FRAMES)]


@pytest.fixture
def collator(processor):
    return FCNInstructionCollator(processor, {"a": random_fcns(1)[0]}, routing_keys=[h["key"] for h in TINY_HEADS])


def _routed(model, collator, rows):
    batch = collator(rows)
    with torch.no_grad():
        logits = model(**batch).instruction_routing_logits
    return logits.argmax(-1), batch["routing_labels"]


def test_fitted_router_sends_every_question_to_its_attribute(processor, collator):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _rows()
    accuracy = fit_router(model, collator, rows)
    assert accuracy == 1.0
    routed, asked = _routed(model, collator, rows)
    assert routed.tolist() == asked.tolist()


def test_routing_features_leave_out_graph_answer_and_padding_tokens(processor, collator):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _rows()[:2]
    x, y = routing_dataset(model, collator, rows)
    short = collator(rows[:1])
    conditioning, embed = model.model.instruction_conditioning, model.get_input_embeddings()
    ids = short["input_ids"][0]
    readable = (ids != processor.graph_token_id) & (short["labels"][0] == -100)
    expected = conditioning.router_norm(embed(ids[readable])).sum(0)
    torch.testing.assert_close(torch.from_numpy(x[0]), expected.detach(), atol=1e-5, rtol=1e-5)
    assert y.tolist() == [0, 0]  # adhd is head 0


def test_router_without_instruction_tokens_is_uniform(processor):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    embeds = torch.randn(2, 5, model.config.text_config.hidden_size)
    mask = torch.tensor([[False] * 5, [True] * 5])
    with torch.no_grad():
        conditioning.router.bias.fill_(1.0)
    logits = conditioning.route(embeds, mask)
    assert (logits[0] == 0).all() and not (logits[1] == 0).all()


def test_fit_router_errors(processor, collator):
    with pytest.raises(ValueError, match="instruction_evidence='attributes'"):
        fit_router(make_tiny_model(processor.tokenizer), collator, _rows())
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    with pytest.raises(ValueError, match="at least 2 attributes"):
        fit_router(model, collator, _rows()[:3])
    with pytest.raises(ValueError, match="No training instructions"):
        fit_router(model, collator, [])
    plain = FCNInstructionCollator(processor, {"a": random_fcns(1)[0]})
    with pytest.raises(ValueError, match="no routing_labels"):
        fit_router(model, plain, _rows())


PREDICTIVE = ("<graph>\nWhat is this subject's {}?", "<graph>\nEstimate this subject's {}.")


def _paradigm_rows():
    judged = [dict(row, paradigm="judgment") for row in _rows()]
    asked = [{"id": f"p{key}{i}", "attribute": key, "answer": "30", "subject_ids": ["a"], "paradigm": "predictive",
              "messages": [{"role": "user", "content": frame.format(NAMES[key])}, {"role": "assistant", "content": "30"}]}
             for key in NAMES for i, frame in enumerate(PREDICTIVE)]
    return judged + asked


def test_fitted_paradigm_classifier_tells_judgments_from_predictive_questions(processor, collator):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True, evidence_paradigms=["predictive", "judgment"])
    rows = _paradigm_rows()
    assert fit_paradigms(model, collator, rows) == 1.0
    batch = collator(rows)
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"], batch["labels"] == -100)
    weights = model.model.instruction_conditioning.paradigm_weights(features)
    assert weights.argmax(-1).tolist() == [["predictive", "judgment"].index(row["paradigm"]) for row in rows]


def test_paradigm_classifier_with_one_paradigm_in_the_data_always_picks_it(processor, collator):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True,
                            evidence_paradigms=["predictive", "judgment", "comparative"])
    rows = [row for row in _paradigm_rows() if row["paradigm"] == "judgment"]
    assert fit_paradigms(model, collator, rows) == 1.0
    batch = collator(rows)
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"], batch["labels"] == -100)
    weights = model.model.instruction_conditioning.paradigm_weights(features)
    assert (weights[:, 1] > 0.999).all()


def test_fit_paradigms_errors(processor, collator):
    with pytest.raises(ValueError, match="evidence_paradigms"):
        fit_paradigms(make_tiny_model(processor.tokenizer, attribute_evidence=True), collator, _paradigm_rows())
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True, evidence_paradigms=["predictive", "judgment"])
    with pytest.raises(ValueError, match=r"No training instructions of the paradigms \['predictive', 'judgment'\]"):
        fit_paradigms(model, collator, [dict(row, paradigm="comparative") for row in _rows()])


def test_question_frames_leave_out_attribute_term_and_answer_instruction():
    rows = [{"template_id": "age/judgment/older/-/one_word"}, {"template_id": "adhd/comparative/likely/term1/say"}]
    assert question_frames(rows).tolist() == ["judgment/older", "comparative/likely"]
    assert question_frames(rows + [{"id": "own"}]) is None  # a row without a template id: no frames


def test_question_classifiers_are_cross_validated_on_whole_held_out_frames():
    y = np.array([0, 1] * 30)
    frames = np.array([f"frame{i % 6}" for i in range(60)])
    folds = _folds(y, frames, seed=0)
    assert len(folds) == 5
    for train, test in folds:
        assert not set(frames[train]) & set(frames[test])
    # every plain question in one frame: holding it out would train on turned questions alone, so stratified folds
    one_frame_plain = np.array([f"frame{i % 6}" if y[i] else "plain" for i in range(60)])
    assert all(set(y[train]) == {0, 1} for train, _ in _folds(y, one_frame_plain, seed=0))
    assert _folds(y[:8], frames[:8], seed=0) is None  # too few rows of a class to cross-validate
    x = np.random.default_rng(0).normal(size=(60, 4)) + y[:, None]
    assert _logistic_regression_cv(x, y, frames, seed=0).C in FRAME_CS
    assert _logistic_regression_cv(x[:8], y[:8], frames[:8], seed=0).C == 1.0


def test_a_stronger_l2_never_costs_the_fitted_rows_their_reading():
    """Frames that share nothing (random features per frame): held-out frames favour the strongest L2, which reads
    the fitted rows at chance; the C chosen keeps them read as well as C = 1 does."""
    rng = np.random.default_rng(0)
    frames = np.repeat([f"frame{i}" for i in range(10)], 40)
    y = np.tile([0, 1], 200)
    x = rng.normal(size=(400, 30)) * 0.05 + rng.normal(size=(10, 2, 30))[np.repeat(np.arange(10), 40), y]
    chosen = _logistic_regression_cv(x, y, frames, seed=0)
    assert (chosen.predict(x) == y).mean() >= 0.98
