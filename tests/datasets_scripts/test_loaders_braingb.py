"""Loader (b): BrainGB / Brain Network Transformer .npy dicts (pickled, opt-in) and .npz."""

import math
from pathlib import Path

import numpy as np
import pytest

from datasets_scripts.load_braingb import load_braingb, read_braingb

N, T, S = 10, 50, 4


def _cohort(seed=0):
    rng = np.random.default_rng(seed)
    ts = rng.normal(size=(S, N, T))  # BNT layout: (S, N, T)
    return {
        "timeseires": ts,
        "corr": np.stack([np.corrcoef(x) for x in ts]),
        "pcorr": np.zeros((S, N, N)),
        "label": np.array([1.0, 0.0, 1.0, 0.0]),
        "site": np.array(["NYU", "NYU", "UCLA_1", "UCLA_1"]),
    }


def _save_dict(path, data):
    np.save(path, data, allow_pickle=True)
    return path


class _Payload:
    """Unpickling it would call `marker.touch()`: the code a hostile file could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_dict_of_arrays_loads_without_full_unpickling(tmp_path):
    path = _save_dict(tmp_path / "abide.npy", _cohort())
    table = load_braingb(path, "autism", atlas="toy10")
    np.testing.assert_allclose(table.fcns, _cohort()["corr"], atol=1e-6)
    assert table.meta["site"].tolist() == ["NYU", "NYU", "UCLA_1", "UCLA_1"]


def test_pickled_file_with_other_objects_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    data = {**_cohort(), "extra": np.array([_Payload(marker)], dtype=object)}
    path = _save_dict(tmp_path / "abide.npy", data)
    with pytest.raises(ValueError, match=r"refers to pathlib.*touch.*arbitrary code.*allow_pickle=True.*np.savez"):
        load_braingb(path, "autism", atlas="toy10")
    assert not marker.exists()


def test_trusted_pickled_dict_loads_with_label_as_named_attribute(tmp_path):
    path = _save_dict(tmp_path / "abide.npy", _cohort())
    table = load_braingb(path, "autism", atlas="toy10", allow_pickle=True)
    assert table.fcns.shape == (S, N, N) and table.fcns.dtype == np.float32
    assert table.meta["autism"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert table.meta["site"].tolist() == ["NYU", "NYU", "UCLA_1", "UCLA_1"]
    assert table.meta["subject_id"].tolist() == [f"abide-{i:05d}" for i in range(S)]
    assert table.info["source"]["fcn_from"] == "corr" and "timeseires" in table.info["source"]["keys"]
    np.testing.assert_allclose(table.fcns, _cohort()["corr"], atol=1e-6)


def test_npz_loads_without_pickle_and_label_codes_flip(tmp_path):
    data = _cohort()
    data["subject_id"] = np.array(["0050003", "0050004", "0051456", "0051457"])
    np.savez(tmp_path / "abide.npz", **data)
    table = load_braingb(tmp_path / "abide.npz", "autism", atlas="toy10", label_codes={0: 1, 1: 0}, dataset="ABIDE")
    assert table.meta["autism"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert table.meta["subject_id"].tolist()[0] == "0050003" and set(table.meta["dataset"]) == {"ABIDE"}
    assert read_braingb(tmp_path / "abide.npz").keys() == data.keys()


def test_unknown_label_names_value_and_allowed_values(tmp_path):
    data = _cohort()
    data["label"] = np.array([1, 2, 1, 2])  # raw DX_GROUP codes, not 0/1
    np.savez(tmp_path / "abide.npz", **data)
    with pytest.raises(ValueError, match=r"'label'.*'autism'.*\['2'\].*allowed values: \[0, 1\]"):
        load_braingb(tmp_path / "abide.npz", "autism", atlas="toy10")
    table = load_braingb(tmp_path / "abide.npz", "autism", atlas="toy10", label_codes={1: 1, 2: 0})
    assert table.meta["autism"].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_categorical_label_needs_codes(tmp_path):
    np.savez(tmp_path / "c.npz", **_cohort())
    with pytest.raises(ValueError, match="needs codes"):
        load_braingb(tmp_path / "c.npz", "sex", atlas="toy10")
    table = load_braingb(tmp_path / "c.npz", "sex", atlas="toy10", label_codes={0: "Female", 1: "Male"})
    assert table.meta["sex"].tolist() == ["Male", "Female", "Male", "Female"]


def test_nan_in_fcn_names_the_subject_or_is_counted(tmp_path):
    data = _cohort()
    data["corr"][1, 2, 3] = data["corr"][1, 3, 2] = np.nan
    np.savez(tmp_path / "abide.npz", **data)
    with pytest.raises(ValueError, match=r"\['abide-00001'\] has NaN"):
        load_braingb(tmp_path / "abide.npz", "autism", atlas="toy10")
    table = load_braingb(tmp_path / "abide.npz", "autism", atlas="toy10", on_nan="exclude")
    assert len(table) == 3 and table.info["excluded"] == {"NYU": {"nan_fcn": 1}}


def test_fcn_of_wrong_size_for_atlas_names_both_sizes(tmp_path):
    np.savez(tmp_path / "abide.npz", **_cohort())
    with pytest.raises(ValueError, match=r"10 x 10 but atlas 'schaefer200-7' has 200 ROIs"):
        load_braingb(tmp_path / "abide.npz", "autism", atlas="schaefer200-7")


def test_fcns_from_time_series_exclude_bad_subjects_per_site(tmp_path):
    data = _cohort()
    data["timeseries"] = data.pop("timeseires")
    data["timeseries"][2, 4, :] = 1.0  # constant ROI at UCLA_1
    data["timeseries"][3, 0, :] = 1.0
    np.savez(tmp_path / "abide.npz", **data)
    with pytest.warns(UserWarning, match="site 'UCLA_1'"):
        table = load_braingb(tmp_path / "abide.npz", "autism", atlas="toy10", use_timeseries=True, fisher_z=True)
    assert table.meta["site"].tolist() == ["NYU", "NYU"]
    assert table.info["excluded"] == {"UCLA_1": {"constant_roi": 2}}
    expected = np.arctanh(np.clip(_cohort()["corr"][0], -1 + 1e-7, 1 - 1e-7))
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(table.fcns[0], expected, atol=1e-4)


def test_missing_keys_and_wrong_shapes_are_clear_errors(tmp_path):
    data = _cohort()
    del data["label"]
    np.savez(tmp_path / "nolabel.npz", **data)
    with pytest.raises(ValueError, match=r"no 'label' array for 'autism'; its keys"):
        load_braingb(tmp_path / "nolabel.npz", "autism", atlas="toy10")
    assert len(load_braingb(tmp_path / "nolabel.npz", None, atlas="toy10")) == S
    data = _cohort()
    data["label"] = np.eye(2)[[1, 0, 1, 0]]  # one-hot
    np.savez(tmp_path / "onehot.npz", **data)
    with pytest.raises(ValueError, match=r"'label' must have one value per subject"):
        load_braingb(tmp_path / "onehot.npz", "autism", atlas="toy10")
    np.save(tmp_path / "plain.npy", _cohort()["corr"])
    with pytest.raises(ValueError, match="load_fcn_stack"):
        load_braingb(tmp_path / "plain.npy", "autism", atlas="toy10")


def test_missing_label_values_stay_missing(tmp_path):
    data = _cohort()
    data["label"] = np.array([1.0, np.nan, 0.0, 1.0])
    np.savez(tmp_path / "abide.npz", **data)
    table = load_braingb(tmp_path / "abide.npz", "autism", atlas="toy10")
    assert math.isnan(table.meta["autism"].iloc[1])
