import pytest
import torch

from bench.question_reading import reading_accuracy
from tests.conftest import make_number_reading_model, make_tiny_model


def _judgment(i, attribute, question, negated=False, threshold=None):
    return {"id": f"r{i}", "paradigm": "judgment", "attribute": attribute, "subject_ids": ["s"], "answer": "Yes",
            "negated": negated, "direction": 1, "threshold": threshold, "template_id": f"{attribute}/judgment/{i}",
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "Yes"}]}


ROWS = [
    _judgment(0, "adhd", "<graph>\nDoes this subject have ADHD?"),
    _judgment(1, "adhd", "<graph>\nCan ADHD be ruled out for this subject?", negated=True),
    _judgment(2, "sex", "<graph>\nIs this subject female?"),
    _judgment(3, "age", "<graph>\nIs this subject older than 37 years?", threshold=37.0),
]


def test_reading_accuracy_counts_what_the_router_and_turns_get_right(processor):
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    with torch.no_grad():
        conditioning.router.weight.zero_()
        conditioning.router.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))  # always "sex"
    report = reading_accuracy(model, processor, ROWS)
    assert report["rows"] == 4 and report["routing_accuracy"] == 0.25
    assert report["routing_by_attribute"] == {"adhd": 0.0, "age": 0.0, "sex": 1.0}
    assert report["turn_accuracy"] == 0.75 and report["turn_accuracy_turned_questions"] == 0.0  # unfitted: all plain
    assert report["turn_accuracy_by_frame"] == {"judgment/0": 1.0, "judgment/1": 0.0, "judgment/2": 1.0,
                                                "judgment/3": 1.0}  # the negated frame is the one misread
    with torch.no_grad():
        conditioning.turn_bias.fill_(30.0)  # every question read as turned
    report = reading_accuracy(model, processor, ROWS)
    assert report["turn_accuracy"] == 0.25 and report["turn_accuracy_turned_questions"] == 1.0


def test_reading_accuracy_measures_the_threshold_read_from_the_number(processor):
    model = make_number_reading_model(processor)
    assert reading_accuracy(model, processor, ROWS)["threshold_error_median"] == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model.model.instruction_conditioning.threshold_offset[3] += 0.5
    assert reading_accuracy(model, processor, ROWS)["threshold_error_median"] == pytest.approx(0.5, abs=1e-5)


def test_reading_accuracy_bad_input(processor):
    with pytest.raises(ValueError, match="No instructions about the model's attributes"):
        reading_accuracy(make_tiny_model(processor.tokenizer, attribute_evidence=True), processor,
                         [_judgment(0, "bmi", "<graph>\nIs the BMI above 30?")])
    with pytest.raises(ValueError, match="instruction_evidence='attributes'"):
        reading_accuracy(make_tiny_model(processor.tokenizer), processor, ROWS)
