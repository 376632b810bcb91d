"""One tiny end-to-end run: results.json schema, results.md table, plots."""

import json

import numpy as np
import pytest

from fcn_llm.evaluation.report import METHODS, row_metrics
from fcn_llm.evaluation.runner import run_zero_shot_evaluation
from fcn_llm.questions import Question


@pytest.fixture(scope="module")
def run(model_dir, instruction_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    report = run_zero_shot_evaluation(model_dir, instruction_dir, out, encoder_epochs=3, batch_size=16,
                                      in_domain_fraction=0.3, log=lambda s: None)
    return out, report


def test_results_json_schema(run):
    out, report = run
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"methods", "settings", "timings", "notes", "results", "files"}
    assert set(data["results"]) == {"adhd/predictive", "adhd/judgment", "sex/predictive", "sex/judgment",
                                    "age/predictive", "age/judgment", "age/comparative"}
    for key, row in data["results"].items():
        assert {"attribute", "kind", "paradigm", "n", "metrics", "main_metric", "notes"} <= set(row)
        assert key == f"{row['attribute']}/{row['paradigm']}" and row["n"] > 0
        assert set(row["metrics"]) <= set(METHODS)
        assert {"fcn_llm", "edge_regression", "oracle"} <= set(row["metrics"])
        for metrics in row["metrics"].values():
            for name in row["main_metric"]:
                assert name in metrics
    assert data["results"]["adhd/judgment"]["kind"] == "binary"
    assert {"auc", "accuracy", "balanced_accuracy"} <= set(data["results"]["adhd/judgment"]["metrics"]["fcn_llm"])
    age = data["results"]["age/predictive"]["metrics"]["fcn_llm"]
    assert {"mae", "pearson_r", "n_unparseable"} <= set(age)  # a random model rarely writes numbers


def test_all_methods_on_the_same_questions(run):
    _, report = run
    for row in report["results"].values():
        ns = {m: v["n"] + v.get("n_missing", 0) + v.get("n_unparseable", 0) for m, v in row["metrics"].items()}
        assert set(ns.values()) == {row["n"]}, ns


def test_oracle_beats_chance_on_the_planted_signal(run):
    _, report = run
    assert report["results"]["adhd/judgment"]["metrics"]["oracle"]["auc"] > 0.8
    assert report["results"]["adhd/predictive"]["metrics"]["edge_regression"]["auc"] > 0.6


def test_markdown_table(run):
    out, report = run
    text = (out / "results.md").read_text()
    present = [m for m in METHODS if any(m in row["metrics"] for row in report["results"].values())]
    assert set(METHODS) - set(present) <= {"fcn_llm_heads"}  # the tiny model has no attribute heads
    header = "| attribute | paradigm | n | metric | chance | " + " | ".join(present) + " |"
    assert header in text
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == 1 + len(report["results"])
    assert "| ADHD | judgment |" in text and "| age | predictive |" in text and "r / MAE" in text
    assert "## Judgments by form (FCN-LLM, AUC, both wordings)" in text
    forms = json.loads((out / "results.json").read_text())["forms"]
    assert set(forms) == {"turned_vs_plain", "thresholds", "held_out_parts"}
    assert "adhd" in forms["turned_vs_plain"]["by_attribute"] and isinstance(forms["held_out_parts"], list)


def test_plots(run):
    out, report = run
    for name in ("roc_adhd_predictive.png", "roc_adhd_judgment.png", "scatter_age.png"):
        path = out / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(path) in report["files"]


def test_unknown_method(model_dir, instruction_dir, tmp_path):
    with pytest.raises(ValueError, match="Unknown method"):
        run_zero_shot_evaluation(model_dir, instruction_dir, tmp_path, methods=["gpt4"])


def test_controls_are_reported_and_text_only_cannot_tell_subjects_apart(run):
    _, report = run
    row = report["results"]["adhd/predictive"]  # one question text for every subject
    assert {"fcn_llm_shuffled", "text_only"} <= set(row["metrics"])
    assert row["metrics"]["text_only"]["auc"] == 0.5
    assert row["metrics"]["fcn_llm_shuffled"]["n"] == row["metrics"]["fcn_llm"]["n"]


def test_held_out_wording_gets_its_own_row():
    from datasets_scripts.attributes import load_registry
    from fcn_llm.questions import Question
    from fcn_llm.evaluation.report import build_results, markdown_table

    def question(i, held_out):
        return Question(id=str(i), group=("adhd", "judgment"), target="binary", choices=("Yes", "No"),
                        reference=float(i % 2), subject_ids=(f"s{i}",), held_out=held_out,
                        messages=[{"role": "user", "content": "<graph>\nADHD?"}])

    questions = [question(i, held_out=i >= 4) for i in range(8)]
    answers = {"fcn_llm": {str(i): {"score": float(i % 2) if i < 4 else 0.0, "prediction": i % 2} for i in range(8)}}
    results = build_results(questions, answers, load_registry())
    assert list(results) == ["adhd/judgment", "adhd/judgment/held_out"]
    assert results["adhd/judgment"]["forms"] == "training" and results["adhd/judgment"]["metrics"]["fcn_llm"]["auc"] == 1.0
    assert results["adhd/judgment/held_out"]["metrics"]["fcn_llm"]["auc"] == 0.5
    assert "| ADHD | judgment (held-out wording) |" in markdown_table(results)


def test_negated_and_reversed_answers_are_turned_back_so_the_wording_alone_scores_chance():
    from datasets_scripts.attributes import load_registry
    from fcn_llm.questions import Question
    from fcn_llm.evaluation.report import build_results

    questions, wording_only, perfect = [], {}, {}
    for i in range(40):
        has = i % 4 == 0  # prevalence 1/4
        negated = i % 2 == 1
        reference = float(has != negated)
        q = Question(id=str(i), group=("adhd", "judgment"), target="binary", choices=("Yes", "No"),
                     reference=reference, subject_ids=(f"s{i}",), negated=negated,
                     messages=[{"role": "user", "content": "<graph>\\nADHD?"}])
        questions.append(q)
        wording_only[q.id] = {"score": 1.0 if negated else -1.0, "prediction": int(negated)}  # "No" unless negated
        perfect[q.id] = {"score": (1.0 if has else -1.0) * (-1 if negated else 1), "prediction": int(reference)}
    results = build_results(questions, {"fcn_llm": perfect, "text_only": wording_only}, load_registry())
    metrics = results["adhd/judgment"]["metrics"]
    assert metrics["text_only"]["auc"] == 0.5 and metrics["fcn_llm"]["auc"] == 1.0


def test_class_judgments_are_also_scored_within_each_asked_class():
    """Asking "right-handed?" of right-handed-heavy subjects is mostly "Yes" whoever the subject is: a score that
    only knows the asked class gets a high pooled AUC but 0.5 within each asked class."""
    questions, answers = [], {}
    rng = np.random.default_rng(0)
    for i in range(400):
        asked = i % 2  # 0: right-handed?, 1: left-handed?
        right = rng.random() < 0.85
        yes = int(right) if asked == 0 else int(not right)
        q = Question(id=f"q{i}", group=("handedness", "judgment"), target="binary", messages=[], subject_ids=(f"s{i}",),
                     choices=("Yes", "No"), reference=yes, class_index=asked)
        answers[q.id] = {"score": 1.0 - asked + rng.normal(0, 0.1), "prediction": int(asked == 0)}  # the prior only
        questions.append(q)
    metrics = row_metrics(questions, answers)
    assert metrics["auc"] > 0.8 and abs(metrics["auc_within_asked_class"] - 0.5) < 0.1


def test_the_condition_targets_section_names_each_comparison_and_the_shuffled_control(tmp_path):
    from fcn_llm.evaluation.condition_targets import condition_targets
    from fcn_llm.evaluation.report import write_markdown

    questions, answers = [], {"fcn_llm": {}, "oracle": {}, "fcn_llm_shuffled": {}}
    rng = np.random.default_rng(0)
    for i in range(60):
        for held_out in (True, False):
            q = Question(id=f"q{i}{held_out}", group=("adhd", "judgment"), target="binary", messages=[],
                         subject_ids=(f"s{i}",), choices=("Yes", "No"), reference=i % 2, held_out=held_out)
            questions.append(q)
            answers["fcn_llm" if held_out else "fcn_llm_shuffled"][q.id] = {"score": rng.normal(), "prediction": 0}
            answers["oracle"][q.id] = {"score": float(i % 2), "prediction": i % 2}
    report = {"results": {}, "condition_targets": condition_targets(questions, answers, draws=50)}
    text = write_markdown(report, tmp_path / "results.md").read_text()
    assert "## Condition judgments against the targets (95% intervals, 50 bootstrap draws over subjects)" in text
    oracle = next(line for line in text.splitlines() if line.startswith("- vs oracle - 0.10: mean -0."))
    assert "missed; adhd -0." in oracle  # a random answer is far below the oracle
    assert "- shuffled FCNs (target: AUC within 0.05 of 0.5): mean 0." in text and "(n 60, 30 with)" in text
    assert "- subjects compared (with the condition): adhd 60 (30)" in text
    assert "Condition judgments" not in write_markdown({"results": {}}, tmp_path / "empty.md").read_text()
