"""The padding and speed sections: fractions computed right, grouping cuts padding, the keys read them."""

import json

import pytest

from bench.padding import eval_padding, padding_fraction, train_padding
from bench.report import summarize, targets_met
from bench.run import demo_timings
from fcn_llm.questions import Question


def test_padding_fraction_counts_pad_tokens():
    assert padding_fraction([4, 2, 3, 3], [[0, 1], [2, 3]]) == pytest.approx(2 / 14)
    assert padding_fraction([5, 5], [[0, 1]]) == 0.0


def test_length_grouping_pads_less_than_random_batches(setup, data):
    result = train_padding(setup, data, batch_size=4, rows=len(data.rows["train"]))
    assert result["random"] > 0.05
    assert result["group_by_length"] < result["random"]


def test_eval_padding_sorted_is_never_worse(setup, data):
    questions = []
    for i, row in enumerate(data.rows["train"]):
        choices = ("the first", "the second") if row["paradigm"] == "comparative" else ("Yes", "No")
        questions.append(Question(id=str(i), messages=[m for m in row["messages"] if m["role"] == "user"],
                                  subject_ids=tuple(row["subject_ids"]), choices=choices, target="binary",
                                  reference=0, group=(row["attribute"], row["paradigm"])))
    result = eval_padding(setup, questions, batch_size=3)
    assert result["questions"] == len(questions)
    assert result["length_sorted"] <= result["in_order"]


def test_speed_keys_read_the_main_job_setting(tmp_path):
    (tmp_path / "timings.json").write_text(json.dumps({"data": 60.0, "stage1": 540.0, "precision": {"bf16": True}}))
    details = {"speed": {
        "bf16": {"bf16_speedup_or_slowdown": 1.4, "threads": 2},
        "contention": {"threads=2,wait=default": {"slowdown": 2.8, "contended_s": 5.6},
                       "threads=2,wait=PASSIVE": {"slowdown": 1.6, "contended_s": 4.0},
                       "threads=2,wait=adaptive": {"slowdown": 1.4, "contended_s": 3.0}},
        "main_job_setting": "threads=2,wait=adaptive", "demo": demo_timings(tmp_path / "timings.json")}}
    summary = summarize(details)
    assert summary["contended_slowdown"] == 1.4 and summary["contended_slowdown_spinning"] == 2.8
    assert summary["contended_slowdown_passive"] == 1.6
    assert summary["contended_step_over_passive"] == pytest.approx(0.75)
    assert summary["demo_minutes"] == pytest.approx(10.0)
    assert targets_met(summary) == {"contended_slowdown": True, "demo_minutes": True}
    assert demo_timings(tmp_path / "missing.json")["minutes"] is None
