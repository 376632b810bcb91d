"""The readout diagnostic on a tiny model whose evidence token reads its attribute heads."""

import numpy as np
import pytest

from bench.readout import asked_score, readout_diagnostic
from fcn_llm.questions import Question
from fcn_llm.evaluation.data import load_evaluation_data
from processing import FCNProcessor
from tests.conftest import make_tiny_model, make_tokenizer
from tests.fcn_llm.evaluation.conftest import write_instruction_folder


def _pair(attribute_evidence=True):
    processor = FCNProcessor(make_tokenizer())
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=attribute_evidence)
    return model, FCNProcessor.from_model_config(processor.tokenizer, model.config)


def test_reports_answer_and_head_auc_and_the_evidence_share(tmp_path):
    data = load_evaluation_data(write_instruction_folder(tmp_path / "data", n_train=12, n_zero_shot=24))
    model, processor = _pair()
    report = readout_diagnostic(model, processor, data, ["adhd"], subjects=24)
    row = report["attributes"]["adhd"]
    assert row["n"] > 4 and 0 <= row["auc_answer"] <= 1 and 0 <= row["auc_head"] <= 1
    assert np.isfinite(row["spearman"]) and row["margin_sd"] > 0
    assert report["margin_corr_without_evidence"] < 1.0  # the live evidence token moves the margins
    assert model.model.instruction_conditioning.out.weight.abs().sum() > 0  # the model itself is untouched


def test_bad_input_names_the_problem(tmp_path):
    data = load_evaluation_data(write_instruction_folder(tmp_path / "data", n_train=12, n_zero_shot=8))
    with pytest.raises(ValueError, match="instruction_evidence='attributes'"):
        readout_diagnostic(*_pair(attribute_evidence=False), data, ["adhd"])
    with pytest.raises(ValueError, match=r"No attribute head for \['autism'\]"):
        readout_diagnostic(*_pair(), data, ["autism"])


def test_asked_score_is_relative_to_the_threshold_or_the_asked_class():
    outputs = np.array([0.3, -1.0, 1.0, 1.5])  # adhd logit, sex (Female, Male), age (standardised)
    judgment = dict(id="q", group=("x", "judgment"), target="binary", messages=[], subject_ids=("s",),
                    choices=("Yes", "No"), reference=1.0)
    age = {"key": "age", "kind": "continuous", "num_outputs": 1, "mean": 30.0, "std": 10.0}
    sex = {"key": "sex", "kind": "categorical", "num_outputs": 2}
    adhd = {"key": "adhd", "kind": "binary", "num_outputs": 1}
    assert asked_score(Question(**judgment, threshold=40.0), outputs, age, 3) == pytest.approx(0.5)  # 1.5 - (40-30)/10
    assert asked_score(Question(**judgment, class_index=1), outputs, sex, 1) == 1.0
    assert asked_score(Question(**judgment, class_index=0), outputs, sex, 1) == -1.0
    assert asked_score(Question(**judgment), outputs, adhd, 0) == pytest.approx(0.3)


def test_asked_score_turns_for_negated_and_reversed_questions():
    outputs = np.array([0.3, -1.0, 1.0, 1.5])
    judgment = dict(id="q", group=("x", "judgment"), target="binary", messages=[], subject_ids=("s",),
                    choices=("Yes", "No"), reference=1.0)
    age = {"key": "age", "kind": "continuous", "num_outputs": 1, "mean": 30.0, "std": 10.0}
    adhd = {"key": "adhd", "kind": "binary", "num_outputs": 1}
    assert asked_score(Question(**judgment, threshold=40.0, direction=-1), outputs, age, 3) == pytest.approx(-0.5)
    assert asked_score(Question(**judgment, negated=True), outputs, adhd, 0) == pytest.approx(-0.3)
    assert asked_score(Question(**judgment, threshold=40.0, direction=-1, negated=True), outputs, age, 3) == pytest.approx(0.5)
