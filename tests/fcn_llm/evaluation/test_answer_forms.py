"""Whether generated answers are in the asked form: the parser, the report and the sample."""

import math

import pytest

from datasets_scripts.attributes import load_registry
from fcn_llm.evaluation.answer_forms import parse_answer, parse_choice, parsability_report, sample_questions
from fcn_llm.questions import Question

REGISTRY = load_registry()


def _question(qid, key, paradigm, target, choices=(), held_out=False):
    return Question(id=qid, group=(key, paradigm), target=target, messages=[], subject_ids=("s",),
                    choices=tuple(choices), reference=math.nan, held_out=held_out)


@pytest.mark.parametrize("text, choices, expected", [
    ("Yes", ("Yes", "No"), 0), (" no.", ("Yes", "No"), 1), ("Yes, clearly.", ("Yes", "No"), 0),
    ("Not sure", ("Yes", "No"), None), ("", ("Yes", "No"), None), ("Maybe", ("Yes", "No"), None),
    ("The first subject", ("The first", "The second"), 0), ("second", ("The first", "The second"), 1),
    ("Right-handed", ("Right", "Left", "Ambidextrous"), 0), ("Lefty", ("Right", "Left", "Ambidextrous"), None),
])
def test_a_choice_is_read_alone_or_before_a_non_letter(text, choices, expected):
    assert parse_choice(text, choices) == expected


def test_numbers_outside_the_valid_range_do_not_parse():
    age = _question("q", "age", "predictive", "regression")
    assert parse_answer(age, "34", REGISTRY["age"]) == 34.0
    assert parse_answer(age, "About 27 years", REGISTRY["age"]) == 27.0
    assert parse_answer(age, "150", REGISTRY["age"]) is None  # valid range [3, 100]
    assert parse_answer(age, "2", REGISTRY["age"]) is None
    assert parse_answer(age, "young", REGISTRY["age"]) is None


def test_report_counts_per_paradigm_wording_and_row():
    questions = [_question("a", "age", "predictive", "regression"),
                 _question("b", "age", "predictive", "regression", held_out=True),
                 _question("c", "adhd", "judgment", "binary", ("Yes", "No")),
                 _question("d", "adhd", "judgment", "binary", ("Yes", "No"), held_out=True),
                 _question("e", "adhd", "judgment", "binary", ("Yes", "No"))]
    texts = {"a": "30", "b": "300", "c": "No", "d": "I cannot tell"}  # e: not generated, not counted
    report = parsability_report(questions, texts, REGISTRY)
    assert report["overall"] == {"n": 4, "parsable": 2, "rate": 0.5} and report["meets_target"] is False
    assert report["by_paradigm"]["judgment"]["rate"] == 0.5 and report["by_paradigm"]["predictive"]["rate"] == 0.5
    assert report["by_forms"] == {"held_out": {"n": 2, "parsable": 0, "rate": 0.0},
                                  "training": {"n": 2, "parsable": 2, "rate": 1.0}}
    assert report["rows"]["age/predictive/held_out"]["parsable"] == 0
    assert [e["id"] for e in report["unparsable_examples"]] == ["b", "d"]


def test_sample_spreads_over_rows():
    questions = ([_question(f"j{i}", "adhd", "judgment", "binary", ("Yes", "No")) for i in range(10)]
                 + [_question("c0", "age", "comparative", "binary", ("The first", "The second"))]
                 + [_question(f"p{i}", "sex", "predictive", "multiclass", ("Female", "Male")) for i in range(5)])
    taken = sample_questions(questions, 7, seed=1)
    rows = [q.group for q in taken]
    assert len(taken) == 7 and len({q.id for q in taken}) == 7
    assert rows.count(("age", "comparative")) == 1 and rows.count(("adhd", "judgment")) == 3
    assert rows.count(("sex", "predictive")) == 3
    assert len(sample_questions(questions, 100)) == len(questions)
