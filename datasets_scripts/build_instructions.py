"""Build an FCN instruction dataset folder that `datasets.load_dataset(DIR, "subjects"|"instructions")` reads.

    python datasets_scripts/build_instructions.py --out DIR [--subjects N] [--atlas schaefer100-7] [--seed S] [--harmonize]
    python datasets_scripts/build_instructions.py --source timeseries --timeseries DIR --phenotypes CSV [CSV ...] \
        --mapping abide1 --atlas aal116 --out DIR [--zero-shot-sites SITE ...]
    python datasets_scripts/build_instructions.py --source braingb abide.npy --atlas cc200 --atlas-table cc200.csv --out DIR
    python datasets_scripts/build_instructions.py --source fcn-stack fcns.npz --phenotypes CSV --atlas aal116 --out DIR \
        [--zero-shot-datasets NAME ...]

Real cohorts (`load_cohort`): the time-series files are found by the public releases' names for the
atlas (ABIDE PCP ``*_rois_aal.1D``, ADHD-200 ``*_rest_1_aal_TCs.1D``) unless ``--pattern`` says;
atlases that are not bundled are described by ``--atlas-table`` (subnetworks derived from its
coordinates, or ``--networks MAPPING``). ``zero_shot`` holds whole sites (``--zero-shot-sites``) or
whole datasets (``--zero-shot-datasets``), never random subjects; without them there is no
``zero_shot`` split. The card gains the split rule, the loaded / unmatched / excluded counts and the
subnetworks, and ``DIR/atlas.csv`` holds the atlas with its network per ROI.

Layout: ``DIR/subjects/{split}.parquet`` (subject_id, dataset, site, atlas, num_rois, oracle_<key> (the
simulator's oracle scores, simulated sets only), fcn = upper
triangle without the diagonal as float16, attribute columns), ``DIR/instructions/{split}.parquet``
(id, messages, subject_ids, paradigm, attribute, answer, dataset, site, and the question's form and
meaning: template_id, held_out, threshold, asked_class, negated, direction; see `instructions.py`) and
``DIR/README.md``, a dataset card whose YAML ``configs:`` lists the files per split. Splits: ``train`` /
``validation`` (seen cohorts, split by subject) and ``zero_shot`` (unseen cohorts). Questions come from
the question bank (`question_bank.py`): ``train`` asks with training forms only, ``validation`` with
held-out forms (frames, terms, answer instructions never trained on) only, ``zero_shot`` with both
(held-out forms as extra rows). The card has the counts per
attribute, paradigm and split, the skipped missing values, and the oracle vs edge-regression vs
chance table on the zero-shot split (the builder checks that no baseline beats the oracle beyond
sampling noise and says so in the card). ``--harmonize`` removes site effects from the seen cohorts
with ComBat (`harmonize.py`): learned on ``train``, applied to ``validation``; ``zero_shot`` (unseen
sites) is never touched. ``--keep-timeseries`` (simulated and time-series sources) also writes
``DIR/timeseries/train.parquet``, the training subjects' ROI time series for sliding-window FCNs
(`timeseries_store.py`; not with ``--harmonize``, whose FCNs no raw window matches).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from datasets_scripts.attributes import AttributeRegistry, load_registry
from datasets_scripts.instructions import build_instruction_set
from datasets_scripts.subjects import REQUIRED_COLUMNS, SubjectTable
from datasets_scripts.timeseries_store import TIMESERIES_CONFIG, TIMESERIES_SPLIT, write_timeseries
from processing.atlases import Atlas, available_atlases, load_atlas, read_atlas_table

SPLITS = ("train", "validation", "zero_shot")
# comparative pairs per attribute as a fraction of its subjects: `zero_shot` puts each subject in about four
# pairs, so that an evaluation of a sample of its subjects (a comparison needs both) still has pairs to score
COMPARATIVE_PER_SUBJECT = {"train": 0.5, "validation": 0.5, "zero_shot": 2.0}
DEFAULT_SUBJECTS = 1500
HARMONIZE_COVARIATES = ("age", "sex")  # biological covariates whose effects ComBat keeps, when the cohort has them


class EmptyInstructionSetError(ValueError):
    """A subject table with no usable attribute values."""


# --------------------------------------------------------------------------------------------------
# Checks and splits
# --------------------------------------------------------------------------------------------------
def check_table(table: SubjectTable, atlas_name: str | Atlas, registry: AttributeRegistry) -> None:
    """FCN size vs atlas (a bundled atlas' name or an `Atlas`), attribute keys vs registry, and values vs
    attribute kinds."""
    atlas = atlas_name if isinstance(atlas_name, Atlas) else load_atlas(atlas_name)
    if table.num_rois != atlas.num_rois:
        raise ValueError(f"FCNs have N={table.num_rois} ROIs but atlas {atlas.name!r} has N={atlas.num_rois} ROIs.")
    for key in table.attribute_columns():
        attr = registry[key]  # unknown columns raise, naming the allowed keys
        for sid, value in zip(table.meta["subject_id"], table.meta[key]):
            attr.check_value(value, where=f"subject {sid!r}")


def assign_splits(meta: pd.DataFrame, zero_shot_datasets: list[str], validation_fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    """`(S,)` split name per subject: zero_shot for unseen cohorts, else train/validation by subject."""
    split = np.where(meta["dataset"].isin(zero_shot_datasets), "zero_shot", "train").astype(object)
    seen = np.flatnonzero(split == "train")
    n_val = int(round(validation_fraction * len(seen)))
    split[rng.permutation(seen)[:n_val]] = "validation"
    return split


def check_disjoint(ids_per_split: dict[str, list[str]]) -> None:
    """Raise if a subject id appears in more than one split."""
    seen: dict[str, str] = {}
    for split, ids in ids_per_split.items():
        for sid in ids:
            if sid in seen and seen[sid] != split:
                raise ValueError(f"Subject id {sid!r} is in both the {seen[sid]!r} and {split!r} splits; "
                                 "a subject must never be in two splits.")
            seen[sid] = split


# --------------------------------------------------------------------------------------------------
# Site harmonisation (optional)
# --------------------------------------------------------------------------------------------------
def site_batches(meta: pd.DataFrame) -> np.ndarray:
    """ComBat batch per subject: ``dataset/site`` (two cohorts may name a site alike)."""
    return (meta["dataset"].astype(str) + "/" + meta["site"].astype(str)).to_numpy()


def harmonize_splits(table: SubjectTable, split: np.ndarray, registry: AttributeRegistry) -> tuple[SubjectTable, dict]:
    """ComBat on the seen cohorts: learned on `train` by site (keeping age/sex effects where present),
    the same model applied to `validation`; `zero_shot` rows (unseen sites) are returned unchanged."""
    from datasets_scripts.harmonize import HarmonizationWarning, apply_harmonization, harmonize_fcns

    learn, apply = split == "train", split == "validation"
    if not learn.any():
        raise ValueError("--harmonize needs a `train` split to learn the site effects from; this build has none.")
    batches = site_batches(table.meta)
    orphans = sorted(set(batches[apply]) - set(batches[learn]))
    if orphans:
        raise ValueError(f"--harmonize: validation subjects come from site(s) {orphans} that have no train subjects, "
                         "so their site effect cannot be learned; simulate/load more subjects or lower "
                         "--validation-fraction.")
    candidates = [c for c in HARMONIZE_COVARIATES if c in table.meta.columns]
    covariates = pd.DataFrame({c: [np.nan if registry[c].is_missing(v) else v for v in table.meta[c]]
                               for c in candidates})
    dropped = {}
    for c in candidates:  # a covariate must be known for every subject it is learned on or applied to
        n_missing = int(covariates[c][apply].isna().sum())
        if n_missing and not covariates[c][learn].isna().any():
            dropped[c] = f"{n_missing} validation subjects have no value"
    for c, why in dropped.items():
        warnings.warn(f"--harmonize: covariate {c!r} dropped: {why}.", HarmonizationWarning, stacklevel=2)
    columns = [c for c in candidates if c not in dropped]
    fcns = table.fcns.copy()
    fcns[learn], model = harmonize_fcns(table.fcns[learn], batches[learn],
                                        covariates[learn].reset_index(drop=True), columns=columns)
    if apply.any():
        fcns[apply] = apply_harmonization(table.fcns[apply], batches[apply],
                                          covariates[apply].reset_index(drop=True), model)
    summary = {**model.summary(), "dropped_covariates": {**dropped, **model.dropped},
               "learned_on": "train", "applied_to": ["validation"] if apply.any() else [],
               "untouched": [s for s in SPLITS if s not in ("train", "validation") and (split == s).any()]}
    return SubjectTable(fcns, table.meta, table.info), summary


def _harmonization_section(harmonization: dict | None) -> list[str]:
    if harmonization is None:
        return ["## Site harmonisation", "", "Not harmonised: the FCNs are as simulated/loaded (`--harmonize` "
                "removes the seen cohorts' site effects with ComBat).", ""]
    h = harmonization
    dropped = "; ".join(f"`{c}` ({why})" for c, why in h["dropped_covariates"].items()) or "none"
    applied = " and applied to " + ", ".join(f"`{s}`" for s in h["applied_to"]) if h["applied_to"] else ""
    untouched = ", ".join(f"`{s}`" for s in h["untouched"])
    untouched = (f"; {untouched} (unseen cohorts and sites) not harmonised: its FCNs are exactly as "
                 "simulated/loaded" if untouched else "")
    return ["## Site harmonisation", "",
            f"ComBat (neuroHarmonize, empirical Bayes, `datasets_scripts/harmonize.py`) on the Fisher-z "
            f"upper-triangle edges, batches = `dataset/site`: learned on `{h['learned_on']}` "
            f"({len(h['sites'])} sites){applied + ' (the same model, same sites)' if applied else ''}{untouched}. "
            "Harmonised FCNs keep their diagonal and are symmetric with entries in (-1, 1), but are not "
            "guaranteed positive semi-definite.", "",
            f"Covariates whose effects were preserved: {', '.join(f'`{c}`' for c in h['covariates']) or 'none'}. "
            f"Dropped: {dropped}.", ""] + (
            ["The edge model of the oracle check below was trained on harmonised `train` FCNs and scored on the "
             "unharmonised `zero_shot` ones.", ""] if "zero_shot" in h["untouched"] else [])


# --------------------------------------------------------------------------------------------------
# Baselines vs oracle
# --------------------------------------------------------------------------------------------------
@dataclass
class BaselineRow:
    attribute: str
    metric: str  # "AUC" (binary; categorical: macro one-vs-rest) or "r" (continuous)
    n: int
    oracle: float
    edge_model: float
    chance: float
    se: float  # bootstrap SE of (edge_model - oracle)
    beats_oracle: bool


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties averaged)."""
    from scipy.stats import rankdata

    positive = positive.astype(bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((rankdata(score)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _metric(kind: str, y: np.ndarray, score: np.ndarray, classes=None) -> float:
    roc_auc_score = _auc
    if kind == "continuous":
        return float(np.corrcoef(y.astype(float), score)[0, 1]) if np.std(score) > 0 else 0.0
    if kind == "binary":
        return float(roc_auc_score(y.astype(float), score))
    aucs = [roc_auc_score(y == c, score[:, i]) for i, c in enumerate(classes) if 0 < (y == c).sum() < len(y)]
    return float(np.mean(aucs))


def baseline_check(table: SubjectTable, split: np.ndarray, registry: AttributeRegistry,
                   max_train: int = 1000, bootstrap: int = 100, seed: int = 0) -> list[BaselineRow]:
    """Edge models (logistic / ridge regression on Fisher-z upper-triangle edges, trained on `train`)
    vs the simulator's oracle on `zero_shot`, per attribute with enough data."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    scores = table.info.get("oracle_scores", {})
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(table.num_rois, 1)
    rows = []
    for key in table.attribute_columns():
        if key not in scores:
            continue
        attr = registry[key]
        y_all = table.meta[key].to_numpy()
        present = np.array([not attr.is_missing(v) for v in y_all])
        train = np.flatnonzero(present & (split == "train"))
        test = np.flatnonzero(present & (split == "zero_shot"))
        if len(train) > max_train:
            train = rng.choice(train, max_train, replace=False)
        y_tr, y_te = y_all[train], y_all[test]
        if len(test) < 20 or len(set(y_tr)) < 2 or len(set(y_te)) < 2:
            continue
        edges = lambda idx: np.arctanh(np.clip(table.fcns[idx][:, iu[0], iu[1]], -0.999, 0.999))
        scaler = StandardScaler().fit(edges(train))
        x_tr, x_te = scaler.transform(edges(train)), scaler.transform(edges(test))
        classes = list(attr.classes) if attr.kind == "categorical" else None
        if attr.kind == "continuous":
            model = Ridge(alpha=x_tr.shape[1] * 10.0).fit(x_tr, y_tr.astype(float))
            edge_score = model.predict(x_te)
        else:
            model = LogisticRegression(C=1e-3, max_iter=200).fit(x_tr, y_tr.astype(float) if classes is None else y_tr)
            edge_score = model.decision_function(x_te)
            if classes is not None:
                proba = model.predict_proba(x_te)
                edge_score = np.stack([proba[:, list(model.classes_).index(c)] if c in model.classes_
                                       else np.zeros(len(x_te)) for c in classes], 1)
        oracle_score = scores[key][test]
        oracle, edge = _metric(attr.kind, y_te, oracle_score, classes), _metric(attr.kind, y_te, edge_score, classes)
        diffs = []
        for _ in range(bootstrap):
            b = rng.integers(0, len(test), len(test))
            if len(set(y_te[b])) < 2:
                continue
            diffs.append(_metric(attr.kind, y_te[b], edge_score[b], classes) - _metric(attr.kind, y_te[b], oracle_score[b], classes))
        se = float(np.std(diffs)) if diffs else float("nan")
        rows.append(BaselineRow(key, "r" if attr.kind == "continuous" else "AUC", len(test), oracle, edge,
                                0.0 if attr.kind == "continuous" else 0.5, se, bool(edge - oracle > 2 * se)))
    return rows


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def subjects_arrow(table: SubjectTable, rows: np.ndarray) -> pa.Table:
    """The `subjects` config for some rows: FCN upper triangle (no diagonal) as a float16 list."""
    n = table.num_rois
    iu = np.triu_indices(n, 1)
    tri = table.fcns[rows][:, iu[0], iu[1]].astype(np.float16)
    meta = table.meta.iloc[rows].reset_index(drop=True)
    columns = {c: pa.array(meta[c].astype(str).tolist()) for c in REQUIRED_COLUMNS}
    columns["num_rois"] = pa.array(np.full(len(rows), n, dtype=np.int32))
    columns["fcn"] = pa.FixedSizeListArray.from_arrays(pa.array(tri.ravel(), type=pa.float16()), tri.shape[1])
    for c in table.attribute_columns():
        col = meta[c]
        if col.dtype == object and not all(isinstance(v, (int, float)) or v is None for v in col):
            columns[c] = pa.array([None if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v) for v in col],
                                  type=pa.string())
        else:
            columns[c] = pa.array(pd.to_numeric(col, errors="coerce").astype(float).to_numpy(), type=pa.float64())
    for key, scores in table.info.get("oracle_scores", {}).items():
        # the simulator's oracle: binary log-odds / continuous posterior mean `(S,)`, categorical posteriors `(S, C)`
        values = np.asarray(scores, dtype=np.float64)[rows]
        if values.ndim == 1:
            columns[f"oracle_{key}"] = pa.array(values, type=pa.float64())
        else:
            columns[f"oracle_{key}"] = pa.array(values.tolist(), type=pa.list_(pa.float64()))
    return pa.table(columns)


def instructions_arrow(records: list[dict]) -> pa.Table:
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("id", pa.string()), ("messages", pa.list_(message)), ("subject_ids", pa.list_(pa.string())),
                        ("paradigm", pa.string()), ("attribute", pa.string()), ("answer", pa.string()),
                        ("dataset", pa.string()), ("site", pa.string()),
                        # the question's form and meaning (instructions.FORM_COLUMNS)
                        ("template_id", pa.string()), ("held_out", pa.bool_()), ("threshold", pa.float64()),
                        ("asked_class", pa.string()), ("negated", pa.bool_()), ("direction", pa.int8())])
    return pa.Table.from_pylist(records, schema=schema)


INSTRUCTION_COLUMNS_DOC = (
    ("template_id", "the question's form: `attribute/paradigm/frame/term/answer-instruction` (question bank)"),
    ("held_out", "the form uses a held-out frame, term or answer instruction (never in `train`)"),
    ("threshold", "continuous judgments: the value the question names; else null"),
    ("asked_class", "categorical judgments: the class the question asks about; else null"),
    ("negated", "the yes/no answer is flipped relative to the plain question (\"Can ADHD be ruled out?\")"),
    ("direction", "+1: asks for the higher value / the condition; -1: the lower value / its absence "
                  "(\"younger than\", \"less likely to have\")"),
)


def _forms_table(forms: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per split: instructions, those with held-out forms, and the distinct forms of each."""
    rows = []
    for split, frame in forms.items():
        held = frame["held_out"].astype(bool)
        rows.append({"split": split, "instructions": len(frame), "held-out form": int(held.sum()),
                     "distinct training forms": frame.loc[~held, "template_id"].nunique(),
                     "distinct held-out forms": frame.loc[held, "template_id"].nunique()})
    return pd.DataFrame(rows)


TRUTH_DIR = "truth"
TRUTH_JSON = "effects.json"
TRUTH_ARRAYS = "effects.safetensors"


def write_truth(out: Path, info: dict) -> dict | None:
    """Write the simulator's planted effects into ``out/truth/``: ``effects.json`` (per attribute its code,
    d' per component and the ROI-, block- and whole-brain components as readable lists) and
    ``effects.safetensors`` (``<attribute>.<component>``: `(E,)` float32 covariance change per unit code on
    the upper-triangle edges i < j, in `numpy.triu_indices(N, 1)` order). Returns the JSON payload, or None
    for a table without planted effects (real cohorts)."""
    from safetensors.numpy import save_file

    planted = info.get("planted")
    if not planted:
        return None
    folder = out / TRUTH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"{key}.{comp}": np.ascontiguousarray(v, dtype=np.float32)
              for key, comps in planted["edge_maps"].items() for comp, v in comps.items()}
    save_file(arrays, str(folder / TRUTH_ARRAYS))
    payload = {"atlas": planted["atlas"], "num_rois": planted["num_rois"],
               "edges": "upper triangle i < j in numpy.triu_indices(num_rois, 1) order",
               "units": "covariance change per unit code (binary/categorical: the level vs others; continuous: "
                        "(value - center) / scale)",
               "arrays": {key: sorted(comps) for key, comps in planted["edge_maps"].items()},
               "attributes": planted["attributes"]}
    (folder / TRUTH_JSON).write_text(json.dumps(payload, indent=2, default=float))
    return payload


def _truth_section(truth: dict | None) -> list[str]:
    if truth is None:
        return []
    rows = []
    for key, entry in truth["attributes"].items():
        sep = entry["separability"]
        roi = "; ".join(f"{r['region']} -> {'all' if len(r['targets']) == 7 else '/'.join(r['targets'])} "
                        f"({r['weight']:+.1f})" for r in entry.get("roi", []))
        blocks = "; ".join(f"{a}-{b} ({w:+.1f})" for a, b, w, _ in entry.get("blocks", []))
        whole = "; ".join(f"{t} ({w:+.1f})" for t, w in entry.get("whole_brain", {}).items())
        rows.append({"attribute": key, "ROI level": roi or "-", "d' ROI": f"{sep.get('roi', 0):.2f}",
                     "block level": blocks or "-", "d' block": f"{sep.get('blocks', 0):.2f}",
                     "whole-brain level": whole or "-", "d' whole-brain": f"{sep.get('whole_brain', 0):.2f}"})
    return ["## Planted effects (ground truth)", "",
            f"The simulator's effects, also in `{TRUTH_DIR}/{TRUTH_JSON}` (readable) and `{TRUTH_DIR}/{TRUTH_ARRAYS}` "
            "(`<attribute>.<component>`: covariance change per unit code on the upper-triangle edges). d' is each "
            "component's separability in SDs of subject variability per unit code (before the global effect scale); "
            "attributes not listed have no effect.", "", _markdown_table(pd.DataFrame(rows)), ""]


def _realism_section(table: SubjectTable, split: np.ndarray, atlas: Atlas, rng: np.random.Generator,
                     per_split: int = 200) -> list[str]:
    from datasets_scripts.realism import realism_tables

    groups = {}
    for s in ("train", "zero_shot"):
        rows = np.flatnonzero(split == s)
        if len(rows):
            pick = np.sort(rng.choice(rows, min(per_split, len(rows)), replace=False))
            groups[f"{s} (n={len(pick)})"] = table.fcns[pick]
    if not groups:
        return []
    dist, edges = realism_tables(groups, atlas.name, atlas.coords)
    return ["## Realism: distance profile and edge values next to real HCP FCNs", "",
            "Mean FC (r) by inter-ROI distance (MNI centroids of the atlas), this dataset's FCNs (a random sample per "
            "split) beside the real individual HCP FCNs of the same parcellation (brainspace):", "",
            _markdown_table(dist), "", "Edge values (upper-triangle r):", "", _markdown_table(edges), ""]


def _yaml_configs(splits: list[str], timeseries: bool = False) -> str:
    lines = ["---", "configs:"]
    configs = {"subjects": splits, "instructions": splits, **({TIMESERIES_CONFIG: [TIMESERIES_SPLIT]} if timeseries else {})}
    for config, config_splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {config}/{s}.parquet" for s in config_splits]
    lines += ["license: apache-2.0", "task_categories:", "- text-generation", "tags:", "- fmri", "- connectivity",
              "- synthetic", "---"]
    return "\n".join(lines)


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(out)


def dataset_card(summary: dict, counts: pd.DataFrame, skipped: pd.DataFrame, baselines: list[BaselineRow],
                 harmonization: dict | None = None, truth: dict | None = None, realism: list[str] | None = None) -> str:
    timeseries = summary.get("timeseries")
    parts = [_yaml_configs(summary["splits"], timeseries is not None), "", "# FCN instruction dataset", "",
             f"Built by `datasets_scripts/build_instructions.py` from {summary['source']} "
             f"({summary['subjects']} subjects, atlas `{summary['atlas']}`, {summary['num_rois']} ROIs, seed {summary['seed']}).",
             "", "```python", "import datasets",
             "subjects = datasets.load_dataset(DIR, \"subjects\")       # FCN upper triangles (float16) + attributes",
             "instructions = datasets.load_dataset(DIR, \"instructions\")  # chat messages with <graph> placeholders",
             "```", "",
             "Splits: `train` / `validation` are seen cohorts split by subject; `zero_shot` holds unseen cohorts "
             f"({', '.join(summary['zero_shot_datasets']) or 'none'}): other template group, unseen scanners, "
             "other scan lengths, noise, ages and prevalences. No subject is in two splits.", "",
             "## Subjects per split and dataset", "", _markdown_table(summary["subjects_table"]), "",
             "## Instructions per attribute, paradigm and split", "", _markdown_table(counts), ""]
    if summary.get("forms_table") is not None:
        parts += ["## Question forms", "",
                  "Questions are composed from the question bank (`datasets_scripts/question_bank.py`: frames x "
                  "attribute terms x answer instructions, with negated and reversed forms). A fixed part of the bank "
                  "is held out (whole frames, terms and answer instructions): `train` asks with training forms only, "
                  "`validation` with held-out forms only, `zero_shot` with both (each subject's questions once in "
                  "training wording and, as extra rows, once in held-out wording), so generalisation to new wording "
                  "is measured on every evaluation. Comparative pairs: half as many as subjects in `train` and "
                  "`validation` (each subject in at most one pair per attribute), twice as many in `zero_shot` (each "
                  "subject in about four, so that a sample of its subjects still holds pairs). Continuous judgments "
                  "name thresholds drawn uniformly between the split's 10th and 90th percentiles of the attribute; "
                  "`train` never names a held-out threshold (a fixed fifth of each attribute's values, "
                  "`question_bank.threshold_held_out`), so `validation` and `zero_shot` ask about thresholds never "
                  "seen in training.", "",
                  _markdown_table(summary["forms_table"]), "",
                  "Columns that say what each instruction asks:", "",
                  *[f"- `{name}`: {text}" for name, text in INSTRUCTION_COLUMNS_DOC], ""]
    if timeseries is not None:
        low, high = timeseries["timepoints"]
        parts += ["## Time series (for sliding-window FCNs)", "",
                  f"The `{TIMESERIES_CONFIG}` config holds the ROI time series of {timeseries['subjects']} `train` "
                  f"subjects ({low}-{high} time points, z-scored per ROI, float16, {timeseries['megabytes']:.1f} MB), "
                  "from which `train.py --window_length L --window_stride S` draws one window FCN per instruction. "
                  "Validation and zero-shot subjects are read as whole-scan FCNs only.", ""]
    parts += ["## Skipped values", "",
              "A missing attribute value is skipped for that subject (never imputed); comparative pairs with "
              "equal values are not formed.", "", _markdown_table(skipped), ""]
    parts += _harmonization_section(harmonization)
    if baselines:
        table = pd.DataFrame([{"attribute": b.attribute, "metric": b.metric, "n (zero_shot)": b.n,
                               "oracle": f"{b.oracle:.3f}", "edge model": f"{b.edge_model:.3f}",
                               "chance": f"{b.chance:.1f}", "SE of difference": f"{b.se:.3f}",
                               "edge beats oracle (> 2 SE)": "YES" if b.beats_oracle else "no"} for b in baselines])
        verdict = ("**Check failed**: a baseline beats the oracle beyond sampling noise (see the last column)."
                   if any(b.beats_oracle for b in baselines) else
                   "Check passed: no edge model beats the oracle beyond sampling noise (2 bootstrap SE).")
        parts += ["## Oracle vs edge model vs chance (zero_shot split)", "",
                  "Oracle: the posterior of each attribute under the simulator's own generative model "
                  "(Laplace-approximated likelihood ratio of the subject's FCN, marginalising subject, site-known "
                  "and other-attribute variability; see `datasets_scripts/oracle.py`). Edge model: logistic "
                  "(binary/categorical, C=1e-3) or ridge (continuous) regression on standardised Fisher-z "
                  f"upper-triangle edges, trained on up to {summary['check_train']} `train` subjects. AUC for "
                  "binary (categorical: macro one-vs-rest), Pearson r for continuous attributes.", "",
                  _markdown_table(table), "", verdict, ""]
    parts += _truth_section(truth)
    parts += realism or []
    parts += ["## Build", "", f"Build time {summary['build_seconds']:.1f} s ({json.dumps(summary['timings'])}).", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    out: Path
    counts: pd.DataFrame
    baselines: list[BaselineRow]
    seconds: float
    timings: dict = field(default_factory=dict)
    harmonization: dict | None = None  # what --harmonize did (sites, covariates kept/dropped, splits), else None


def build(out: str | Path, table: SubjectTable, atlas: str | Atlas, seed: int = 0, validation_fraction: float = 0.15,
          registry: AttributeRegistry | None = None, check_train: int = 1000,
          split: np.ndarray | None = None, harmonize: bool = False) -> BuildResult:
    """Write the dataset folder for a subject table (simulated or real); `harmonize`: ComBat on the
    seen cohorts' sites (see `harmonize_splits`); `atlas`: a bundled atlas' name or an `Atlas` (e.g.
    from `read_atlas_table`)."""
    t0 = time.perf_counter()
    registry = registry or load_registry()
    check_table(table, atlas, registry)
    atlas_object = atlas if isinstance(atlas, Atlas) else load_atlas(atlas)
    atlas = atlas_object.name
    attrs = table.attribute_columns()
    usable = [a for a in attrs if any(not registry[a].is_missing(v) for v in table.meta[a])]
    if not usable:
        raise EmptyInstructionSetError(
            f"No instructions can be built: the {len(table)} subjects have no attribute values "
            f"(attribute columns: {attrs or 'none'}). Add phenotype columns named by registry keys "
            f"({', '.join(registry)}).")
    rng = np.random.default_rng(seed)
    if split is None:
        split = assign_splits(table.meta, table.info.get("zero_shot_datasets", []), validation_fraction, rng)
    splits = [s for s in SPLITS if (split == s).any()]
    check_disjoint({s: table.meta["subject_id"][split == s].tolist() for s in splits})
    harmonization, t_h = None, time.perf_counter()
    if harmonize:  # uses no random numbers: the splits and instructions are those of the plain build
        with threadpool_limits(1):
            table, harmonization = harmonize_splits(table, split, registry)
    t_h = time.perf_counter() - t_h
    out = Path(out)
    (out / "subjects").mkdir(parents=True, exist_ok=True)
    (out / "instructions").mkdir(parents=True, exist_ok=True)
    counts, skipped, forms = [], [], {}
    for s in splits:
        rows = np.flatnonzero(split == s)
        pq.write_table(subjects_arrow(table, rows), out / "subjects" / f"{s}.parquet")
        inst = build_instruction_set(table.meta.iloc[rows].reset_index(drop=True), s, registry, rng,
                                     comparative_per_subject=COMPARATIVE_PER_SUBJECT[s])
        pq.write_table(instructions_arrow(inst.records), out / "instructions" / f"{s}.parquet")
        frame = pd.DataFrame(inst.records, columns=["attribute", "paradigm"])
        counts.append(frame.value_counts().rename(s))
        forms[s] = pd.DataFrame(inst.records, columns=["template_id", "held_out"])
        skipped.append(pd.Series(inst.skipped_missing, dtype=int).rename(f"{s}: missing"))
        skipped.append(pd.Series(inst.skipped_ties, dtype=int).rename(f"{s}: comparative ties"))
    count_table = pd.concat(counts, axis=1).fillna(0).astype(int).reindex(
        pd.MultiIndex.from_product([attrs, ["predictive", "judgment", "comparative"]])).dropna(how="all")
    count_table = count_table.fillna(0).astype(int)
    count_table = count_table.assign(total=count_table.to_numpy().sum(1)).reset_index().rename(columns={"level_0": "attribute", "level_1": "paradigm"})
    skip_table = pd.concat(skipped, axis=1).reindex(attrs).fillna(0).astype(int).reset_index(names="attribute")
    t1 = time.perf_counter()
    with threadpool_limits(1):
        baselines = baseline_check(table, split, registry, max_train=check_train, seed=seed) if "zero_shot" in splits else []
    timings = {**{f"simulate_{k}": round(v, 2) for k, v in table.info.get("timings", {}).items()},
               **({"harmonize": round(t_h, 2)} if harmonize else {}),
               "write": round(t1 - t0 - t_h, 2), "baseline_check": round(time.perf_counter() - t1, 2)}
    seconds = time.perf_counter() - t0 + table.info.get("timings", {}).get("total", 0.0)
    summary = {"splits": splits, "source": table.info.get("source", "a subject table"), "subjects": len(table),
               "atlas": atlas, "num_rois": table.num_rois, "seed": seed,
               "zero_shot_datasets": table.info.get("zero_shot_datasets", []), "check_train": check_train,
               "subjects_table": pd.crosstab(table.meta["dataset"], split).reset_index(),
               "build_seconds": seconds, "timings": timings, "forms_table": _forms_table(forms)}
    if table.timeseries is not None:
        rows = np.flatnonzero(split == TIMESERIES_SPLIT)
        summary["timeseries"] = write_timeseries(out, table.meta["subject_id"].iloc[rows].astype(str).tolist(),
                                                 [table.timeseries[i] for i in rows])
    truth = write_truth(out, table.info)
    realism = _realism_section(table, split, atlas_object, np.random.default_rng(seed))
    (out / "README.md").write_text(dataset_card(summary, count_table, skip_table, baselines, harmonization, truth,
                                                 realism))
    return BuildResult(out, count_table, baselines, seconds, timings, harmonization)


# --------------------------------------------------------------------------------------------------
# Real cohorts: atlas, loading, held-out split, card sections
# --------------------------------------------------------------------------------------------------
SOURCES = ("simulate", "timeseries", "braingb", "fcn-stack")


def resolve_atlas(name: str, table: str | Path | None = None, networks: str | Path | None = None) -> Atlas:
    """The atlas of a build: a user's table (`table`), else a bundled atlas; `networks` as in `load_atlas`."""
    if table is not None:
        return read_atlas_table(table, name=name.lower(), networks=networks)
    if name.lower().replace("_", "-") in available_atlases():
        return load_atlas(name, networks)
    raise ValueError(
        f"Atlas {name!r} is not bundled (bundled: {', '.join(available_atlases())}). Describe it with "
        "--atlas-table FILE: one row per ROI in the files' column order, columns region, x, y, z (MNI mm) and "
        "optionally structure (cortical/subcortical/cerebellum) and network; without coordinates also give "
        "--networks MAPPING (region,network).")


def held_out_split(meta: pd.DataFrame, zero_shot_sites=(), zero_shot_datasets=(), validation_fraction: float = 0.15,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, str]:
    """`(S,)` split per subject and the rule in words: whole sites (``SITE`` or ``DATASET/SITE``, case
    ignored) and whole datasets go to ``zero_shot``; the other subjects are split by subject into
    ``train`` / ``validation``. Raises ValueError naming a site or dataset the cohort lacks, with the
    ones it has, or a hold-out that leaves no training subject."""
    rng = rng or np.random.default_rng(0)
    sites = meta["site"].astype(str).str.casefold().to_numpy()
    dataset_sites = (meta["dataset"].astype(str) + "/" + meta["site"].astype(str)).str.casefold().to_numpy()
    datasets = meta["dataset"].astype(str).str.casefold().to_numpy()
    held = np.zeros(len(meta), dtype=bool)
    for names, keys, what, known in (
            (zero_shot_sites, (sites, dataset_sites), "site", sorted(set(meta["site"].astype(str)))),
            (zero_shot_datasets, (datasets,), "dataset", sorted(set(meta["dataset"].astype(str))))):
        unknown = []
        for name in names:
            hit = np.logical_or.reduce([k == str(name).casefold() for k in keys])
            if not hit.any():
                unknown.append(str(name))
            held |= hit
        if unknown:
            raise ValueError(f"--zero-shot-{what}s names {what}(s) {unknown} that the cohort does not have; its "
                             f"{what}s: {known}.")
    if held.all():
        raise ValueError(f"The held-out sites/datasets hold all {len(meta)} subjects: no training subject is left.")
    split = np.where(held, "zero_shot", "train").astype(object)
    seen = np.flatnonzero(~held)
    split[rng.permutation(seen)[:int(round(validation_fraction * len(seen)))]] = "validation"
    units = [f"site {n}" for n in zero_shot_sites] + [f"dataset {n}" for n in zero_shot_datasets]
    if units:
        rule = (f"`zero_shot` holds whole sites/datasets never seen in training ({', '.join(units)}: "
                f"{int(held.sum())} subjects); the other {len(seen)} subjects are split by subject into `train` and "
                f"`validation` ({validation_fraction:.0%}). No subject is held out at random for `zero_shot`.")
    else:
        rule = (f"No site or dataset held out (--zero-shot-sites / --zero-shot-datasets), so there is no `zero_shot` "
                f"split; the {len(seen)} subjects are split by subject into `train` and `validation` "
                f"({validation_fraction:.0%}).")
    return split, rule


def load_cohort(args: argparse.Namespace, atlas: Atlas) -> SubjectTable:
    """The subject table of a real cohort source (`args.source` timeseries, braingb, fcn-stack)."""
    from datasets_scripts.loaders import load_braingb, load_fcn_stack, load_timeseries_folder
    from datasets_scripts.load_timeseries_folder import release_pattern

    path = args.path
    if path is None:
        raise ValueError(f"--source {args.source} needs its input: --source {args.source} PATH"
                         + (" or --timeseries DIR" if args.source == "timeseries" else "") + ".")
    phenotypes = [Path(p) for p in args.phenotypes] if args.phenotypes else None
    common = {"atlas": atlas.name, "num_rois": atlas.num_rois, "dataset": args.dataset}
    if args.source == "timeseries":
        release, pattern = ("--pattern", args.pattern) if args.pattern else release_pattern(path, atlas.name)
        table = load_timeseries_folder(path, phenotypes, args.mapping, pattern=pattern, kind=args.connectivity,
                                       fisher_z=args.fisher_z, min_timepoints=args.min_timepoints, **common)
        description = f"ROI time series in `{path}` (files `{pattern}`: {release})"
    elif args.source == "braingb":
        codes = json.loads(args.label_codes) if args.label_codes else None
        table = load_braingb(path, args.label_attribute, label_codes=codes, use_timeseries=args.use_timeseries,
                             kind=args.connectivity, fisher_z=args.fisher_z, min_timepoints=args.min_timepoints,
                             **common)
        description = f"the BrainGB/BNT file `{path}` (label -> `{args.label_attribute}`)"
    else:
        table = load_fcn_stack(path, phenotypes[0] if phenotypes else None, args.mapping, **common)
        description = f"the FCN stack `{path}`"
    if phenotypes:
        description += " with phenotypes " + ", ".join(f"`{p.name}`" for p in phenotypes)
    if args.mapping:
        description += f" (mapping `{args.mapping}`)"
    table.info["loader"] = table.info.pop("source", {})
    table.info["source"] = description
    return table


def cohort_card_section(table: SubjectTable, atlas: Atlas, rule: str) -> str:
    """The card's account of a real cohort: the split rule, what was loaded and skipped, the subnetworks."""
    info = table.info
    counts = info.get("counts", {})
    lines = ["## Split rule", "", rule, "", "## Cohort: loaded and skipped", "",
             "| step | count |", "|---|---|", *[f"| {k.replace('_', ' ')} | {v} |" for k, v in counts.items()], ""]
    unmatched = {k: v for k, v in info.get("unmatched", {}).items() if (v if isinstance(v, int) else len(v))}
    if unmatched:
        lines += ["Not matched (skipped):", ""]
        for what, items in unmatched.items():
            n = items if isinstance(items, int) else len(items)
            example = "" if isinstance(items, int) else f" (e.g. {', '.join(f'`{x}`' for x in list(items)[:5])})"
            lines.append(f"- {what.replace('_', ' ')}: {n}{example}")
        lines.append("")
    excluded = info.get("excluded", {})
    if excluded:
        lines += ["Excluded subjects per site and reason:", "", "| site | reason | subjects |", "|---|---|---|"]
        lines += [f"| {site} | {reason} | {n} |" for site, reasons in sorted(excluded.items())
                  for reason, n in sorted(reasons.items())]
        lines.append("")
    else:
        lines += ["No subject was excluded for its data (too short, constant ROIs, NaN).", ""]
    sizes = pd.Series([atlas.network_names[i] for i in atlas.network_assignment]).value_counts()
    lines += ["## Atlas and subnetworks", "",
              f"Atlas `{atlas.name}` ({atlas.num_rois} ROIs), {atlas.num_networks} subnetworks from "
              f"{atlas.network_source}; the assignment is in `atlas.csv` (region, x, y, z, structure, network).", "",
              "| network | ROIs |", "|---|---|", *[f"| {n} | {int(sizes[n])} |" for n in atlas.network_names], ""]
    return "\n".join(lines)


def write_atlas_table(path: Path, atlas: Atlas) -> None:
    """The atlas with its subnetworks as a CSV (region, x, y, z, structure, network), one row per ROI."""
    pd.DataFrame({"region": atlas.labels, "x": atlas.coords[:, 0], "y": atlas.coords[:, 1], "z": atlas.coords[:, 2],
                  "structure": atlas.structures or [""] * atlas.num_rois,
                  "network": [atlas.network_names[i] for i in atlas.network_assignment]}).to_csv(path, index=False)


def add_card_section(out: Path, section: str) -> None:
    """Insert a section into the written card, before its ``## Build`` section."""
    card = (out / "README.md").read_text()
    marker = "\n## Build\n"
    card = card.replace(marker, "\n" + section + marker, 1) if marker in card else card + "\n" + section
    (out / "README.md").write_text(card)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--source", nargs="+", default=["simulate"], metavar=("KIND", "PATH"),
                        help=f"where the subjects come from: {', '.join(SOURCES)}; the real sources take their input "
                             "path: timeseries DIR, braingb FILE (.npy dict / .npz), fcn-stack FILE (.npy / .npz)")
    parser.add_argument("--timeseries", help="the folder of ROI time-series files (--source timeseries)")
    parser.add_argument("--phenotypes", nargs="+", help="phenotype table(s) (CSV/TSV; several are stacked)")
    parser.add_argument("--mapping", help="phenotype mapping: abide1, adhd200 or a JSON file; default: the table "
                                          "already uses the attribute keys (subject_id, site, age, sex, ...)")
    parser.add_argument("--atlas", default="schaefer100-7",
                        help="atlas name: bundled (schaefer100-7, aal116, power264, ...) or the name of --atlas-table")
    parser.add_argument("--atlas-table", help="table of an atlas that is not bundled (e.g. cc200): region, x, y, z "
                                              "[, structure, network], one row per ROI in the files' column order")
    parser.add_argument("--networks", help="subnetworks: yeo7 / yeo17 (derived from coordinates) or a mapping file "
                                           "(region,network); default: the atlas' own labels, else yeo7")
    parser.add_argument("--pattern", help="glob of the time-series files; default: the public release names for the "
                                          "atlas (ABIDE PCP *_rois_aal.1D, ADHD-200 *_rest_1_aal_TCs.1D), else all")
    parser.add_argument("--dataset", help="cohort name (default: the mapping's, else the file's name)")
    parser.add_argument("--zero-shot-sites", nargs="+", default=[], metavar="SITE",
                        help="whole sites held out as the zero_shot split (SITE or DATASET/SITE)")
    parser.add_argument("--zero-shot-datasets", nargs="+", default=[], metavar="DATASET",
                        help="whole datasets held out as the zero_shot split")
    parser.add_argument("--label-attribute", default="autism", help="braingb: the attribute its 'label' array holds")
    parser.add_argument("--label-codes", help='braingb: JSON of label -> value, e.g. \'{"0": 1, "1": 0}\'')
    parser.add_argument("--use-timeseries", action="store_true", help="braingb: FCNs from its time series")
    parser.add_argument("--connectivity", default="correlation", help="FCN kind computed from time series")
    parser.add_argument("--fisher-z", action="store_true", help="Fisher-z FCNs computed from time series")
    parser.add_argument("--min-timepoints", type=int, default=20, help="shorter time series exclude their subject")
    parser.add_argument("--subjects", type=int, default=DEFAULT_SUBJECTS, help="simulated subjects")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.15)
    parser.add_argument("--check-train", type=int, default=1000, help="train subjects for the edge-model check")
    parser.add_argument("--harmonize", action="store_true",
                        help="ComBat site harmonisation (neuroHarmonize) of the seen cohorts: learned on train, "
                             "applied to validation; zero_shot untouched")
    parser.add_argument("--keep-timeseries", action="store_true",
                        help="store the train subjects' ROI time series (config 'timeseries') for sliding-window FCNs "
                             "in training (train.py --window_length); simulated and time-series sources")
    args = parser.parse_args(argv)
    kind, *rest = args.source
    if kind not in SOURCES or len(rest) > 1:
        parser.error(f"--source takes one of {', '.join(SOURCES)} and, for a real source, its path; got {args.source}.")
    args.source, args.path = kind, Path(rest[0]) if rest else (Path(args.timeseries) if args.timeseries else None)
    if args.keep_timeseries and kind not in ("simulate", "timeseries"):
        parser.error(f"--keep-timeseries needs the subjects' time series: --source simulate or timeseries, not {kind}.")
    if args.keep_timeseries and args.harmonize:
        parser.error("--keep-timeseries with --harmonize: windows of the raw time series would bypass the ComBat "
                     "harmonisation of the FCNs; drop one of them.")
    if args.keep_timeseries and (args.connectivity != "correlation" or args.fisher_z):
        parser.error("--keep-timeseries: window FCNs are Pearson correlations, so the FCNs must be too "
                     "(--connectivity correlation, without --fisher-z).")
    if kind == "simulate" and (args.path or args.phenotypes or args.atlas_table):
        parser.error("--timeseries / --phenotypes / --atlas-table / a path are for the real sources "
                     "(--source timeseries|braingb|fcn-stack).")
    return args


def main(argv: list[str] | None = None) -> BuildResult:
    args = parse_args(argv)
    zero_shot = args.zero_shot_sites or args.zero_shot_datasets
    if args.source == "simulate":
        from datasets_scripts.simulate import SimulationConfig, simulate

        atlas, table = args.atlas, simulate(SimulationConfig(subjects=args.subjects, atlas=args.atlas, seed=args.seed,
                                                               keep_timeseries=args.keep_timeseries))
        split = rule = None
        if zero_shot:
            split, rule = held_out_split(table.meta, args.zero_shot_sites, args.zero_shot_datasets,
                                         args.validation_fraction, np.random.default_rng(args.seed))
            table.info["zero_shot_datasets"] = [*args.zero_shot_datasets, *args.zero_shot_sites]
    else:
        atlas = resolve_atlas(args.atlas, args.atlas_table, args.networks)
        table = load_cohort(args, atlas)
        if not args.keep_timeseries:
            table.timeseries = None
        split, rule = held_out_split(table.meta, args.zero_shot_sites, args.zero_shot_datasets,
                                     args.validation_fraction, np.random.default_rng(args.seed))
        table.info["zero_shot_datasets"] = [*args.zero_shot_datasets, *args.zero_shot_sites]
    result = build(args.out, table, atlas, args.seed, args.validation_fraction, check_train=args.check_train,
                   split=split, harmonize=args.harmonize)
    if isinstance(atlas, Atlas):
        write_atlas_table(Path(args.out) / "atlas.csv", atlas)
        add_card_section(Path(args.out), cohort_card_section(table, atlas, rule))
    elif rule is not None:
        add_card_section(Path(args.out), "\n".join(["## Split rule", "", rule, ""]))
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"Wrote {args.out}: {len(table)} subjects, {int(result.counts['total'].sum())} instructions, "
          f"{size / 1e6:.1f} MB, {result.seconds:.1f} s.")
    if result.harmonization is not None:
        h = result.harmonization
        print(f"Harmonised (ComBat) {' + '.join([h['learned_on'], *h['applied_to']])} over {len(h['sites'])} sites, "
              f"keeping {', '.join(h['covariates']) or 'no covariates'}; zero_shot untouched.")
    failed = [b.attribute for b in result.baselines if b.beats_oracle]
    if failed:
        print(f"WARNING: an edge model beats the oracle beyond sampling noise for: {', '.join(failed)}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
