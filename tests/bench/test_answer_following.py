import numpy as np
import pytest

from bench.answer_following import answer_following
from tests.conftest import make_tiny_model, random_fcns
from tests.modeling_fcnllm.test_answer_evidence import adhd_read_along_yes_no, answer_model

SUBJECTS = [f"s{i}" for i in range(8)]
FCNS = dict(zip(SUBJECTS, random_fcns(len(SUBJECTS), seed=5)))


def _judgment(i, subject, question, answer, negated=False, attribute="adhd"):
    return {"id": f"r{i}", "paradigm": "judgment", "attribute": attribute, "subject_ids": [subject], "answer": answer,
            "negated": negated, "messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": answer}]}


def _rows():
    rows = []
    for i, subject in enumerate(SUBJECTS):
        rows.append(_judgment(len(rows), subject, "<graph>\nDoes this subject have ADHD?", "Yes" if i % 2 else "No"))
        rows.append(_judgment(len(rows), subject, "<graph>\nCan ADHD be ruled out for this subject?",
                              "No" if i % 2 else "Yes", negated=True))
    return rows + [_judgment(len(rows), "s0", "<graph>\nIs this subject female?", "Yes", attribute="sex")]


def fcns_of(ids):
    return np.stack([FCNS[i] for i in ids])


@pytest.mark.parametrize("scale", [3.0, -3.0])
def test_an_answer_against_its_head_is_named(processor, scale):
    model = answer_model(processor, evidence_decides_answer=True)
    adhd_read_along_yes_no(model, processor, scale)
    report = answer_following(model, processor, _rows(), fcns_of)
    adhd = report["attributes"]["adhd"]
    assert report["rows"] == 16 and set(report["attributes"]) == {"adhd"} and adhd["n"] == 16  # sex: not binary
    assert np.sign(adhd["plain_slope"]) == np.sign(scale) and abs(adhd["plain_slope"]) > 1.0
    assert report["inverted"] == ([] if scale > 0 else ["adhd"])
    # the negation is not read (no turn classifier fitted): its answers move with the head as the plain ones do
    assert np.sign(adhd["negated_slope"]) == np.sign(scale)
    assert 0.0 <= adhd["answer_auc"] <= 1.0 and 0.0 <= adhd["head_auc"] <= 1.0


def test_answer_following_bad_input(processor):
    with pytest.raises(ValueError, match="No judgments with one subject about the model's binary attributes"):
        answer_following(answer_model(processor), processor, _rows()[-1:], fcns_of)
    with pytest.raises(ValueError, match="instruction_evidence='attributes'"):
        answer_following(make_tiny_model(processor.tokenizer), processor, _rows(), fcns_of)
