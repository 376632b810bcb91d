"""Condition judgments against the baselines and the shuffled control against chance, with bootstrap intervals."""

import numpy as np
import pytest

from fcn_llm.evaluation.condition_targets import condition_targets
from fcn_llm.questions import Question


def _judgment(key, subject, reference, held_out=True, negated=False):
    """"Does this subject have <key>?" (the answer to the question as asked)."""
    return Question(id=f"{key}-{subject}-{int(held_out)}-{int(negated)}", group=(key, "judgment"), target="binary",
                    messages=[], subject_ids=(subject,), choices=("Yes", "No"), reference=reference,
                    negated=negated, held_out=held_out)


def _cohort(key, n, seed=0, negated_share=0.0):
    """`n` subjects, half with the condition, one held-out-wording judgment each: questions and their truths."""
    rng = np.random.default_rng(seed)
    questions, truths = [], []
    for i in range(n):
        truth = i % 2
        negated = rng.random() < negated_share
        questions.append(_judgment(key, f"{key}{i}", 1 - truth if negated else truth, negated=negated))
        truths.append(truth)
    return questions, np.array(truths)


def _answers(questions, evidence):
    """Answers whose score is `evidence` for the plain question (turned for a negated one)."""
    return {q.id: {"score": float(-e if q.negated else e), "prediction": 0} for q, e in zip(questions, evidence)}


def test_a_clearly_better_answer_is_met_and_a_clearly_worse_one_missed():
    questions, truth = _cohort("adhd", 400)
    rng = np.random.default_rng(1)
    answers = {"fcn_llm": _answers(questions, truth + rng.normal(0, 0.8, len(truth))),  # AUC ~0.8
               "edge_regression": _answers(questions, rng.normal(0, 1, len(truth))),  # chance
               "oracle": _answers(questions, truth + rng.normal(0, 0.01, len(truth)))}  # 1.0: the target is 0.9
    report = condition_targets(questions, answers, seed=0, draws=300)
    edge = report["comparisons"]["edge_regression"]["by_condition"]["adhd"]
    oracle = report["comparisons"]["oracle"]["by_condition"]["adhd"]
    assert edge["fcn_llm"] == pytest.approx(oracle["fcn_llm"]) and 0.7 < edge["fcn_llm"] < 0.9
    assert edge["difference"] == pytest.approx(edge["fcn_llm"] - edge["baseline"])
    assert 0 < edge["low"] < edge["difference"] < edge["high"] and edge["verdict"] == "met"
    assert oracle["baseline"] == 1.0 and report["comparisons"]["oracle"]["margin"] == 0.10
    assert oracle["difference"] == pytest.approx(oracle["fcn_llm"] - 0.9)
    assert oracle["high"] < 0 and oracle["verdict"] == "missed"
    assert "edge_regression_in_domain" not in report["comparisons"]  # not evaluated: not compared


def test_a_small_shortfall_on_few_subjects_is_within_noise_and_intervals_narrow_with_more_subjects():
    widths = {}
    for n in (40, 640):
        questions, truth = _cohort("autism", n, seed=n)
        rng = np.random.default_rng(n)
        signal = truth + rng.normal(0, 1.0, len(truth))
        answers = {"fcn_llm": _answers(questions, signal + rng.normal(0, 0.3, len(truth))),
                   "edge_regression": _answers(questions, signal)}
        entry = condition_targets(questions, answers, seed=0, draws=300)["comparisons"]["edge_regression"]
        row = entry["by_condition"]["autism"]
        widths[n] = row["high"] - row["low"]
        if n == 40:
            assert row["difference"] < 0 <= row["high"] and row["verdict"] == "within noise"
        assert entry["mean"]["difference"] == pytest.approx(row["difference"])
    assert widths[640] < widths[40] / 2.5


def test_turned_questions_count_the_plain_way_and_only_held_out_wording_is_compared():
    plain, truth = _cohort("ptsd", 200, seed=3)
    mixed, _ = _cohort("ptsd", 200, seed=3, negated_share=0.5)
    evidence = truth + np.random.default_rng(4).normal(0, 1, len(truth))
    training = [_judgment("ptsd", q.subject_ids[0], q.reference, held_out=False) for q in plain]
    perfect = {q.id: {"score": float(q.reference), "prediction": 0} for q in training}  # training wording: ignored
    results = []
    for questions in (plain, mixed):
        answers = {"fcn_llm": {**_answers(questions, evidence), **perfect},
                   "edge_regression": {**_answers(questions, truth * 0.0), **perfect}}
        results.append(condition_targets(questions + training, answers, seed=0, draws=50)
                       ["comparisons"]["edge_regression"]["by_condition"]["ptsd"])
    assert results[0]["fcn_llm"] == pytest.approx(results[1]["fcn_llm"]) and results[0]["fcn_llm"] < 0.9
    assert results[0]["baseline"] == 0.5 and (results[0]["n_subjects"], results[0]["n_with_condition"]) == (200, 100)


def test_the_shuffled_control_is_met_at_chance_and_missed_when_it_reads_the_subject():
    questions, truth = _cohort("depression", 2000)
    rng = np.random.default_rng(5)
    training = [_judgment("depression", q.subject_ids[0], q.reference, held_out=False) for q in questions]
    for evidence, verdict in ((rng.normal(0, 1, len(truth)), "met"), (truth + rng.normal(0, 1, len(truth)), "missed")):
        answers = {"fcn_llm": _answers(questions, truth), "fcn_llm_shuffled": _answers(training, evidence)}
        shuffled = condition_targets(questions + training, answers, seed=0, draws=100)["shuffled"]
        row = shuffled["by_condition"]["depression"]
        assert row["verdict"] == verdict and row["low"] <= row["auc"] <= row["high"]
        assert shuffled["mean"]["auc"] == pytest.approx(row["auc"]) and row["n_subjects"] == 2000


def test_means_over_conditions_and_unanswered_questions():
    adhd, adhd_truth = _cohort("adhd", 100, seed=6)
    ocd, ocd_truth = _cohort("ocd", 100, seed=7)
    rng = np.random.default_rng(8)
    answers = {"fcn_llm": {**_answers(adhd, adhd_truth + rng.normal(0, 1, 100)), **_answers(ocd[:60], ocd_truth[:60])},
               "edge_regression": {**_answers(adhd, rng.normal(0, 1, 100)), **_answers(ocd, ocd_truth * 0.0)}}
    report = condition_targets(adhd + ocd, answers, seed=0, draws=100)
    entry = report["comparisons"]["edge_regression"]
    assert report["conditions"] == ["adhd", "ocd"]
    assert entry["by_condition"]["ocd"]["n_subjects"] == 60  # questions FCN-LLM left unanswered are not paired
    assert entry["by_condition"]["ocd"]["n_with_condition"] == 30
    assert entry["mean"]["difference"] == pytest.approx(np.mean([r["difference"] for r in entry["by_condition"].values()]))
    assert report["shuffled"] is None  # no control evaluated


def test_nothing_to_compare_gives_none():
    questions, truth = _cohort("adhd", 20)
    continuous = Question(id="age", group=("age", "judgment"), target="binary", messages=[], subject_ids=("a",),
                          choices=("Yes", "No"), reference=1, threshold=30.0, held_out=True)
    assert condition_targets(questions, {"edge_regression": _answers(questions, truth)}) is None
    assert condition_targets([continuous], {"fcn_llm": {"age": {"score": 1.0, "prediction": 1}}}) is None
