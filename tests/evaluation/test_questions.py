"""Instruction rows -> Questions (choices, references, thresholds, directions) and baseline answers."""

import numpy as np
import pandas as pd
import pytest

from datasets_scripts.attributes import load_registry
from evaluation.questions import baseline_answer, build_question, prompt_messages

REGISTRY = load_registry()


def _row(paradigm, key, question, answer, subject_ids=("s1",)):
    graphs = "<graph>\n" * len(subject_ids)
    return pd.Series({"id": "q1", "paradigm": paradigm, "attribute": key, "answer": answer,
                      "subject_ids": list(subject_ids),
                      "messages": [{"role": "user", "content": graphs + question},
                                   {"role": "assistant", "content": answer}]})


def test_prompt_drops_the_answer_turn():
    messages = _row("judgment", "adhd", "Does this subject have ADHD? Answer yes or no.", "Yes")["messages"]
    assert [m["role"] for m in prompt_messages(messages)] == ["user"]


def test_binary_predictive_uses_registry_labels():
    q = build_question(_row("predictive", "adhd", REGISTRY["adhd"].templates["predictive"][0], "ADHD"), REGISTRY["adhd"])
    assert q.target == "binary" and q.choices == ("ADHD", "Control") and q.reference == 1.0


def test_categorical_predictive_choices_are_classes():
    q = build_question(_row("predictive", "handedness", "What is this subject's handedness?", "Left"),
                       REGISTRY["handedness"])
    assert q.target == "multiclass" and q.choices == ("Right", "Left", "Ambidextrous") and q.reference == 1.0


def test_continuous_predictive_prefers_the_subject_value():
    q = build_question(_row("predictive", "age", "How old is this subject?", "34"), REGISTRY["age"], 34.4)
    assert q.target == "regression" and q.reference == 34.4 and q.choices == ()


def test_continuous_judgment_reads_the_threshold():
    text = REGISTRY["age"].templates["judgment"][1].format(threshold="18")
    q = build_question(_row("judgment", "age", text, "No"), REGISTRY["age"])
    assert q.choices == ("Yes", "No") and q.threshold == 18.0 and q.reference == 0.0


def test_categorical_judgment_reads_the_class():
    text = REGISTRY["handedness"].templates["judgment"][0].format(phrase="left-handed")
    q = build_question(_row("judgment", "handedness", text, "Yes"), REGISTRY["handedness"])
    assert q.class_index == 1 and q.reference == 1.0


def test_comparative_direction():
    age = REGISTRY["age"]
    higher = build_question(_row("comparative", "age", age.templates["comparative"][0], "The second", ("a", "b")), age)
    lower = build_question(_row("comparative", "age", age.templates["comparative_lower"][0], "The first",
                                ("a", "b")), age)
    assert (higher.direction, higher.reference) == (1, 0.0)
    assert (lower.direction, lower.reference) == (-1, 1.0)
    assert baseline_answer(lower, np.array([20.0, 40.0])) == (20.0, 1)  # the first is younger
    assert baseline_answer(higher, np.array([20.0, 40.0])) == (-20.0, 0)


def test_baseline_answers_for_judgments():
    age, hand = REGISTRY["age"], REGISTRY["handedness"]
    q = build_question(_row("judgment", "age", age.templates["judgment"][0].format(threshold="30"), "Yes"), age)
    assert baseline_answer(q, np.array([35.0])) == (5.0, 1)
    q = build_question(_row("judgment", "handedness", hand.templates["judgment"][0].format(phrase="ambidextrous"),
                            "No"), hand)
    score, pred = baseline_answer(q, np.array([[0.7, 0.1, 0.2]]))
    assert score == pytest.approx(0.2) and pred == 0


def test_answer_outside_the_allowed_answers_is_an_error():
    with pytest.raises(ValueError, match="not one of the allowed answers"):
        build_question(_row("judgment", "adhd", "Does this subject have ADHD?", "Maybe"), REGISTRY["adhd"])


def test_unknown_paradigm_is_an_error():
    with pytest.raises(ValueError, match="unknown paradigm"):
        build_question(_row("freeform", "adhd", "Tell me.", "Yes"), REGISTRY["adhd"])
