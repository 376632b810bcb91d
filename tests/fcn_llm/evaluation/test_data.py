"""Reading an instruction-set folder; bad folders raise errors naming what is missing."""

import numpy as np
import pytest

from fcn_llm.evaluation.data import DatasetFormatError, in_domain_split, load_evaluation_data
from tests.fcn_llm.evaluation.conftest import write_instruction_folder


def test_loads_subjects_fcns_instructions_and_oracle(instruction_dir):
    data = load_evaluation_data(instruction_dir)
    assert set(data.subjects["split"]) == {"train", "validation", "zero_shot"}
    assert data.fcns.shape == (len(data.subjects), 12, 12)
    np.testing.assert_allclose(data.fcns, data.fcns.transpose(0, 2, 1))
    np.testing.assert_allclose(np.diagonal(data.fcns, axis1=1, axis2=2), 1.0)
    assert data.instructions["subject_ids"].map(len).isin([1, 2]).all()
    assert data.oracle["adhd"].shape == (len(data.subjects),) and data.oracle["sex"].shape == (len(data.subjects), 2)
    assert not any(c.startswith("oracle_") for c in data.subjects.columns)


def test_in_domain_split_is_disjoint_and_per_dataset(instruction_dir):
    data = load_evaluation_data(instruction_dir)
    train, rest = in_domain_split(data, 0.2, seed=0)
    zs = data.split_rows("zero_shot")
    assert not set(train) & set(rest) and set(train) | set(rest) == set(zs)
    assert len(train) == round(0.2 * len(zs))


def test_missing_config(tmp_path):
    folder = write_instruction_folder(tmp_path / "d", n_train=20, n_zero_shot=10, drop_config="instructions")
    with pytest.raises(DatasetFormatError, match="no 'instructions' config"):
        load_evaluation_data(folder)


def test_missing_column(tmp_path):
    folder = write_instruction_folder(tmp_path / "d", n_train=20, n_zero_shot=10, drop_column="paradigm")
    with pytest.raises(DatasetFormatError, match=r"missing column\(s\) \['paradigm'\]"):
        load_evaluation_data(folder)


def test_not_a_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no 'subjects' config"):
        load_evaluation_data(tmp_path / "empty")
    with pytest.raises(DatasetFormatError, match="is not a folder"):
        load_evaluation_data(tmp_path / "nowhere")
