"""The readout diagnostic on a tiny model whose evidence token reads its attribute heads."""

import numpy as np
import pytest

from bench.readout import readout_diagnostic
from evaluation.data import load_evaluation_data
from processing import FCNProcessor
from tests.conftest import make_tiny_model, make_tokenizer
from tests.evaluation.conftest import write_instruction_folder


def _pair(attribute_evidence=True):
    processor = FCNProcessor(make_tokenizer())
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=attribute_evidence)
    return model, FCNProcessor.from_model_config(processor.tokenizer, model.config)


def test_reports_answer_and_head_auc_and_the_evidence_share(tmp_path):
    data = load_evaluation_data(write_instruction_folder(tmp_path / "data", n_train=12, n_zero_shot=24))
    model, processor = _pair()
    report = readout_diagnostic(model, processor, data, ["adhd"], subjects=24)
    row = report["attributes"]["adhd"]
    assert row["n"] > 4 and 0 <= row["auc_answer"] <= 1 and 0 <= row["auc_head"] <= 1
    assert np.isfinite(row["spearman"]) and row["margin_sd"] > 0
    assert report["margin_corr_without_evidence"] < 1.0  # the live evidence token moves the margins
    assert model.model.instruction_conditioning.out.weight.abs().sum() > 0  # the model itself is untouched


def test_bad_input_names_the_problem(tmp_path):
    data = load_evaluation_data(write_instruction_folder(tmp_path / "data", n_train=12, n_zero_shot=8))
    with pytest.raises(ValueError, match="instruction_evidence='attributes'"):
        readout_diagnostic(*_pair(attribute_evidence=False), data, ["adhd"])
    with pytest.raises(ValueError, match=r"No attribute head for \['autism'\]"):
        readout_diagnostic(*_pair(), data, ["autism"])
