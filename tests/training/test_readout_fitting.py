import numpy as np
import pytest
import torch

from evaluation.scoring import choice_log_likelihoods
from tests.conftest import TINY_HEADS, make_tiny_model, random_fcns
from training.collator import FCNInstructionCollator, prompt_messages
from training.readout_fitting import fit_readout

SUBJECTS = [f"s{i}" for i in range(24)]
FCNS = dict(zip(SUBJECTS, random_fcns(len(SUBJECTS), seed=3)))
# adhd (binary head 0) alternates 0/1; sex and age unknown
TARGETS = {sid: np.array([i % 2, np.nan, np.nan], dtype=np.float32) for i, sid in enumerate(SUBJECTS)}


def _rows(subjects=SUBJECTS, attribute="adhd"):
    rows = []
    for sid in subjects:
        answer = "Yes" if TARGETS[sid][0] == 1 else "No"
        rows.append({"id": sid, "attribute": attribute, "answer": answer, "subject_ids": [sid], "paradigm": "judgment",
                     "messages": [{"role": "user", "content": "<graph>\nDoes this subject have ADHD? Answer yes or no."},
                                  {"role": "assistant", "content": answer}]})
    return rows


@pytest.fixture
def collator(processor):
    return FCNInstructionCollator(processor, FCNS, attribute_targets=TARGETS, num_attribute_targets=len(TINY_HEADS),
                                  routing_keys=[h["key"] for h in TINY_HEADS])


def _word_column(model, processor, scale: float) -> torch.Tensor:
    """scale x the mean embedding norm x unit(E["Yes"] - E["No"])."""
    embeddings = model.get_input_embeddings().weight.detach()
    tokens = processor.tokenizer(["Yes", "No"], add_special_tokens=False)["input_ids"]
    direction = embeddings[tokens[0][0]] - embeddings[tokens[1][0]]
    return scale * embeddings.norm(dim=-1).mean() * direction / direction.norm()


def test_binary_columns_are_the_answers_word_embeddings_at_the_likeliest_scale(processor, collator):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    report = fit_readout(model, collator, _rows(), per_class=6, scales=(1.0, 3.0))
    assert report["heads"] == ["adhd"] and set(report["log_likelihood"]) == {0.0, 1.0, 3.0}
    assert report["scale"] == max(report["log_likelihood"], key=report["log_likelihood"].get)
    out = model.model.instruction_conditioning.out
    torch.testing.assert_close(out.weight[:, 0], _word_column(model, processor, report["scale"]))
    assert torch.count_nonzero(out.weight[:, 1:]) == 0  # categorical and continuous heads are left to training
    assert torch.count_nonzero(out.bias) == 0


def test_reported_log_likelihoods_are_those_of_the_balanced_rows_answers(processor, collator):
    """Each scale's number is the mean log-likelihood of the compared rows' answers with the column at that scale."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    rows = _rows()
    report = fit_readout(model, collator, rows, per_class=12, scales=(2.0,))  # 12 per class: all 24 rows
    prompts = [processor.apply_chat_template(prompt_messages(r["messages"]), add_generation_prompt=True) for r in rows]
    fcns = [[FCNS[r["subject_ids"][0]]] for r in rows]
    yes = np.array([r["answer"] == "Yes" for r in rows])
    for scale in (0.0, 2.0):
        with torch.no_grad():
            model.model.instruction_conditioning.out.weight[:, 0] = _word_column(model, processor, scale)
        ll = choice_log_likelihoods(model, processor, prompts, fcns, ["Yes", "No"])
        assert report["log_likelihood"][scale] == pytest.approx(np.where(yes, ll[:, 0], ll[:, 1]).mean(), abs=1e-4)


def test_fit_readout_errors(processor, collator):
    with pytest.raises(ValueError, match="instruction_evidence='attributes'"):
        fit_readout(make_tiny_model(processor.tokenizer), collator, _rows())
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    with pytest.raises(ValueError, match="no instructions about a binary attribute head"):
        fit_readout(model, collator, _rows(attribute="age"))
    with pytest.raises(ValueError, match="both answers"):
        fit_readout(model, collator, _rows(SUBJECTS[::2]))
    untargeted = FCNInstructionCollator(processor, FCNS, routing_keys=[h["key"] for h in TINY_HEADS])
    with pytest.raises(ValueError, match="attribute targets"):
        fit_readout(model, untargeted, _rows())
