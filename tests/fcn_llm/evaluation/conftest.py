"""A tiny instruction-set folder (the build_instructions.py schema) and a tiny saved FCN-LLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets_scripts.attributes import load_registry
from tests.conftest import NUM_ROIS, make_tiny_model, make_tokenizer
from processing import FCNProcessor

KEYS = ("adhd", "sex", "age")


def _subjects(n: int, dataset: str, rng: np.random.Generator, shift: float) -> tuple[pd.DataFrame, np.ndarray]:
    """`n` subjects whose FCNs carry a learnable signal of adhd (edge block 0-3), sex and age."""
    adhd = (rng.random(n) < 0.4).astype(float)
    sex = np.where(rng.random(n) < 0.5, "Male", "Female")
    age = np.round(rng.uniform(8, 60, n), 1)
    series = rng.normal(size=(n, 60, NUM_ROIS))
    series[:, :, 1] += (0.9 * adhd[:, None] + shift) * series[:, :, 0]
    series[:, :, 5] += 0.8 * (sex == "Male")[:, None] * series[:, :, 6]
    series[:, :, 9] += ((age - 30) / 30)[:, None] * series[:, :, 10]
    fcns = np.stack([np.corrcoef(s.T) for s in series]).astype(np.float32)
    r, c = np.triu_indices(NUM_ROIS, 1)
    meta = pd.DataFrame({
        "subject_id": [f"{dataset}_{i:04d}" for i in range(n)], "dataset": dataset, "site": f"{dataset}_s1",
        "atlas": "tiny", "num_rois": NUM_ROIS, "fcn": [f[r, c].astype(np.float16).tolist() for f in fcns],
        "adhd": adhd, "sex": sex, "age": age,
        "oracle_adhd": 4.0 * (adhd - 0.5) + rng.normal(0, 1.0, n),
        "oracle_sex": [[0.8, 0.2] if s == "Female" else [0.25, 0.75] for s in sex],
        "oracle_age": age + rng.normal(0, 5, n),
    })
    return meta, fcns


def _instructions(meta: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    registry = load_registry()
    rows = []
    ids = meta["subject_id"].tolist()

    def add(subject_ids, paradigm, key, question, answer):
        graphs = "".join("<graph>\n" for _ in subject_ids)
        messages = [{"role": "user", "content": graphs + question}, {"role": "assistant", "content": answer}]
        rows.append({"id": f"zs-{len(rows):05d}", "messages": messages, "subject_ids": list(subject_ids),
                     "paradigm": paradigm, "attribute": key, "answer": answer,
                     "dataset": meta["dataset"].iloc[0], "site": meta["site"].iloc[0]})

    for i, sid in enumerate(ids):
        row = meta.iloc[i]
        adhd, sex, age = registry["adhd"], registry["sex"], registry["age"]
        add([sid], "predictive", "adhd", adhd.templates["predictive"][0], adhd.format_value(row["adhd"]))
        add([sid], "judgment", "adhd", adhd.templates["judgment"][i % 4], "Yes" if row["adhd"] else "No")
        add([sid], "predictive", "sex", sex.templates["predictive"][0], row["sex"])
        cls = sex.classes[i % 2]
        add([sid], "judgment", "sex", sex.templates["judgment"][0].format(phrase=sex.class_phrases[cls]),
            "Yes" if row["sex"] == cls else "No")
        add([sid], "predictive", "age", age.templates["predictive"][1], age.format_value(row["age"]))
        threshold = age.thresholds[i % len(age.thresholds)]
        add([sid], "judgment", "age", age.templates["judgment"][0].format(threshold=age.format_threshold(threshold)),
            "Yes" if row["age"] > threshold else "No")
        j = int(rng.integers(len(ids)))
        if j != i and meta["age"].iloc[j] != row["age"]:
            lower = i % 2 == 1
            template = age.templates["comparative_lower" if lower else "comparative"][0]
            first = (row["age"] < meta["age"].iloc[j]) if lower else (row["age"] > meta["age"].iloc[j])
            add([sid, ids[j]], "comparative", "age", template, "First" if first else "Second")
    return pd.DataFrame(rows)


def write_instruction_folder(root: Path, n_train: int = 60, n_zero_shot: int = 40, seed: int = 0,
                             drop_config: str | None = None, drop_column: str | None = None) -> Path:
    """Write `root` with configs `subjects` (train/validation/zero_shot) and `instructions` (zero_shot + train)."""
    rng = np.random.default_rng(seed)
    train, _ = _subjects(n_train, "seen_a", rng, 0.0)
    val, _ = _subjects(max(4, n_train // 10), "seen_a", rng, 0.0)
    val["subject_id"] = val["subject_id"].str.replace("seen_a", "seen_a_val")
    zs, _ = _subjects(n_zero_shot, "unseen_b", rng, 0.15)
    splits = {"train": train, "validation": val, "zero_shot": zs}
    instructions = {"train": _instructions(train.head(10), rng), "zero_shot": _instructions(zs, rng)}
    if drop_column:
        instructions = {k: v.drop(columns=[drop_column]) for k, v in instructions.items()}
    configs = {"subjects": splits, "instructions": instructions}
    card = ["---", "configs:"]
    for name, frames in configs.items():
        if name == drop_config:
            continue
        card += [f"- config_name: {name}", "  data_files:"]
        for split, frame in frames.items():
            path = root / name / f"{split}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path)
            card += [f"  - split: {split}", f"    path: {name}/{split}.parquet"]
    card += ["---", "", "Tiny test instruction set."]
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("\n".join(card) + "\n")
    return root


@pytest.fixture(scope="session")
def instruction_dir(tmp_path_factory) -> Path:
    return write_instruction_folder(tmp_path_factory.mktemp("instructions"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random FCN-LLM saved with its processor."""
    tokenizer = make_tokenizer()
    processor = FCNProcessor(tokenizer)
    model = make_tiny_model(processor.tokenizer)
    processor = FCNProcessor.from_model_config(processor.tokenizer, model.config)
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
