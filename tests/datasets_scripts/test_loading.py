import pytest

from datasets_scripts import build_instructions
from datasets_scripts.loading import load_config


def test_two_folders_with_the_same_name_are_not_confused(tmp_path):
    """datasets 5 keys its cache on the folder's basename: both folders below are called `data`."""
    small, large = tmp_path / "a" / "data", tmp_path / "b" / "data"
    build_instructions.main(["--out", str(small), "--subjects", "60", "--check-train", "30"])
    assert len(load_config(small, "subjects")["train"]) < 60
    build_instructions.main(["--out", str(large), "--subjects", "120", "--check-train", "30", "--seed", "1"])
    n_large = sum(len(split) for split in load_config(large, "subjects").values())
    n_small = sum(len(split) for split in load_config(small, "subjects").values())
    assert (n_small, n_large) == (60, 120)


def test_an_instruction_set_reads_both_configs_and_names_a_missing_one(tmp_path):
    from datasets_scripts.loading import DatasetFormatError, load_instruction_set
    from tests.fcn_llm.evaluation.conftest import write_instruction_folder

    subjects, instructions = load_instruction_set(write_instruction_folder(tmp_path / "d", n_train=20, n_zero_shot=10))
    assert {"train", "zero_shot"} <= set(subjects) and "zero_shot" in instructions
    assert "subject_ids" in instructions["zero_shot"].column_names
    partial = write_instruction_folder(tmp_path / "p", n_train=20, n_zero_shot=10, drop_config="instructions")
    with pytest.raises(DatasetFormatError, match=r"no 'instructions' config \(found: \['subjects'\]\)"):
        load_instruction_set(partial)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no 'subjects' config"):
        load_instruction_set(tmp_path / "empty")
