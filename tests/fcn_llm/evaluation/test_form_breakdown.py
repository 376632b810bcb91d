"""FCN-LLM's judgments split into plain vs turned forms and seen vs unseen thresholds."""

import numpy as np
import pandas as pd
import pytest

from fcn_llm.evaluation.data import named_thresholds
from fcn_llm.evaluation.form_breakdown import form_report
from fcn_llm.questions import Question


def _judgment(i, key, reference, negated=False, direction=1, threshold=None):
    """A yes/no judgment whose `reference` is the answer to the question as asked."""
    return Question(id=f"q{i}", group=(key, "judgment"), target="binary", messages=[], subject_ids=(f"s{i}",),
                    choices=("Yes", "No"), reference=reference, negated=negated, direction=direction, threshold=threshold)


def test_turned_questions_are_scored_the_plain_way_and_compared_per_attribute():
    rng = np.random.default_rng(0)
    questions, answers = [], {}
    for i in range(200):
        truth = i % 2  # the subject has ADHD
        negated = i % 4 >= 2
        q = _judgment(i, "adhd", 1 - truth if negated else truth, negated=negated)
        evidence = truth + rng.normal(0, 0.7 if negated else 0.3)  # turned questions read less well
        answers[q.id] = {"score": -evidence if negated else evidence, "prediction": 0}
        questions.append(q)
    turned = form_report(questions, answers, {})["turned_vs_plain"]
    adhd = turned["by_attribute"]["adhd"]
    assert adhd["n_plain"] == adhd["n_turned"] == 100
    assert 0.9 < adhd["plain"] <= 1.0 and 0.6 < adhd["turned"] < adhd["plain"]
    assert turned["ratio"] == pytest.approx(adhd["turned"] / adhd["plain"]) and turned["target"] == 0.95


def test_thresholds_named_in_training_are_told_from_new_ones():
    questions, answers = [], {}
    for i in range(120):
        age = 20 + i % 40
        threshold = float(30 if i % 2 else 71)  # 71 is never named in training
        above = int(age > threshold)
        q = _judgment(i, "age", above, threshold=threshold)
        answers[q.id] = {"score": age - threshold if threshold == 30 else -(age - threshold), "prediction": 0}
        questions.append(q)
    questions.append(_judgment(999, "age", 1, threshold=50.0))  # unanswered: ignored
    thresholds = form_report(questions, answers, {"age": {30.0, 40.0}})["thresholds"]
    age = thresholds["by_attribute"]["age"]
    assert (age["n_seen"], age["n_unseen"]) == (60, 60)
    assert age["seen"] == 1.0 and np.isnan(age["unseen"])  # no subject above 71: one class, no AUC
    assert thresholds["attributes_compared"] == 0 and np.isnan(thresholds["difference"])


def test_the_training_split_s_thresholds_are_read_per_attribute():
    train = pd.DataFrame({"paradigm": ["judgment", "judgment", "predictive", "judgment"],
                          "attribute": ["age", "age", "age", "adhd"], "threshold": [30.0, 41.0, np.nan, np.nan]})
    assert named_thresholds(train) == {"age": {30.0, 41.0}}
    assert named_thresholds(train.drop(columns="threshold")) == {} and named_thresholds(None) == {}

