"""bench/learning_curve.py: which zero-shot questions the curve scores."""

import pandas as pd
import pytest

from bench.learning_curve import judgment_questions


class _Data:
    """The slice of `EvaluationData` the question picker reads: subjects, their splits, instructions."""

    def __init__(self, instructions: pd.DataFrame):
        self.subjects = pd.DataFrame({"subject_id": ["a", "b", "c"], "split": ["zero_shot", "zero_shot", "train"]})
        self.instructions = instructions

    def split_rows(self, split):
        return [i for i, s in enumerate(self.subjects["split"]) if s == split]


def _rows(with_forms: bool = True) -> pd.DataFrame:
    rows = []
    for i, (sid, held_out) in enumerate([("a", False), ("b", True), ("a", True), ("c", False)]):
        question = ("<graph>\nDoes this subject have ADHD? Answer yes or no." if not held_out
                    else "<graph>\nIs an ADHD diagnosis likely for this participant? Reply yes or no.")
        answer = "Yes" if i % 2 else "No"
        row = {"id": f"r{i}", "paradigm": "judgment", "attribute": "adhd", "subject_ids": [sid], "answer": answer,
               "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
        if with_forms:
            row.update(template_id=f"adhd/judgment/{int(held_out)}", held_out=held_out, threshold=None,
                       asked_class=None, negated=False, direction=1)
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("forms, ids", [("all", ["r0", "r1", "r2"]), ("training", ["r0"]), ("held_out", ["r1", "r2"])])
def test_questions_in_the_asked_wording_about_zero_shot_subjects(forms, ids):
    questions = judgment_questions(_Data(_rows()), ["adhd"], max_subjects=10, seed=0, forms=forms)
    assert sorted(q.id for q in questions) == ids


def test_bad_forms():
    with pytest.raises(ValueError, match="Unknown forms 'held'"):
        judgment_questions(_Data(_rows()), ["adhd"], 10, 0, forms="held")
    with pytest.raises(ValueError, match="needs instructions that record their form"):
        judgment_questions(_Data(_rows(with_forms=False)), ["adhd"], 10, 0, forms="held_out")


def _curve_args():
    """The curve options `train_argv` reads (as `main` parses them)."""
    import argparse

    return argparse.Namespace(
        stage="align", data="d", train_paradigms="judgment", attributes="adhd", batch_size=8, checkpoints=[16],
        learning_rate=1e-3, auxiliary_loss_weight=0.5, balance_answers=False, stage0="s0", lora=False,
        freeze_projector=False, evidence_lr_multiplier=10.0, fit_readout="all", shared_readout=False,
        window_stride=25, backbone=None)


def test_window_runs_pass_their_windows_to_train_py_and_are_named_apart(tmp_path):
    from bench.learning_curve import run_name, train_argv
    from fcn_llm.cli import train

    args = _curve_args()
    windowed = train.parse_args(train_argv(args, "stage0", 1, tmp_path, "answer", 100))
    whole = train.parse_args(train_argv(args, "stage0", 1, tmp_path, "answer", 0))
    data_args = [a for a in windowed if hasattr(a, "window_length")][0]
    assert (data_args.window_length, data_args.window_stride) == (100, 25)
    assert [a for a in whole if hasattr(a, "window_length")][0].window_length == 0
    assert [a.output_dir for a in windowed if hasattr(a, "output_dir")] != [a.output_dir for a in whole if hasattr(a, "output_dir")]
    assert run_name("stage0", "answer", 0, ["answer"], [0]) == "stage0"
    assert run_name("stage0", "answer", 100, ["answer"], [0, 100]) == "stage0, 100-point windows"
    assert run_name("stage0", "answer", 0, ["answer"], [0, 100]) == "stage0, whole scans"


def test_answer_prior_runs_pass_the_setting_to_train_py_and_are_named_apart(tmp_path):
    from bench.learning_curve import main, run_name, train_argv
    from fcn_llm.cli import train

    args = _curve_args()
    decided, kept = (train.parse_args(train_argv(args, "stage0", 1, tmp_path, "answer", 0, prior))
                     for prior in ("removed", "llm"))
    assert [a.evidence_decides_answer for a in decided if hasattr(a, "evidence_decides_answer")] == [True]
    assert [a.evidence_decides_answer for a in kept if hasattr(a, "evidence_decides_answer")] == [False]
    assert [a.output_dir for a in decided if hasattr(a, "output_dir")] != [a.output_dir for a in kept if hasattr(a, "output_dir")]
    priors = ("removed", "llm")
    assert run_name("stage0", "answer", 0, ["answer"], [0], "removed", priors) == "stage0, the evidence decides the answer"
    assert run_name("stage0", "answer", 0, ["answer"], [0], "llm", priors) == "stage0, added to the LLM's answer margin"
    assert run_name("stage0", "answer", 0, ["answer"], [0], "removed") == "stage0"
    with pytest.raises(ValueError, match=r"Unknown answer prior\(s\) \['both'\]"):
        main(["--data", str(tmp_path), "--variants", "random", "--answer_priors", "removed,both"])
