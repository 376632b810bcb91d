"""Tiny fixtures for the interpretability tests: one thread (fast on a shared CPU), tiny models and folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processing import FCNProcessor
from processing.atlases import load_atlas
from tests.conftest import make_tiny_model, make_tokenizer
from tests.fcn_llm.evaluation.conftest import write_instruction_folder




def tiny_pair(attribute_evidence: bool = False, **encoder_overrides):
    """(model, processor) of a tiny random FCN-LLM (12 ROIs unless overridden)."""
    processor = FCNProcessor(make_tokenizer())
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=attribute_evidence,
                            **encoder_overrides)
    return model, FCNProcessor.from_model_config(processor.tokenizer, model.config)


def save_pair(model, processor, folder: Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_planted_truth(root: Path, atlas_name: str = "schaefer100-7") -> Path:
    """The simulator's planted effects for `atlas_name`, written into `root/truth/` as the builder does."""
    from datasets_scripts.build_instructions import write_truth
    from datasets_scripts.simulate import SimulationConfig, planted_effects

    write_truth(Path(root), {"planted": planted_effects(SimulationConfig(atlas=atlas_name))})
    return Path(root)


def schaefer_folder(root: Path, atlas_name: str = "schaefer100-7", seed: int = 0) -> Path:
    """The tiny evaluation folder with its FCNs replaced by random `atlas_name`-sized correlation matrices and
    the simulator's planted effects recorded in it."""
    write_instruction_folder(root, n_train=24, n_zero_shot=24, seed=seed)
    n = load_atlas(atlas_name).num_rois
    rng = np.random.default_rng(seed)
    r, c = np.triu_indices(n, 1)
    for path in sorted((root / "subjects").glob("*.parquet")):
        frame = pd.read_parquet(path)
        series = rng.normal(size=(len(frame), 60, n)) + rng.normal(size=(len(frame), 60, 1))
        frame["fcn"] = [np.corrcoef(s.T)[r, c].astype(np.float16).tolist() for s in series]
        frame["atlas"], frame["num_rois"] = atlas_name, n
        frame.to_parquet(path)
    return write_planted_truth(root, atlas_name)


def schaefer_model(atlas_name: str = "schaefer100-7"):
    atlas = load_atlas(atlas_name)
    return tiny_pair(num_rois=atlas.num_rois, network_assignment=atlas.network_assignment,
                     network_names=atlas.network_names, num_roi_tokens=2)


@pytest.fixture
def pair():
    return tiny_pair()
