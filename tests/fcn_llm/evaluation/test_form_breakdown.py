"""FCN-LLM's judgments split into plain vs turned forms and seen vs unseen thresholds."""

import numpy as np
import pandas as pd
import pytest

from fcn_llm.evaluation.data import named_thresholds
from fcn_llm.evaluation.form_breakdown import form_report
from fcn_llm.evaluation.report import write_markdown
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



def test_held_out_wording_is_broken_down_into_the_parts_never_trained(tmp_path):
    """A held-out frame read the wrong way round shows up as that frame's drop; a held-out term read well does not."""
    rng = np.random.default_rng(1)
    questions, answers = [], {}
    forms = [("older/term0/answer", False, 1.0), ("younger/term0/answer", False, 1.0),
             ("passed/term0/answer", True, 1.0), ("under/term0/answer", True, -1.0),  # "under" read as "over"
             ("older/held_term0/answer", True, 1.0), ("older/term0/one_word", True, 1.0),
             ("under/held_term0/one_word", True, -1.0)]  # new in three parts: blames none of them
    for i in range(700):
        form, held_out, reading = forms[i % len(forms)]
        direction = -1 if form.split("/")[0] in ("younger", "under") else 1
        truth = int(rng.random() < 0.5)  # older than the threshold
        q = Question(id=f"q{i}", group=("age", "judgment"), target="binary",
                     messages=[{"role": "user", "content": f"<graph>\n{form} {i}?"}], subject_ids=(f"s{i}",),
                     choices=("Yes", "No"), reference=truth if direction == 1 else 1 - truth, direction=direction,
                     threshold=30.0, held_out=held_out, template_id=f"age/judgment/{form}")
        evidence = (truth - 0.5) * direction * reading + rng.normal(0, 0.3)
        answers[q.id] = {"score": evidence, "prediction": int(evidence > 0)}
        questions.append(q)
    parts = form_report(questions, answers, {})["held_out_parts"]
    by_part = {entry["part"]: entry for entry in parts}
    assert set(by_part) == {"frame passed", "frame under", "term held_term0", "instruction one_word"}
    assert parts[0]["part"] == "frame under" and parts[0]["value"] < 0.1 and parts[0]["difference"] < -0.8
    assert by_part["frame passed"]["value"] > 0.9 and abs(by_part["frame passed"]["difference"]) < 0.1
    assert by_part["term held_term0"]["n"] == by_part["frame under"]["n"] == 100  # not the 100 new in three parts
    assert by_part["frame under"]["attribute"] == "age"
    assert by_part["frame under"]["n_training"] == 200 and by_part["instruction one_word"]["n_training"] == 100
    assert by_part["frame under"]["example"].startswith("under/term0/answer")
    assert all(e["training_value"] > 0.9 and e["metric"] == "auc" and e["paradigm"] == "judgment" for e in parts)
    text = write_markdown({"results": {}, "forms": form_report(questions, answers, {})}, tmp_path / "r.md").read_text()
    assert "## Held-out wording by part (FCN-LLM)" in text
    line = next(line for line in text.splitlines() if line.startswith("- age/judgment frame under: auc 0.0"))
    assert line.endswith("(n 100), e.g. 'under/term0/answer 3?'")


def test_a_held_out_term_that_misroutes_estimates_shows_up_in_their_pearson_r():
    rng = np.random.default_rng(2)
    questions, answers = [], {}
    for i in range(200):
        held_out = i % 2 == 1
        form = "whats/held_term0/none" if held_out else "whats/term0/none"
        age = float(rng.uniform(10, 70))
        q = Question(id=f"q{i}", group=("age", "predictive"), target="regression",
                     messages=[{"role": "user", "content": f"<graph>\n{form}?"}], subject_ids=(f"s{i}",), choices=(),
                     reference=age, held_out=held_out, template_id=f"age/predictive/{form}")
        estimate = float(rng.uniform(10, 70)) if held_out else age + rng.normal(0, 5)  # the new term: another head
        answers[q.id] = {"score": estimate, "prediction": estimate, "text": f"{estimate:.0f}"}
        questions.append(q)
    few = [q for q in questions if not q.held_out] + [q for q in questions if q.held_out][:19]
    assert form_report(few, answers, {})["held_out_parts"] == []  # 19 questions: below MIN_PART_QUESTIONS
    (entry,) = form_report(questions, answers, {})["held_out_parts"]
    assert (entry["paradigm"], entry["part"], entry["metric"], entry["n"]) == ("predictive", "term held_term0", "pearson_r", 100)
    assert entry["training_value"] > 0.9 and abs(entry["value"]) < 0.3 and entry["difference"] < -0.6



def test_a_held_out_part_is_compared_with_the_training_questions_of_the_same_form():
    """A new answer instruction asked only with a frame the model misreads anyway is not blamed for the frame."""
    rng = np.random.default_rng(3)
    questions, answers = [], {}
    forms = [("older/term0/answer", False, 1.0), ("false_younger/term0/answer", False, -1.0),
             ("false_younger/term0/one_word", True, -1.0)]
    for i in range(300):
        form, held_out, reading = forms[i % len(forms)]
        truth = int(rng.random() < 0.5)
        q = Question(id=f"q{i}", group=("age", "judgment"), target="binary", subject_ids=(f"s{i}",),
                     messages=[{"role": "user", "content": f"<graph>\n{form}?"}], choices=("Yes", "No"),
                     reference=truth, threshold=30.0, held_out=held_out,
                     template_id=f"age/judgment/{form}")
        evidence = (truth - 0.5) * reading + rng.normal(0, 0.3)
        answers[q.id] = {"score": evidence, "prediction": int(evidence > 0)}
        questions.append(q)
    (entry,) = form_report(questions, answers, {})["held_out_parts"]
    assert entry["part"] == "instruction one_word" and entry["n_training"] == 100
    assert entry["value"] < 0.1 and entry["training_value"] < 0.1 and abs(entry["difference"]) < 0.1


def test_a_held_out_frame_asked_a_few_times_per_attribute_is_scored_pooled_over_the_attributes_sharing_it(tmp_path):
    """Eight conditions, each asked a new negation 12 times (below MIN_PART_QUESTIONS): read the wrong way round
    by all of them, it is listed once, pooled, with the n-weighted metric and reference over the eight; their new
    terms (different words per attribute) are not pooled."""
    rng = np.random.default_rng(4)
    questions, answers = [], {}
    keys = ["adhd", "anxiety", "autism", "bipolar", "depression", "ocd", "ptsd", "schizophrenia"]
    forms = [("have/term0/answer", False, 1.0), ("unaffected/term0/answer", True, -1.0),
             ("have/held_term0/answer", True, -1.0)]  # each attribute's own new term: not wording they share
    for key in keys:
        for i in range(48):
            form, held_out, reading = forms[{0: 1, 1: 2}.get(i % 4, 0)]  # 12 + 12 held-out, 24 training questions
            truth = (i // 4) % 2
            q = Question(id=f"{key}{i}", group=(key, "judgment"), target="binary", subject_ids=(f"s{i}",),
                         messages=[{"role": "user", "content": f"<graph>\n{form} {key}?"}], choices=("Yes", "No"),
                         reference=truth, held_out=held_out, template_id=f"{key}/judgment/{form}")
            evidence = (truth - 0.5) * reading + rng.normal(0, 0.3)
            answers[q.id] = {"score": evidence, "prediction": int(evidence > 0)}
            questions.append(q)
    (entry,) = form_report(questions, answers, {})["held_out_parts"]
    assert entry["part"] == "frame unaffected" and entry["pooled"] == keys
    assert entry["attribute"] == "8 attributes" and entry["n"] == 96 and entry["n_training"] == 192
    assert entry["value"] < 0.1 and entry["training_value"] > 0.9 and entry["difference"] < -0.8
    assert entry["example"].startswith("unaffected/term0/answer adhd")
    text = write_markdown({"results": {}, "forms": form_report(questions, answers, {})}, tmp_path / "r.md").read_text()
    assert ("- 8 attributes/judgment frame unaffected (pooled: adhd, anxiety, autism, bipolar, depression, ocd, ptsd, "
            "schizophrenia): auc 0.0") in text
    one = [q for q in questions if q.group[0] == "adhd"]  # one attribute alone: 12 questions, nothing listed
    assert form_report(one, answers, {})["held_out_parts"] == []


def test_pooled_judgments_are_scored_together_when_each_attribute_has_one_answer_only():
    """Three questions per attribute in the new frame, all with the same answer within an attribute: no attribute
    has an AUC of its own, the pooled questions do."""
    rng = np.random.default_rng(5)
    questions, answers = [], {}
    for a in range(8):
        for i in range(24):
            held_out = i < 3
            truth = a % 2 if held_out else i % 2
            form = "unaffected/term0/answer" if held_out else "have/term0/answer"
            q = Question(id=f"a{a}q{i}", group=(f"condition{a}", "judgment"), target="binary", subject_ids=(f"s{i}",),
                         messages=[{"role": "user", "content": f"<graph>\n{form}?"}], choices=("Yes", "No"),
                         reference=truth, held_out=held_out, template_id=f"condition{a}/judgment/{form}")
            evidence = (truth - 0.5) * (-1.0 if held_out else 1.0) + rng.normal(0, 0.3)
            answers[q.id] = {"score": evidence, "prediction": int(evidence > 0)}
            questions.append(q)
    (entry,) = form_report(questions, answers, {})["held_out_parts"]
    assert entry["part"] == "frame unaffected" and entry["n"] == 24 and len(entry["pooled"]) == 8
    assert entry["value"] < 0.2 and entry["training_value"] > 0.8
