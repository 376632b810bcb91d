"""Instruction rows -> Questions (choices, references, thresholds, directions) and baseline answers."""

import numpy as np
import pandas as pd
import pytest

from datasets_scripts.attributes import load_registry
from fcn_llm.questions import baseline_answer, build_question, question_text

REGISTRY = load_registry()


def _row(paradigm, key, question, answer, subject_ids=("s1",)):
    graphs = "<graph>\n" * len(subject_ids)
    return pd.Series({"id": "q1", "paradigm": paradigm, "attribute": key, "answer": answer,
                      "subject_ids": list(subject_ids),
                      "messages": [{"role": "user", "content": graphs + question},
                                   {"role": "assistant", "content": answer}]})


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
    assert score == pytest.approx(np.log(0.2 / 0.8)) and pred == 0  # the asked class's log-odds


def test_answer_outside_the_allowed_answers_is_an_error():
    with pytest.raises(ValueError, match="not one of the allowed answers"):
        build_question(_row("judgment", "adhd", "Does this subject have ADHD?", "Maybe"), REGISTRY["adhd"])


def test_unknown_paradigm_is_an_error():
    with pytest.raises(ValueError, match="unknown paradigm"):
        build_question(_row("freeform", "adhd", "Tell me.", "Yes"), REGISTRY["adhd"])


# --------------------------------------------------------------------------------------------------
# Rows that record their form and meaning (template_id, held_out, threshold, asked_class, negated, direction)
# --------------------------------------------------------------------------------------------------
def _form_row(paradigm, key, question, answer, subject_ids=("s1",), **columns):
    row = _row(paradigm, key, question, answer, subject_ids)
    defaults = {"template_id": f"{key}/{paradigm}/custom/-/none", "held_out": False, "threshold": np.nan,
                "asked_class": None, "negated": False, "direction": 1}
    return pd.concat([row, pd.Series({**defaults, **columns})])


def test_build_question_reads_the_threshold_of_words_no_template_matches():
    age = REGISTRY["age"]
    text = "Tell me whether this participant has lived through more than 42 winters."
    assert not any(_match_template(t, text) for t in age.templates["judgment"])
    q = build_question(_form_row("judgment", "age", text, "Yes", threshold=42.0, held_out=True), age)
    assert (q.threshold, q.direction, q.negated, q.held_out) == (42.0, 1, False, True)
    assert q.template_id == "age/judgment/custom/-/none" and q.reference == 1.0
    with pytest.raises(ValueError, match="matches none of the registry's judgment templates"):
        build_question(_row("judgment", "age", text, "Yes"), age)  # without the columns: the regex, which fails


def _match_template(template, text):
    from fcn_llm.questions import _template_regex
    return _template_regex(template).search(text)


def test_reversed_and_negated_judgments_turn_the_baselines_score():
    age, adhd, hand = REGISTRY["age"], REGISTRY["adhd"], REGISTRY["handedness"]
    younger = build_question(_form_row("judgment", "age", "Is this subject younger than 40 years?", "Yes",
                                       threshold=40.0, direction=-1), age)
    assert younger.direction == -1 and baseline_answer(younger, np.array([30.0])) == (10.0, 1)
    assert baseline_answer(younger, np.array([50.0])) == (-10.0, 0)
    not_older = build_question(_form_row("judgment", "age", "Is it false that this subject is older than 40 years?",
                                         "Yes", threshold=40.0, negated=True), age)
    assert baseline_answer(not_older, np.array([30.0])) == (10.0, 1)
    ruled_out = build_question(_form_row("judgment", "adhd", "Can ADHD be ruled out for this participant?", "No",
                                         negated=True), adhd)
    assert ruled_out.negated and ruled_out.reference == 0.0
    assert baseline_answer(ruled_out, np.array([0.8])) == (pytest.approx(-np.log(4.0)), 0)
    assert baseline_answer(ruled_out, np.array([0.2])) == (pytest.approx(np.log(4.0)), 1)
    not_left = build_question(_form_row("judgment", "handedness", "Is this subject not a left-hander?", "Yes",
                                        asked_class="Left", negated=True), hand)
    assert not_left.class_index == 1
    score, pred = baseline_answer(not_left, np.array([[0.7, 0.1, 0.2]]))
    assert score == pytest.approx(-np.log(0.1 / 0.9)) and pred == 1  # minus the asked class's log-odds


def test_build_question_reads_the_asked_class_and_the_comparative_direction():
    hand, adhd = REGISTRY["handedness"], REGISTRY["adhd"]
    q = build_question(_form_row("judgment", "handedness", "Would you call this subject a southpaw?", "No",
                                 asked_class="Left"), hand)
    assert q.class_index == 1 and q.reference == 0.0
    less = build_question(_form_row("comparative", "adhd", "Which of the two subjects is less likely to have ADHD, "
                                    "the first or the second?", "The first", ("a", "b"), direction=-1), adhd)
    assert less.direction == -1 and baseline_answer(less, np.array([0.2, 0.9]))[1] == 1
    with pytest.raises(ValueError, match="asked class 'Both'"):
        build_question(_form_row("judgment", "handedness", "Is it both?", "No", asked_class="Both"), hand)
    with pytest.raises(ValueError, match="direction"):
        build_question(_form_row("comparative", "adhd", "Which?", "The first", ("a", "b"), direction=0), adhd)


def test_a_threshold_outside_the_valid_range_names_attribute_value_and_range():
    age = REGISTRY["age"]
    with pytest.raises(ValueError, match=r"threshold 250 for attribute 'age' is outside its valid range \[3, 100\] years"):
        build_question(_form_row("judgment", "age", "Is this subject older than 250 years?", "No", threshold=250.0), age)
    with pytest.raises(ValueError, match=r"threshold 250 for attribute 'age' is outside its valid range"):
        build_question(_row("judgment", "age", age.templates["judgment"][0].format(threshold="250"), "No"), age)
    with pytest.raises(ValueError, match="threshold column is empty"):
        build_question(_form_row("judgment", "age", "Is this subject older than 40 years?", "No"), age)


def test_built_questions_answered_from_the_true_values_are_all_right():
    """Every bank question (all three splits' wordings), answered by `baseline_answer` from the subjects' true
    values, gets its reference: thresholds, classes, directions and negations are read as the builder meant."""
    from datasets_scripts.instructions import build_instruction_set

    rng = np.random.default_rng(0)
    n = 120
    meta = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "dataset": "A", "site": "a1",
                         "age": np.round(rng.uniform(8, 70, n), 1), "adhd": (rng.random(n) < 0.4).astype(float),
                         "handedness": rng.choice(["Right", "Left", "Ambidextrous"], n)})
    truth = {key: dict(zip(meta["subject_id"], meta[key])) for key in ("age", "adhd", "handedness")}
    classes = REGISTRY["handedness"].classes
    rows = pd.DataFrame(build_instruction_set(meta, "zero_shot", REGISTRY, rng).records)
    checked = 0
    for _, row in rows[rows["paradigm"] != "predictive"].iterrows():
        attr = REGISTRY[row["attribute"]]
        q = build_question(row, attr)
        values = [truth[attr.key][s] for s in q.subject_ids]
        if attr.kind == "categorical":
            values = [np.eye(len(classes))[classes.index(v)] for v in values]
        score, prediction = baseline_answer(q, np.array(values, dtype=float))
        assert prediction == q.reference, (row["template_id"], row["messages"][0]["content"], row["answer"])
        checked += 1
    assert checked > 500 and rows["negated"].any() and (rows["direction"] == -1).any()


def test_plain_and_negated_judgments_pooled_rank_on_one_scale():
    """A perfect baseline keeps AUC 1 over plain and negated questions together (scores are log-odds)."""
    from sklearn.metrics import roc_auc_score

    adhd = REGISTRY["adhd"]
    scores, refs = [], []
    for i, p in enumerate(np.linspace(0.05, 0.95, 20)):
        has = p > 0.5
        negated = i % 2 == 1
        row = _row("judgment", "adhd", "Can ADHD be ruled out?" if negated else "Does this subject have ADHD?",
                   "Yes" if has != negated else "No")
        row["negated"] = negated
        q = build_question(row, adhd)
        scores.append(baseline_answer(q, np.array([p]))[0])
        refs.append(q.reference)
    assert roc_auc_score(refs, scores) == 1.0


def test_the_example_question_is_the_text_after_the_graphs():
    pair = [{"role": "user", "content": "Subject 1: <graph>\nSubject 2: <graph>\nWhich subject is older?"}]
    assert question_text(pair) == "Which subject is older?"
    assert question_text([{"role": "user", "content": "Is this subject older than 40?\n<graph>"}]) == \
        "Is this subject older than 40?"
