"""The timing helpers and the summary table (no timing is asserted)."""

import json
import math

import pytest

from bench import report
from bench.timing import Timing, fit_exponent, interleaved, paired_ratio


def test_interleaved_runs_round_robin_after_warmup():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert len(times["a"].times) == len(times["b"].times) == 3
    assert times["a"].as_dict()["median_ms"] >= 0


def test_paired_ratio_and_exponent():
    assert paired_ratio(Timing([2.0, 4.0, 6.0]), Timing([1.0, 2.0, 3.0])) == pytest.approx(2.0)
    assert fit_exponent([100, 200, 400], [1.0, 4.0, 16.0]) == pytest.approx(2.0)


def _details():
    stage = {"fcn_llm": {"median_ms": 1050.0}, "ratio": 1.05, "encoder_share": 0.01}
    return {"overhead": {"default": {"stage1": stage, "stage2": stage}, "tiny": {"stage1": stage, "stage2": stage}},
            "connectome": {"pearson": {"speedup": 2.0, "max_abs_difference": 1e-15},
                           "ledoit_wolf": {"speedup": 3.5, "max_abs_difference": 2e-15},
                           "gemm_floor": {"ms_per_subject": 0.4}},
            "pipeline": {"ratio": 50.0, "loader_samples_per_s": 400.0},
            "tokens": {"graph_tokens": 16, "llava_image_tokens": 576}}


def test_summary_keys_targets_and_files(tmp_path):
    summary = report.summarize(_details())
    assert summary["overhead_ratio_stage2"] == 1.05 and summary["graph_tokens"] == 16
    assert summary["connectome_max_abs_difference"] == 2e-15
    assert "eval_efficiency_vs_forward" not in summary  # its section did not run
    met = report.targets_met(summary)
    assert met["overhead_ratio_stage2"] and met["loader_to_step_ratio"] and met["connectome_speedup_ledoit_wolf"]
    assert not met["connectome_speedup_vs_nilearn"]
    table = report.markdown_table(summary)
    assert table.splitlines()[0].startswith("| key | value | target | met |")
    assert "| `connectome_speedup_vs_nilearn` | 2 | >= 10 | **no** |" in table
    files = report.write_results(tmp_path, summary, _details(), {"cpu": "test", "seconds": 1.0}, ["a note"])
    saved = json.loads(open(files["json"]).read())
    assert saved["summary"]["graph_tokens"] == 16 and saved["targets_met"]["overhead_ratio_stage2"] is True
    assert "a note" in open(files["markdown"]).read()


def test_nan_is_written_as_null(tmp_path):
    files = report.write_results(tmp_path, {"overhead_ratio_stage2": math.nan}, {}, {}, [])
    assert json.loads(open(files["json"]).read())["summary"]["overhead_ratio_stage2"] is None
