import numpy as np
import pytest

from bench.question_features import compare_representations, map_accuracy, question_representations
from tests.conftest import make_tiny_model


def _row(i, paradigm, attribute, question, negated=False, direction=1):
    return {"id": f"r{i}", "paradigm": paradigm, "attribute": attribute, "subject_ids": ["s"], "answer": "Yes",
            "negated": negated, "direction": direction,
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "Yes"}]}


TRAIN = [
    _row(0, "judgment", "adhd", "<graph>\nDoes this subject have ADHD?"),
    _row(1, "judgment", "adhd", "<graph>\nCan ADHD be ruled out for this subject?", negated=True),
    _row(2, "predictive", "sex", "<graph>\nWhat is this subject's sex?"),
    _row(3, "judgment", "sex", "<graph>\nIs this subject female?"),
    _row(4, "predictive", "adhd", "<graph>\nWhat is this subject's ADHD status?"),
    _row(5, "judgment", "sex", "<graph>\nIs it false that this subject is female?", negated=True),
]
HELD = [_row(6, "judgment", "adhd", "<graph>\nIs ADHD absent in this participant?", negated=True),
        _row(7, "predictive", "sex", "<graph>\nWhich sex is this participant?")]


def test_each_representation_has_one_row_per_question(processor):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    width = model.config.text_config.hidden_size
    features = question_representations(model, processor, TRAIN, layers=[0, 1], batch_size=4)
    assert set(features) == {"bag", "mean0", "last0", "bag+mean0", "mean1", "last1", "bag+mean1"}
    assert features["bag"].shape == (6, width) and features["bag+mean1"].shape == (6, 2 * width)
    assert np.isfinite(features["last1"]).all()
    # the question's words change every representation
    assert not np.allclose(features["mean1"][0], features["mean1"][1])
    with pytest.raises(ValueError, match="outside the language model's 0..2"):
        question_representations(model, processor, TRAIN, layers=[3])


def test_maps_are_fitted_on_training_forms_and_scored_on_both(processor):
    separable = np.array([[0.0], [0.1], [1.0], [1.1]])
    assert map_accuracy(separable, [0, 0, 1, 1], np.array([[1.2], [-0.1]]), [0, 1]) == {
        "training_forms": 1.0, "held_out_forms": 0.0}
    with pytest.raises(ValueError, match="at least two labels"):
        map_accuracy(separable, [1, 1, 1, 1], separable, [1, 1, 1, 1])
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    report = compare_representations(model, processor, TRAIN, HELD, layers=[1])
    assert set(report) == {"bag", "mean1", "last1", "bag+mean1"}
    assert set(report["bag"]) == {"attribute", "paradigm", "turn"}
    assert all(0.0 <= acc <= 1.0 for reading in report.values() for scores in reading.values() for acc in scores.values())
