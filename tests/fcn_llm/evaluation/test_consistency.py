"""The consistency report: references from the model's own predictions, agreement rates, bad input."""

import numpy as np
import pytest
import torch

from datasets_scripts.attributes import load_registry
from fcn_llm.evaluation.consistency import OwnAnswers, agreement_report, consistency_questions, own_answers, \
    predictive_questions, run_consistency
from fcn_llm.evaluation.fcn_llm import answer_questions
from processing import FCNProcessor
from tests.conftest import make_tiny_model, random_fcns

REGISTRY = load_registry()
SUBJECTS = ["s0", "s1", "s2", "s3"]
AGES = {"s0": 24.0, "s1": 61.0, "s2": 35.0, "s3": 47.0}


def _age_questions(seed=0):
    own = OwnAnswers(value={("age", s): v for s, v in AGES.items()})
    return consistency_questions(own, [REGISTRY["age"]], SUBJECTS, np.random.default_rng(seed),
                                 judgments_per_subject=8, spans={"age": (20.0, 70.0)})


def _plain_yes(q):
    """The plain question's truth from the generated age: older than the threshold (younger for direction -1)."""
    return q.direction * (AGES[q.subject_ids[0]] - q.threshold) > 0


def test_judgments_answered_from_the_generated_number_agree_and_negated_forms_flip():
    questions = [q for q in _age_questions() if q.group[1] == "judgment"]
    assert len(questions) == 32 and {q.negated for q in questions} == {True, False}
    assert {q.direction for q in questions} == {1, -1}
    assert all(20 <= q.threshold <= 70 and q.threshold == round(q.threshold) for q in questions)
    consistent = {q.id: {"prediction": int(_plain_yes(q) != q.negated)} for q in questions}
    report = agreement_report(questions, consistent, REGISTRY)["threshold_vs_number"]
    assert report["overall"] == {"n": 32, "agree": 32, "rate": 1.0, "meets_target": True}
    deaf = {q.id: {"prediction": int(_plain_yes(q))} for q in questions}  # answers as if nothing were negated
    report = agreement_report(questions, deaf, REGISTRY)["threshold_vs_number"]
    assert report["overall"]["agree"] == sum(not q.negated for q in questions)
    assert report["overall"]["meets_target"] is False
    assert report["by_form"]["negated"]["rate"] == 0.0 and report["by_form"]["plain"]["rate"] == 1.0


def test_comparatives_follow_the_two_generated_numbers():
    questions = [q for q in _age_questions() if q.group[1] == "comparative"]
    assert [q.subject_ids for q in questions] == [("s0", "s1"), ("s1", "s2"), ("s2", "s3"), ("s3", "s0")]
    higher_first = {q.id: {"prediction": int(AGES[q.subject_ids[0]] > AGES[q.subject_ids[1]])} for q in questions}
    report = agreement_report(questions, higher_first, REGISTRY)["comparative_vs_values"]
    assert report["overall"]["agree"] == sum(q.direction == 1 for q in questions)  # "younger?" forms disagree


def test_class_judgments_and_condition_comparatives_follow_the_predicted_class():
    own = OwnAnswers(value={("sex", "s0"): "Female", ("sex", "s1"): "Male", ("adhd", "s0"): 1.0, ("adhd", "s1"): 0.0},
                     score={("adhd", "s0"): 2.0, ("adhd", "s1"): -1.0})
    questions = consistency_questions(own, [REGISTRY["sex"], REGISTRY["adhd"]], ["s0", "s1"],
                                      np.random.default_rng(3), judgments_per_subject=6)
    sex = [q for q in questions if q.group == ("sex", "judgment")]
    assert sorted((q.subject_ids[0], q.class_index) for q in sex) == [("s0", 0), ("s0", 1), ("s1", 0), ("s1", 1)]
    always_yes = {q.id: {"prediction": 1} for q in questions}
    report = agreement_report(questions, always_yes, REGISTRY)
    assert report["class_vs_prediction"]["by_attribute"]["sex"]["rate"] == 0.5
    adhd = [q for q in questions if q.group == ("adhd", "judgment")]
    expected = sum((q.subject_ids[0] == "s0") != q.negated for q in adhd)  # s0 is predicted to have ADHD
    assert report["class_vs_prediction"]["by_attribute"]["adhd"]["agree"] == expected
    [pair] = [q for q in questions if q.group == ("adhd", "comparative")]
    assert pair.reference == float(pair.direction == 1)  # s0 (first) has the higher score


def test_a_threshold_span_outside_the_valid_range_is_an_error():
    own = OwnAnswers(value={("age", "s0"): 30.0})
    with pytest.raises(ValueError, match=r"threshold 150 for attribute 'age' is outside its valid range \[3, 100\]"):
        consistency_questions(own, [REGISTRY["age"]], ["s0"], np.random.default_rng(0), spans={"age": (20.0, 150.0)})


def test_generated_numbers_outside_the_range_or_missing_are_not_checked():
    questions = predictive_questions([REGISTRY["age"]], ["s0", "s1", "s2"])
    answers = {questions[0].id: {"text": "31", "score": 31.0, "prediction": 31.0},
               questions[1].id: {"text": "120", "score": 120.0, "prediction": 120.0},
               questions[2].id: {"text": "old", "score": np.nan, "prediction": np.nan}}
    own = own_answers(questions, answers, REGISTRY)
    assert own.value == {("age", "s0"): 31.0}
    assert own.unparsable["age"] == ["s1", "s2"]


def test_a_binary_predictive_answer_is_its_predicted_label():
    """`answer_questions` predicts 1 where the positive label (`choices[0]`, "ADHD") is the likelier answer."""
    questions = predictive_questions([REGISTRY["adhd"]], ["s0", "s1"])
    assert questions[0].choices[0] == REGISTRY["adhd"].labels["1"]
    answers = {questions[0].id: {"score": 1.5, "prediction": 1}, questions[1].id: {"score": -0.5, "prediction": 0}}
    own = own_answers(questions, answers, REGISTRY)
    assert own.value == {("adhd", "s0"): 1.0, ("adhd", "s1"): 0.0}
    assert own.score == {("adhd", "s0"): 1.5, ("adhd", "s1"): -0.5}


def test_run_consistency_asks_the_same_subjects_with_a_tiny_model(tokenizer):
    processor = FCNProcessor(tokenizer)
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    processor = FCNProcessor.from_model_config(processor.tokenizer, model.config)
    fcns = dict(zip(SUBJECTS, random_fcns(len(SUBJECTS))))
    asked = []

    def answer(m, p, questions, lookup):
        asked.extend(questions)
        return answer_questions(m, p, questions, lookup, batch_size=4, log=lambda s: None)

    torch.manual_seed(0)
    report = run_consistency(model, processor, [REGISTRY["adhd"], REGISTRY["sex"]], SUBJECTS,
                             lambda ids: [fcns[s] for s in ids], REGISTRY, answer, judgments_per_subject=2)
    assert {s for q in asked for s in q.subject_ids} == set(SUBJECTS)
    assert report["questions"]["predictive"] == 8 and report["questions"]["judgment"] == 4 * (2 + 2)
    classes = report["class_vs_prediction"]
    assert classes["overall"]["n"] == 16 and set(classes["by_subject"]) == set(SUBJECTS)
    assert 0.0 <= classes["overall"]["rate"] <= 1.0
    assert report["own_answers"]["sex/s0"] in ("Female", "Male")
