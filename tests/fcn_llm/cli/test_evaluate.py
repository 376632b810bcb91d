"""The evaluate_zero_shot.py command line: a tiny run, and clear errors on bad folders."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from fcn_llm.cli import evaluate as evaluate_zero_shot
from fcn_llm.evaluation.model_io import ModelFormatError, load_model_and_processor
from tests.fcn_llm.evaluation.conftest import instruction_dir, model_dir  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[3]


def test_cli_tiny_run(model_dir, instruction_dir, tmp_path, capsys):  # noqa: F811
    code = evaluate_zero_shot.main(["--model", str(model_dir), "--data", str(instruction_dir), "--out",
                                    str(tmp_path), "--max_subjects", "12", "--batch_size", "4",
                                    "--methods", "fcn_llm", "edge_regression", "oracle"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| attribute | paradigm |" in printed
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["settings"]["evaluated_subjects"] == 12
    assert data["methods"] == ["fcn_llm", "edge_regression", "oracle"]


def test_cli_rejects_a_model_of_another_type(instruction_dir, tmp_path, capsys):  # noqa: F811
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    code = evaluate_zero_shot.main(["--model", str(tmp_path / "gpt2"), "--data", str(instruction_dir),
                                    "--out", str(tmp_path / "out")])
    assert code == 2
    assert "type 'gpt2', not an FCN-LLM" in capsys.readouterr().err


def test_model_folder_errors(tmp_path):
    with pytest.raises(ModelFormatError, match="is not a folder"):
        load_model_and_processor(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match="no config.json"):
        load_model_and_processor(tmp_path / "empty")


def test_cli_rejects_a_folder_without_configs(model_dir, tmp_path, capsys):  # noqa: F811
    (tmp_path / "data").mkdir()
    code = evaluate_zero_shot.main(["--model", str(model_dir), "--data", str(tmp_path / "data"),
                                    "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no 'subjects' config" in capsys.readouterr().err


def test_cli_help_runs_as_a_script():
    result = subprocess.run([sys.executable, str(ROOT / "evaluate_zero_shot.py"), "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "--max_subjects" in result.stdout
