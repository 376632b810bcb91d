"""Questions about attributes the model was never trained on: flagged with their confidence, not scored silently."""

import json
import math

import pandas as pd
import pytest

from fcn_llm.cli import evaluate as evaluate_zero_shot
from fcn_llm.evaluation.known_attributes import answer_confidence, model_attributes, untrained_report
from fcn_llm.questions import Question
from processing import FCNProcessor
from tests.conftest import make_tiny_model, make_tokenizer
from tests.fcn_llm.evaluation.conftest import write_instruction_folder


def _q(qid, key, target="binary"):
    return Question(id=qid, group=(key, "judgment"), target=target, messages=[], subject_ids=("s",),
                    choices=("Yes", "No") if target == "binary" else ("A", "B"), reference=math.nan)


def test_confidence_is_the_chosen_answers_probability():
    questions = [_q("a", "viq"), _q("b", "viq"), _q("c", "viq", "multiclass")]
    answers = {"a": {"score": 0.0}, "b": {"score": -math.log(3)}, "c": {"score": [0.3, 0.7]}}
    assert answer_confidence(questions[:1], answers) == pytest.approx(0.5)
    assert answer_confidence(questions[1:2], answers) == pytest.approx(0.75)  # P(No) = 3/4
    assert answer_confidence(questions, answers) == pytest.approx((0.5 + 0.75 + 0.7) / 3)
    report = untrained_report(questions + [_q("d", "adhd")], answers, ["adhd", "sex"])
    assert set(report) == {"viq"} and report["viq"]["questions"] == 3
    assert untrained_report(questions, answers, None) == {}  # a model without heads says nothing


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A model with heads for adhd, sex and age, and zero-shot questions about viq as well."""
    root = tmp_path_factory.mktemp("untrained")
    data = write_instruction_folder(root / "data", n_train=30, n_zero_shot=16)
    path = data / "instructions" / "zero_shot.parquet"
    rows = pd.read_parquet(path)
    viq = rows[(rows["attribute"] == "age") & (rows["paradigm"] == "judgment")].copy()
    viq["attribute"] = "viq"
    viq["id"] = [f"viq-{i}" for i in range(len(viq))]
    viq["messages"] = [[{"role": "user", "content": "<graph>\nIs this subject's verbal IQ above 100? Answer yes or no."},
                        {"role": "assistant", "content": a}] for a in viq["answer"]]
    pd.concat([rows, viq], ignore_index=True).to_parquet(path)
    processor = FCNProcessor(make_tokenizer())
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    processor = FCNProcessor.from_model_config(processor.tokenizer, model.config)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    assert model_attributes(model) == ["adhd", "sex", "age"]
    return root / "model", data


def test_the_cli_names_the_attributes_the_model_knows(folders, tmp_path, capsys):
    model_dir, data = folders
    code = evaluate_zero_shot.main(["--model", str(model_dir), "--data", str(data), "--out", str(tmp_path),
                                    "--methods", "fcn_llm", "--no_plots", "--consistency_subjects", "3",
                                    "--parsability_questions", "10"])
    assert code == 0
    err = capsys.readouterr().err
    assert "never trained on 'viq'" in err and "the model knows: adhd, sex, age" in err
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["known_attributes"] == ["adhd", "sex", "age"]
    assert set(report["untrained_attributes"]) == {"viq"}
    assert 0.5 <= report["untrained_attributes"]["viq"]["confidence"] <= 1.0
    assert report["results"]["viq/judgment"]["trained"] is False and report["results"]["age/judgment"]["trained"]
    assert any("never trained on 'viq'" in n for n in report["notes"])
    assert "viq" not in json.dumps(report["consistency"])  # not asked of what it never learned
    assert report["consistency"]["questions"]["predictive"] == 3 * 3  # 3 subjects x adhd, sex, age
    assert report["real_data"] == {"status": "skipped", "reason": report["real_data"]["reason"]}
    assert "'tiny'" in report["real_data"]["reason"]
    assert report["parsability"]["sampled_choice_questions"] == 10
    assert "never trained on 'viq'" in (tmp_path / "results.md").read_text()
