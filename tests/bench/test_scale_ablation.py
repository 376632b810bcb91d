"""The encoder-alone scale ablation: configurations, scores, and a tiny end-to-end run."""

import numpy as np
import pandas as pd
import pytest

from bench import scale_ablation
from datasets_scripts.attributes import load_registry
from tests.conftest import make_tiny_model, make_tokenizer, tiny_encoder_config
from tests.fcn_llm.evaluation.conftest import write_instruction_folder


def test_with_scales_switches_token_scales_and_rejects_unknown_ones():
    base = tiny_encoder_config()
    roi_only = scale_ablation.with_scales(base, ("roi",))
    assert (roi_only.use_roi_tokens, roi_only.use_network_tokens, roi_only.use_global_token) == (True, False, False)
    assert roi_only.graph_seq_length == base.num_roi_tokens < base.graph_seq_length
    assert base.use_network_tokens  # the given configuration is untouched
    with pytest.raises(ValueError, match="subset"):
        scale_ablation.with_scales(base, ("edges",))
    with pytest.raises(ValueError, match="non-empty"):
        scale_ablation.with_scales(base, ())


def test_score_is_auc_for_conditions_and_r_for_numbers():
    registry = load_registry()
    meta = pd.DataFrame({"adhd": [0, 0, 1, 1], "age": [10.0, 20.0, 30.0, 40.0]})
    scores = scale_ablation.score({"adhd": np.array([0.1, 0.4, 0.35, 0.8]), "age": np.array([1.0, 2.0, 3.0, 5.0])},
                                  meta, [registry["adhd"], registry["age"]])
    assert scores["adhd"] == pytest.approx(0.75) and 0.95 < scores["age"] <= 1.0


def test_run_reports_every_variant_with_and_without_the_linear_stack(tmp_path):
    data = write_instruction_folder(tmp_path / "data", n_train=40, n_zero_shot=30)
    model_dir = tmp_path / "model"
    make_tiny_model(make_tokenizer()).save_pretrained(model_dir)
    results = scale_ablation.run(str(data), str(model_dir), seeds=(0,), epochs=2, log=lambda *_: None)
    assert len(results["variants"]) == 2 * len(scale_ablation.VARIANTS)
    shipped, alone = results["variants"]["all scales, heads as shipped"], results["variants"]["all scales, token heads alone"]
    assert set(shipped) == set(alone) and "adhd" in shipped and 0 <= shipped["adhd"] <= 1
    table = [line for line in scale_ablation.markdown(results).splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(results["variants"]) + 1  # header, rule, variants, oracle
    assert len({line.count("|") for line in table}) == 1  # every row has the header's columns
