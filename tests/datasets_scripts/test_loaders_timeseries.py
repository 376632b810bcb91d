"""Loader (a): folders of ROI time series (.1D/.csv/.tsv/.npy/.txt) plus a phenotype table."""

import logging
import math

import numpy as np
import pandas as pd
import pytest

from datasets_scripts.load_timeseries_folder import load_timeseries_folder, read_time_series

N, T = 10, 50


def _series(seed, num_t=T, num_rois=N):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(num_rois, num_rois)) * 0.3 + np.eye(num_rois)
    return rng.normal(size=(num_t, num_rois)) @ mix


def _write_1d(path, ts):
    # ABIDE preprocessed layout: a '#' header of ROI labels, whitespace separated values
    header = "#" + "\t#".join(str(2001 + i) for i in range(ts.shape[1]))
    np.savetxt(path, ts, delimiter="\t", header=header[1:], comments="#")


def _abide_phenotype(ids, sites, dx):
    return pd.DataFrame(
        {
            "SUB_ID": [str(i) for i in ids],
            "SITE_ID": sites,
            "DX_GROUP": [str(d) for d in dx],
            "AGE_AT_SCAN": ["20.5"] * (len(ids) - 1) + ["-9999"],
            "SEX": ["1", "2"] * (len(ids) // 2) + ["1"] * (len(ids) % 2),
            "HANDEDNESS_CATEGORY": ["R"] * len(ids),
            "FIQ": ["110"] * len(ids),
            "VIQ": ["-9999"] * len(ids),
            "PIQ": ["105"] * len(ids),
            "EYE_STATUS_AT_SCAN": ["1"] * len(ids),
            "ADOS_TOTAL": ["-9999"] * len(ids),
        }
    )


@pytest.fixture
def abide_folder(tmp_path):
    """Four ABIDE-like subjects at two sites, one orphan file, one phenotype row without a file."""
    folder = tmp_path / "rois_toy"
    folder.mkdir()
    ids = [50003, 50004, 51456, 51457]
    sites = ["PITT", "PITT", "CALTECH", "CALTECH"]
    for i, (sid, site) in enumerate(zip(ids, sites)):
        _write_1d(folder / f"{site.title()}_{sid:07d}_rois_toy.1D", _series(i))
    _write_1d(folder / "Pitt_0059999_rois_toy.1D", _series(9))  # no phenotype row
    phenotype = _abide_phenotype(ids + [50010], sites + ["PITT"], [1, 2, 1, 2, 1])
    path = tmp_path / "Phenotypic_V1_0b_preprocessed1.csv"
    phenotype.to_csv(path, index=False)
    return folder, path


def test_abide_folder_loads_with_ready_mapping(abide_folder):
    folder, phenotype = abide_folder
    table = load_timeseries_folder(folder, phenotype, "abide1", atlas="toy10")
    assert table.fcns.shape == (4, N, N) and table.fcns.dtype == np.float32
    assert table.meta["subject_id"].tolist() == ["50003", "50004", "51456", "51457"]
    assert table.meta["dataset"].unique().tolist() == ["ABIDE-I"]
    assert table.meta["site"].tolist() == ["PITT", "PITT", "CALTECH", "CALTECH"]
    assert table.meta["autism"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert table.meta["sex"].tolist() == ["Male", "Female", "Male", "Female"]
    assert math.isnan(table.meta["viq"].iloc[0])
    np.testing.assert_allclose(table.fcns[0], np.corrcoef(_series(0).T), atol=1e-5)
    # leftovers on both sides are counted, not silent
    assert table.info["unmatched"]["files_without_phenotype"] == ["Pitt_0059999_rois_toy.1D"]
    assert table.info["unmatched"]["phenotype_without_file"] == ["50010"]
    assert table.info["counts"] == {"files": 5, "matched": 4, "excluded": 0, "loaded": 4, "phenotype_rows": 5}
    assert table.info["excluded"] == {}


def test_fisher_z_and_other_kinds_pass_through(abide_folder):
    folder, phenotype = abide_folder
    z = load_timeseries_folder(folder, phenotype, "abide1", atlas="toy10", fisher_z=True)
    np.testing.assert_allclose(np.diagonal(z.fcns, axis1=1, axis2=2), 0.0)
    partial = load_timeseries_folder(folder, phenotype, "abide1", atlas="toy10", kind="partial correlation")
    assert partial.info["source"]["kind"] == "partial correlation" and np.isfinite(partial.fcns).all()


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".npy", ".txt", ".1D"])
def test_every_file_format_reads_the_same_series(tmp_path, suffix):
    ts = _series(1)
    path = tmp_path / f"sub-01{suffix}"
    if suffix == ".npy":
        np.save(path, ts)
    elif suffix == ".csv":
        pd.DataFrame(ts, columns=[f"roi{i}" for i in range(N)]).to_csv(path, index=False)
    elif suffix == ".tsv":
        pd.DataFrame(ts).to_csv(path, sep="\t", index=False, header=False)
    else:
        _write_1d(path, ts)
    np.testing.assert_allclose(read_time_series(path), ts, rtol=1e-6)


def test_adhd200_athena_files_and_phenotype(tmp_path):
    folder = tmp_path / "KKI"
    folder.mkdir()
    for i, sid in enumerate([1018959, 1019436]):
        ts = _series(i)
        lines = ["File\tSub-brick\t" + "\t".join(f"Mean_{k + 1}" for k in range(N))]
        lines += [f"/data/snwmrda{sid:07d}.nii.gz[{t}]\t{t}\t" + "\t".join(f"{v:.6f}" for v in row) for t, row in enumerate(ts)]
        (folder / f"snwmrda{sid:07d}_session_1_rest_1_aal_TCs.1D").write_text("\n".join(lines) + "\n")
    phenotype = pd.DataFrame(
        {
            "ScanDir ID": ["1018959", "1019436"], "Site": ["3", "3"], "Gender": ["1", "0"], "Age": ["10.2", "9.1"],
            "Handedness": ["1", "0"], "DX": ["0", "1"], "ADHD Index": ["45", "-999"], "Full4 IQ": ["110", "N/A"],
            "Verbal IQ": ["100", "98"], "Performance IQ": ["120", "pending"],
        }
    )
    table = load_timeseries_folder(folder, phenotype, "adhd200", atlas="toy10")
    assert table.meta["site"].tolist() == ["KKI", "KKI"] and table.meta["adhd"].tolist() == [0.0, 1.0]
    assert table.meta["handedness"].tolist() == ["Right", "Left"]
    np.testing.assert_allclose(table.fcns[1], np.corrcoef(_series(1).T), atol=1e-4)


def test_short_and_constant_series_are_excluded_and_counted_per_site(tmp_path, caplog):
    folder = tmp_path / "ts"
    folder.mkdir()
    short, constant = _series(1, num_t=12), _series(2)
    constant[:, 3] = 0.0  # a ROI outside the field of view, as in some ABIDE subjects
    files = {"a1": _series(0), "a2": short, "b1": constant, "b2": _series(3, num_t=5)}
    for name, ts in files.items():
        np.save(folder / f"{name}.npy", ts)
    phenotype = pd.DataFrame({"subject_id": list(files), "site": ["A", "A", "B", "B"], "age": ["30", "31", "32", "33"]})
    with caplog.at_level(logging.INFO, logger="datasets_scripts.loaders"):
        with pytest.warns(UserWarning, match=r"every subject of site 'B' was excluded"):
            table = load_timeseries_folder(folder, phenotype, atlas="toy10", dataset="toy")
    assert table.meta["subject_id"].tolist() == ["a1"]
    assert table.info["excluded"] == {"A": {"too_short": 1}, "B": {"constant_roi": 1, "too_short": 1}}
    assert {r["subject_id"]: r["reason"] for r in table.info["excluded_subjects"]} == {
        "a2": "too_short", "b1": "constant_roi", "b2": "too_short"
    }
    assert "excluded 1 subject(s) of site 'A'" in caplog.text and "site 'B'" in caplog.text
    assert table.info["counts"]["excluded"] == 3


def test_ledoit_wolf_keeps_scans_shorter_than_the_roi_count(tmp_path):
    """Partial correlation needs T > N with the empirical covariance, not with Ledoit-Wolf shrinkage."""
    folder = tmp_path / "ts"
    folder.mkdir()
    for name, seed in (("a1", 0), ("a2", 1)):
        np.save(folder / f"{name}.npy", _series(seed, num_t=8))  # 8 timepoints, N = 10 ROIs
    phenotype = pd.DataFrame({"subject_id": ["a1", "a2"], "site": ["A", "A"], "age": ["30", "31"]})
    kwargs = dict(atlas="toy10", dataset="toy", kind="partial correlation", min_timepoints=0)
    table = load_timeseries_folder(folder, phenotype, cov_estimator="ledoit_wolf", **kwargs)
    assert table.meta["subject_id"].tolist() == ["a1", "a2"]
    with pytest.raises(ValueError, match="excluded"), pytest.warns(UserWarning):
        load_timeseries_folder(folder, phenotype, cov_estimator="empirical", **kwargs)


def test_nan_in_time_series_excludes_the_subject(tmp_path):
    folder = tmp_path / "ts"
    folder.mkdir()
    bad = _series(1)
    bad[4, 2] = np.nan
    np.save(folder / "s1.npy", _series(0))
    np.save(folder / "s2.npy", bad)
    table = load_timeseries_folder(folder, atlas="toy10", site="A")
    assert table.meta["subject_id"].tolist() == ["s1"] and table.info["excluded"] == {"A": {"non_finite": 1}}


def test_all_subjects_excluded_is_an_error(tmp_path):
    folder = tmp_path / "ts"
    folder.mkdir()
    np.save(folder / "s1.npy", _series(0, num_t=5))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no subject left.*too_short"):
        load_timeseries_folder(folder, atlas="toy10")


def test_wrong_roi_count_for_atlas_names_both_sizes(tmp_path):
    folder = tmp_path / "ts"
    folder.mkdir()
    np.save(folder / "s1.npy", _series(0))
    with pytest.raises(ValueError, match=r"s1.npy: time series has 10 ROIs .* atlas 'schaefer100-7' has 100 ROIs"):
        load_timeseries_folder(folder, atlas="schaefer100-7")
    np.save(folder / "s2.npy", _series(1, num_rois=12))
    with pytest.raises(ValueError, match=r"s2.npy: time series has 12 ROIs .* s1.npy \(first file read\) has 10"):
        load_timeseries_folder(folder, atlas="toy")
    np.save(folder / "s2.npy", _series(1).T)
    with pytest.raises(ValueError, match="transpose=True"):
        load_timeseries_folder(folder, atlas="toy")


def test_transposed_files_and_id_pattern(tmp_path):
    folder = tmp_path / "ts"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"run1_subj{i + 7:03d}_cc200.npy", _series(i).T)
    table = load_timeseries_folder(folder, atlas="toy", transpose=True, id_pattern=r"subj(?P<id>\d+)", site="S")
    assert table.meta["subject_id"].tolist() == ["007", "008", "009"] and table.num_rois == N


def test_unknown_phenotype_column_and_code_errors_reach_the_user(abide_folder):
    folder, phenotype = abide_folder
    raw = pd.read_csv(phenotype, dtype=str, keep_default_na=False)
    with pytest.raises(ValueError, match=r"'EYE_STATUS_AT_SCAN'.*not found; available columns"):
        load_timeseries_folder(folder, raw.drop(columns=["EYE_STATUS_AT_SCAN"]), "abide1", atlas="toy10")
    raw.loc[0, "DX_GROUP"] = "0"
    with pytest.raises(ValueError, match=r"DX_GROUP.*\['0'\].*allowed values: \[1, 2\]"):
        load_timeseries_folder(folder, raw, "abide1", atlas="toy10")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="No time-series files"):
        load_timeseries_folder(tmp_path, atlas="toy10")


def test_phenotype_csv_inside_the_folder_is_not_read_as_a_time_series(abide_folder):
    folder, phenotype = abide_folder
    inside = folder / "phenotype.csv"
    inside.write_text(phenotype.read_text())
    table = load_timeseries_folder(folder, [inside], "abide1", atlas="toy10")
    assert len(table) == 4 and table.info["counts"]["files"] == 5
