import collections
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from datasets_scripts.attributes import load_registry
from datasets_scripts.loading import load_config
from datasets_scripts import build_instructions as bi
from datasets_scripts.graph_lookup import GraphLookup
from datasets_scripts.subjects import SubjectTable

ROOT = Path(__file__).resolve().parents[2]


def _table(n=12, num_rois=100, **columns):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 60, num_rois))
    fcns = np.stack([np.corrcoef(xi.T) for xi in x]).astype(np.float32)
    meta = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "dataset": ["A"] * (n // 2) + ["B"] * (n - n // 2),
                         "site": ["a1"] * n, "atlas": "schaefer100-7", **columns})
    return SubjectTable(fcns, meta)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    result = bi.main(["--out", str(out), "--subjects", "120", "--check-train", "100"])
    return out, result


def test_load_dataset_reads_both_configs(built):
    out, _ = built
    subjects = load_config(out, "subjects")
    instructions = load_config(out, "instructions")
    assert set(subjects) == set(instructions) == {"train", "validation", "zero_shot"}
    row = subjects["train"][0]
    assert row["num_rois"] == 100 and len(row["fcn"]) == 4950
    inst = instructions["train"][0]
    assert inst["messages"][0]["role"] == "user" and inst["messages"][0]["content"].count("<graph>") == len(inst["subject_ids"])
    assert inst["messages"][1] == {"role": "assistant", "content": inst["answer"]}


def test_splits_are_disjoint_and_zero_shot_is_unseen(built):
    out, _ = built
    subjects = load_config(out, "subjects")
    ids = {s: set(subjects[s]["subject_id"]) for s in subjects}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["zero_shot"]
    assert not set(subjects["zero_shot"]["dataset"]) & set(subjects["train"]["dataset"])
    instructions = load_config(out, "instructions")
    for split in instructions:
        used = {sid for sids in instructions[split]["subject_ids"] for sid in sids}
        assert used <= ids[split]


def test_paradigms_and_balanced_comparatives(built):
    out, _ = built
    inst = load_config(out, "instructions")["train"]
    assert set(inst["paradigm"]) == {"predictive", "judgment", "comparative"}
    answers = collections.Counter(a for a, p in zip(inst["answer"], inst["paradigm"]) if p == "comparative")
    assert set(answers) == {"First", "Second"} and abs(answers["First"] - answers["Second"]) <= 20
    comp = [m for m, p in zip(inst["messages"], inst["paradigm"]) if p == "comparative"][0]
    assert comp[0]["content"].startswith("Subject 1: <graph>\nSubject 2: <graph>\n")
    per_subject = {}  # comparative rows about age per subject asked about age, in training wording
    for split, rows in load_config(out, "instructions").items():
        frame = rows.to_pandas()
        age = frame[(frame["attribute"] == "age") & ~frame["held_out"]]
        per_subject[split] = (age["paradigm"] == "comparative").sum() / (age["paradigm"] == "predictive").sum()
    assert per_subject["train"] <= 0.5 and 1.5 <= per_subject["zero_shot"] <= 2.0, per_subject


def test_card_has_counts_skips_and_oracle_table(built):
    out, result = built
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "config_name: instructions" in card
    assert "## Instructions per attribute, paradigm and split" in card and "## Skipped values" in card
    assert "Oracle vs edge model vs chance" in card
    assert result.baselines and all(np.isfinite(b.oracle) for b in result.baselines)


def test_lookup_from_folder_matches_stored_fcn(built):
    out, _ = built
    lookup = GraphLookup.from_folder(out)
    sid = load_config(out, "instructions")["validation"][0]["subject_ids"][0]
    fcn = lookup[sid]
    assert fcn.shape == (100, 100) and torch.all(torch.diagonal(fcn) == 1)


def test_missing_values_are_skipped_and_counted(tmp_path):
    table = _table(age=[np.nan, 30.0, 40.0, 50.0, np.nan, 20.0, 31.0, 41.0, 51.0, 61.0, 22.0, 33.0])
    result = bi.build(tmp_path, table, "schaefer100-7", split=np.array(["train"] * 12, dtype=object))
    card = (tmp_path / "README.md").read_text()
    assert "| age | 2 |" in card  # two subjects skipped
    inst = load_config(tmp_path, "instructions")["train"]
    assert not {"s0", "s4"} & {sid for sids in inst["subject_ids"] for sid in sids}


def test_fcn_of_wrong_size_names_both_sizes(tmp_path):
    table = _table(num_rois=20, age=[30.0] * 12)
    with pytest.raises(ValueError, match="N=20 ROIs but atlas 'schaefer100-7' has N=100"):
        bi.build(tmp_path, table, "schaefer100-7")


def test_subject_in_two_splits_is_an_error():
    with pytest.raises(ValueError, match="'s3' is in both the 'train' and 'zero_shot' splits"):
        bi.check_disjoint({"train": ["s1", "s3"], "zero_shot": ["s3"]})


def test_unknown_attribute_names_the_allowed_keys(tmp_path):
    table = _table(iq=[100.0] * 12)
    with pytest.raises(KeyError, match="'iq'.*allowed attribute keys: age, sex"):
        bi.build(tmp_path, table, "schaefer100-7")


def test_bad_categorical_value_names_allowed_classes(tmp_path):
    table = _table(sex=["F"] * 12)
    with pytest.raises(ValueError, match=r"'F' is not one of the allowed classes \['Female', 'Male'\]"):
        bi.build(tmp_path, table, "schaefer100-7")


def test_no_attributes_gives_a_clear_message(tmp_path):
    with pytest.raises(bi.EmptyInstructionSetError, match="no attribute values"):
        bi.build(tmp_path, _table(), "schaefer100-7")
    with pytest.raises(bi.EmptyInstructionSetError):
        bi.build(tmp_path, _table(age=[np.nan] * 12), "schaefer100-7")


def test_script_mode_runs(tmp_path):
    proc = subprocess.run([sys.executable, "datasets_scripts/build_instructions.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--subjects" in proc.stdout


def test_instructions_record_their_form_and_the_splits_use_their_forms(built):
    out, _ = built
    instructions = load_config(out, "instructions")
    for split in instructions:
        columns = set(instructions[split].column_names)
        assert {"template_id", "held_out", "threshold", "asked_class", "negated", "direction"} <= columns
    train, val, zs = (instructions[s].to_pandas() for s in ("train", "validation", "zero_shot"))
    assert not train["held_out"].any() and val["held_out"].all()
    assert zs["held_out"].any() and (~zs["held_out"]).any()
    assert not set(train["template_id"]) & (set(val["template_id"]) | set(zs.loc[zs["held_out"], "template_id"]))
    judged = train[train["paradigm"] == "judgment"]
    continuous = judged["attribute"].map(lambda k: load_registry()[k].kind == "continuous")
    assert judged.loc[continuous, "threshold"].notna().all() and judged.loc[~continuous, "threshold"].isna().all()
    assert judged.loc[judged["attribute"] == "sex", "asked_class"].isin(["Female", "Male"]).all()
    assert set(train["direction"]) == {1, -1} and train["negated"].any()
    assert set(train.loc[train["paradigm"] == "judgment", "answer"]) == {"Yes", "No"}
    card = (out / "README.md").read_text()
    assert "## Question forms" in card and "`template_id`" in card and "`negated`" in card


def test_written_rows_are_read_back_as_the_builder_meant(built):
    """The parquet rows (nullable strings, NaN thresholds, int8 directions) -> Questions whose baseline answers
    from the subjects' true values are all right."""
    from fcn_llm.questions import baseline_answer, build_question

    out, _ = built
    registry = load_registry()
    subjects = pd.concat([pd.read_parquet(out / "subjects" / f"{s}.parquet") for s in ("train", "zero_shot")])
    subjects = subjects.set_index("subject_id")
    checked = 0
    for split in ("train", "zero_shot"):
        rows = pd.read_parquet(out / "instructions" / f"{split}.parquet")
        for _, row in rows[rows["paradigm"] != "predictive"].iterrows():
            attr = registry[row["attribute"]]
            q = build_question(row, attr)
            values = [subjects.loc[s, attr.key] for s in q.subject_ids]
            if attr.kind == "categorical":
                values = [np.eye(len(attr.classes))[list(attr.classes).index(v)] for v in values]
            assert baseline_answer(q, np.array(values, dtype=float))[1] == q.reference, row["template_id"]
            assert q.template_id == row["template_id"] and q.held_out == bool(row["held_out"])
            checked += 1
    assert checked > 1000


def test_planted_truth_travels_with_the_data(built):
    import json

    from safetensors.numpy import load_file

    out, _ = built
    meta = json.loads((out / "truth" / "effects.json").read_text())
    arrays = load_file(str(out / "truth" / "effects.safetensors"))
    edges = 100 * 99 // 2
    assert meta["atlas"] == "schaefer100-7" and meta["arrays"]["autism"] == ["blocks", "roi"]
    assert arrays["autism.roi"].shape == (edges,) and np.abs(arrays["autism.roi"]).max() > 0
    assert meta["attributes"]["autism"]["roi"][0]["region"] == "7Networks_RH_SalVentAttn_FrOperIns_1"
    assert meta["attributes"]["sex"]["whole_brain"] == {"distributed": 1.0} and "sex.whole_brain" in arrays
    assert "handedness" not in meta["arrays"]  # no planted effect
    card = (out / "README.md").read_text()
    assert "## Planted effects (ground truth)" in card and "7Networks_LH_Limbic_OFC_1 -> Default" in card


def test_card_shows_realism_next_to_real_hcp_fcns(built):
    out, _ = built
    card = (out / "README.md").read_text()
    section = card.split("## Realism")[1].split("\n## ")[0]
    assert "0-20 mm" in section and "real HCP individuals (schaefer_100, n=3)" in section
    assert "all real HCP individuals (8 parcellations, n=24)" in section and "q50" in section


def test_real_cohort_table_writes_no_truth(tmp_path):
    bi.build(tmp_path, _table(n=12, age=np.linspace(20, 40, 12)), "schaefer100-7")
    assert not (tmp_path / "truth").exists() and "## Planted effects" not in (tmp_path / "README.md").read_text()
