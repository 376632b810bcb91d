"""One command from a real cohort folder to an instruction set, on the public releases' layouts
(ABIDE PCP, ADHD-200 Athena, BrainGB abide.npy, an FCN stack), written here from simulated subjects."""

import numpy as np
import pandas as pd
import pytest

from datasets_scripts import build_instructions as bi
from datasets_scripts.loading import load_config
from processing.atlases import load_atlas

T = 90
ABIDE_SITES = {"PITT": "Pitt", "NYU": "NYU", "UM_1": "UM_1", "LEUVEN_1": "Leuven_1"}


def _series(rng, num_rois, condition):
    """`(T, N)` time series; subjects with the condition share an extra component on ROIs 0..9."""
    ts = rng.normal(size=(T, num_rois)) + 0.3 * rng.normal(size=(T, 1))
    if condition:
        ts[:, :10] += 0.8 * rng.normal(size=(T, 1))
    return ts


def _write_1d(path, ts, labels):
    # ABIDE PCP: '#'-commented header of ROI label values, tab separated values
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, ts, delimiter="\t", header="\t".join(f"#{v}" for v in labels), comments="", fmt="%.5f")


def _abide_phenotypic(rows):
    """`Phenotypic_V1_0b_preprocessed1.csv` with the release's columns (an unnamed index column first)."""
    frame = pd.DataFrame(rows)
    columns = ["", "Unnamed: 0", "SUB_ID", "X", "subject", "SITE_ID", "FILE_ID", "DX_GROUP", "DSM_IV_TR",
               "AGE_AT_SCAN", "SEX", "HANDEDNESS_CATEGORY", "HANDEDNESS_SCORES", "FIQ", "VIQ", "PIQ",
               "FIQ_TEST_TYPE", "ADOS_TOTAL", "EYE_STATUS_AT_SCAN", "func_mean_fd"]
    frame[""] = range(len(frame))
    frame["Unnamed: 0"] = range(len(frame))
    frame["X"] = range(1, len(frame) + 1)
    frame["subject"] = frame["SUB_ID"]
    return frame[columns]


@pytest.fixture(scope="module")
def abide_pcp(tmp_path_factory):
    """ABIDE PCP download: Outputs/cpac/filt_noglobal/rois_{aal,cc200}/{FILE_ID}_rois_{atlas}.1D + phenotypics."""
    root = tmp_path_factory.mktemp("ABIDE_pcp")
    rng = np.random.default_rng(0)
    rows, sid = [], 50002
    for site, prefix in ABIDE_SITES.items():
        for k in range(6):
            sid += 1
            dx = 1 + k % 2  # 1 autism, 2 control
            file_id = f"{prefix}_{sid:07d}"
            for atlas, n, labels in (("aal", 116, [2001 + i for i in range(116)]), ("cc200", 200, range(1, 201))):
                _write_1d(root / "Outputs/cpac/filt_noglobal" / f"rois_{atlas}" / f"{file_id}_rois_{atlas}.1D",
                          _series(rng, n, dx == 1), labels)
            rows.append({"SUB_ID": str(sid), "SITE_ID": site, "FILE_ID": file_id, "DX_GROUP": str(dx),
                         "DSM_IV_TR": "1" if dx == 1 else "0", "AGE_AT_SCAN": f"{12 + k * 3.5:.2f}",
                         "SEX": "1" if k % 3 else "2", "HANDEDNESS_CATEGORY": "R" if k != 4 else "L",
                         "HANDEDNESS_SCORES": "-9999", "FIQ": str(95 + k * 4), "VIQ": "-9999", "PIQ": str(100 + k),
                         "FIQ_TEST_TYPE": "WASI", "ADOS_TOTAL": "12" if dx == 1 else "-9999",
                         "EYE_STATUS_AT_SCAN": "1", "func_mean_fd": "0.1"})
    # a release row whose scan did not pass preprocessing: no file
    rows.append({**rows[0], "SUB_ID": "50099", "FILE_ID": "no_filename"})
    phenotypic = root / "Phenotypic_V1_0b_preprocessed1.csv"
    _abide_phenotypic(rows).to_csv(phenotypic, index=False)
    return root, phenotypic


def _cc200_table(path):
    """An atlas table for CC200 (not bundled): coordinates spread over the cortex and 20 subcortical ROIs."""
    rng = np.random.default_rng(1)
    ref = load_atlas("schaefer400-7").coords
    coords = ref[rng.choice(len(ref), 200, replace=False)] + rng.normal(scale=2.0, size=(200, 3))
    structure = ["cortical"] * 180 + ["subcortical"] * 20
    pd.DataFrame({"region": [f"CC200_{i + 1}" for i in range(200)], "x": coords[:, 0], "y": coords[:, 1],
                  "z": coords[:, 2], "structure": structure}).to_csv(path, index=False)
    return path


def test_abide_pcp_folder_builds_with_whole_sites_held_out(abide_pcp, tmp_path):
    root, phenotypic = abide_pcp
    out = tmp_path / "abide"
    bi.main(["--source", "timeseries", "--timeseries", str(root), "--phenotypes", str(phenotypic),
             "--mapping", "abide1", "--atlas", "aal116", "--out", str(out), "--zero-shot-sites", "NYU"])
    subjects = load_config(out, "subjects")
    assert set(subjects["zero_shot"]["site"]) == {"NYU"} and len(subjects["zero_shot"]) == 6
    assert "NYU" not in set(subjects["train"]["site"]) | set(subjects["validation"]["site"])
    assert subjects["train"][0]["num_rois"] == 116 and set(subjects["train"]["dataset"]) == {"ABIDE-I"}
    assert len(subjects["train"]) + len(subjects["validation"]) == 18
    instructions = load_config(out, "instructions")
    assert "autism" in set(instructions["zero_shot"]["attribute"])
    card = (out / "README.md").read_text()
    assert "## Split rule" in card and "whole sites/datasets never seen in training (site NYU: 6 subjects)" in card
    # only the AAL files were read (found by the release pattern), and the skipped row is counted
    assert "files `**/*_rois_aal.1D`: ABIDE preprocessed (PCP)" in card and "| files | 24 |" in card
    assert "- phenotype without file: 1 (e.g. `50099`)" in card
    atlas = pd.read_csv(out / "atlas.csv")
    assert len(atlas) == 116 and (atlas["network"] == "Cerebellum").sum() == 26
    assert "| Cerebellum | 26 |" in card


def test_cc200_files_with_a_user_atlas_table(abide_pcp, tmp_path):
    root, phenotypic = abide_pcp
    out = tmp_path / "cc200"
    bi.main(["--source", "timeseries", str(root / "Outputs"), "--phenotypes", str(phenotypic), "--mapping", "abide1",
             "--atlas", "cc200", "--atlas-table", str(_cc200_table(tmp_path / "cc200.csv")), "--out", str(out),
             "--zero-shot-sites", "um_1", "pitt"])
    subjects = load_config(out, "subjects")
    assert subjects["train"][0]["num_rois"] == 200 and subjects["train"][0]["atlas"] == "cc200"
    assert set(subjects["zero_shot"]["site"]) == {"UM_1", "PITT"}
    networks = pd.read_csv(out / "atlas.csv")["network"]
    assert (networks == "Subcortical").sum() == 20 and networks.nunique() >= 6


def _adhd200(root):
    """ADHD-200 Athena: {Site}/{id}/sfnwmrda{id}_session_1_rest_{r}_aal_TCs.1D + {Site}_phenotypic.csv."""
    rng = np.random.default_rng(2)
    paths = []
    for site, code, first in (("KKI", 3, 1018959), ("Peking_1", 1, 1050345), ("NYU", 5, 10001)):
        rows = []
        for k in range(5):
            sid = first + k
            dx = [0, 1, 3, 0, 2][k]
            for run in (1, 2) if k == 0 else (1,):  # a second rest run must not collide with the first
                ts = _series(rng, 116, dx > 0)
                lines = ["File\tSub-brick\t" + "\t".join(f"Mean_{2001 + i}" for i in range(116))]
                lines += [f"/data/{sid:07d}/rest.nii.gz[{t}]\t{t}\t" + "\t".join(f"{v:.5f}" for v in row)
                          for t, row in enumerate(ts)]
                path = root / site / f"{sid:07d}" / f"sfnwmrda{sid:07d}_session_1_rest_{run}_aal_TCs.1D"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("\n".join(lines) + "\n")
            rows.append({"ScanDir ID": str(sid), "Site": str(code), "Gender": str(k % 2), "Age": f"{8 + k:.2f}",
                         "Handedness": "1", "DX": str(dx), "Secondary Dx ": "", "ADHD Measure": "1",
                         "ADHD Index": str(40 + 5 * k) if k != 2 else "-999", "Inattentive": "50",
                         "Hyper/Impulsive": "50", "IQ Measure": "2", "Verbal IQ": "105", "Performance IQ": "100",
                         "Full4 IQ": "pending" if k == 3 else "104", "Med Status": "1", "QC_Rest_1": "1"})
        path = root / site / f"{site}_phenotypic.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        paths.append(path)
    return paths


def test_adhd200_release_builds_with_a_site_held_out(tmp_path):
    phenotypics = _adhd200(tmp_path / "ADHD200")
    out = tmp_path / "adhd"
    bi.main(["--source", "timeseries", str(tmp_path / "ADHD200"), "--phenotypes", *map(str, phenotypics),
             "--mapping", "adhd200", "--atlas", "aal116", "--out", str(out), "--zero-shot-sites", "Peking"])
    subjects = load_config(out, "subjects")
    assert set(subjects["zero_shot"]["site"]) == {"Peking"} and len(subjects["zero_shot"]) == 5
    assert set(subjects["train"]["site"]) | set(subjects["validation"]["site"]) == {"KKI", "NYU"}
    assert sorted(subjects["zero_shot"]["adhd"]) == [0.0, 0.0, 1.0, 1.0, 1.0]
    card = (out / "README.md").read_text()
    assert "`**/*_rest_1_aal_TCs.1D`: ADHD-200" in card and "| loaded | 15 |" in card


def test_braingb_abide_npy_dict_builds_without_full_unpickling(tmp_path):
    rng = np.random.default_rng(3)
    sites = np.array(["NYU"] * 6 + ["UCLA_1"] * 6 + ["UM_1"] * 6)
    label = np.array([1.0, 0.0] * 9)
    ts = np.stack([_series(rng, 200, y == 1).T for y in label])  # BNT layout (S, N, T)
    data = {"timeseires": ts, "label": label, "corr": np.stack([np.corrcoef(x) for x in ts]),
            "pcorr": np.zeros((18, 200, 200)), "site": sites}
    np.save(tmp_path / "abide.npy", data, allow_pickle=True)
    out = tmp_path / "braingb"
    bi.main(["--source", "braingb", str(tmp_path / "abide.npy"), "--atlas", "cc200",
             "--atlas-table", str(_cc200_table(tmp_path / "cc200.csv")), "--out", str(out),
             "--zero-shot-sites", "UM_1"])
    subjects = load_config(out, "subjects")
    assert set(subjects["zero_shot"]["site"]) == {"UM_1"} and sorted(set(subjects["zero_shot"]["autism"])) == [0, 1]
    card = (out / "README.md").read_text()
    assert "BrainGB/BNT file" in card and "label -> `autism`" in card


def test_fcn_stack_with_a_dataset_held_out(tmp_path):
    rng = np.random.default_rng(4)
    ids = [f"sub-{i:02d}" for i in range(16)]
    fcns = np.stack([np.corrcoef(_series(rng, 116, i % 2).T) for i in range(16)])
    np.savez(tmp_path / "stack.npz", fcns=fcns, subject_ids=np.array(ids))
    pd.DataFrame({"subject_id": ids, "dataset": ["A"] * 10 + ["B"] * 6, "site": ["s1", "s2"] * 8,
                  "age": np.linspace(20, 60, 16), "sex": ["Female", "Male"] * 8}).to_csv(tmp_path / "p.csv", index=False)
    out = tmp_path / "stack"
    bi.main(["--source", "fcn-stack", str(tmp_path / "stack.npz"), "--phenotypes", str(tmp_path / "p.csv"),
             "--atlas", "aal116", "--out", str(out), "--zero-shot-datasets", "B"])
    subjects = load_config(out, "subjects")
    assert set(subjects["zero_shot"]["dataset"]) == {"B"} and len(subjects["zero_shot"]) == 6
    assert set(subjects["train"]["dataset"]) == {"A"}


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------
def test_files_matching_no_phenotype_row_is_an_error_with_the_counts(abide_pcp, tmp_path):
    root, _ = abide_pcp
    other = tmp_path / "other.csv"
    _abide_phenotypic([{"SUB_ID": str(60000 + i), "SITE_ID": "PITT", "FILE_ID": "x", "DX_GROUP": "1",
                        "DSM_IV_TR": "1", "AGE_AT_SCAN": "20", "SEX": "1", "HANDEDNESS_CATEGORY": "R",
                        "HANDEDNESS_SCORES": "", "FIQ": "100", "VIQ": "100", "PIQ": "100", "FIQ_TEST_TYPE": "",
                        "ADOS_TOTAL": "-9999", "EYE_STATUS_AT_SCAN": "1", "func_mean_fd": "0.1"}
                       for i in range(3)]).to_csv(other, index=False)
    with pytest.raises(ValueError, match=r"None of the 24 time-series file\(s\).*matches a phenotype row: 3 "
                                         r"phenotype row\(s\).*'SUB_ID'"):
        bi.main(["--source", "timeseries", str(root), "--phenotypes", str(other), "--mapping", "abide1",
                 "--atlas", "aal116", "--out", str(tmp_path / "x")])


def test_zero_shot_site_that_does_not_exist_lists_the_sites(abide_pcp, tmp_path):
    root, phenotypic = abide_pcp
    with pytest.raises(ValueError, match=r"site\(s\) \['Stanford'\].*its sites: \['LEUVEN_1', 'NYU', 'PITT', 'UM_1'\]"):
        bi.main(["--source", "timeseries", str(root), "--phenotypes", str(phenotypic), "--mapping", "abide1",
                 "--atlas", "aal116", "--out", str(tmp_path / "x"), "--zero-shot-sites", "NYU", "Stanford"])


def test_zero_shot_dataset_that_does_not_exist_and_holding_out_everything():
    meta = pd.DataFrame({"dataset": ["A", "A", "B"], "site": ["a", "a", "b"]})
    with pytest.raises(ValueError, match=r"dataset\(s\) \['C'\].*its datasets: \['A', 'B'\]"):
        bi.held_out_split(meta, zero_shot_datasets=["C"])
    with pytest.raises(ValueError, match="no training subject"):
        bi.held_out_split(meta, zero_shot_datasets=["A", "B"])


def test_atlas_table_without_coordinates_and_no_mapping_says_what_is_needed(abide_pcp, tmp_path):
    root, phenotypic = abide_pcp
    names = tmp_path / "cc200_names.csv"
    pd.DataFrame({"region": [f"CC200_{i}" for i in range(200)]}).to_csv(names, index=False)
    args = ["--source", "timeseries", str(root), "--phenotypes", str(phenotypic), "--mapping", "abide1",
            "--atlas", "cc200", "--out", str(tmp_path / "x")]
    with pytest.raises(ValueError, match="no x, y, z coordinates.*mapping file"):
        bi.main(args + ["--atlas-table", str(names)])
    with pytest.raises(ValueError, match="'cc200' is not bundled.*--atlas-table FILE"):
        bi.main(args)


def test_real_source_needs_its_path(tmp_path):
    with pytest.raises(ValueError, match="--source braingb needs its input"):
        bi.main(["--source", "braingb", "--atlas", "aal116", "--out", str(tmp_path)])


def test_excluded_subjects_are_counted_per_site_in_the_card(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for i, site in enumerate(["PITT"] * 4 + ["NYU"] * 4):
        sid = 50003 + i
        ts = _series(rng, 116, i % 2)[: 10 if i == 1 else T]  # one scan too short
        _write_1d(tmp_path / "rois_aal" / f"{ABIDE_SITES[site]}_{sid:07d}_rois_aal.1D", ts, range(116))
        rows.append({"SUB_ID": str(sid), "SITE_ID": site, "FILE_ID": "", "DX_GROUP": str(1 + i % 2), "DSM_IV_TR": "",
                     "AGE_AT_SCAN": "20", "SEX": "1", "HANDEDNESS_CATEGORY": "R", "HANDEDNESS_SCORES": "", "FIQ": "100",
                     "VIQ": "100", "PIQ": "100", "FIQ_TEST_TYPE": "", "ADOS_TOTAL": "-9999",
                     "EYE_STATUS_AT_SCAN": "2", "func_mean_fd": ""})
    _abide_phenotypic(rows).to_csv(tmp_path / "pheno.csv", index=False)
    out = tmp_path / "out"
    bi.main(["--source", "timeseries", str(tmp_path / "rois_aal"), "--phenotypes", str(tmp_path / "pheno.csv"),
             "--mapping", "abide1", "--atlas", "aal116", "--out", str(out), "--zero-shot-sites", "NYU"])
    card = (out / "README.md").read_text()
    assert "| PITT | too_short | 1 |" in card and "| excluded | 1 |" in card and "| loaded | 7 |" in card
    assert len(load_config(out, "subjects")["zero_shot"]) == 4


def test_a_real_cohort_keeps_its_training_series_for_windows_when_asked(abide_pcp, tmp_path):
    from datasets_scripts.timeseries_store import read_timeseries

    root, phenotypic = abide_pcp
    common = ["--source", "timeseries", str(root), "--phenotypes", str(phenotypic), "--mapping", "abide1",
              "--atlas", "aal116", "--zero-shot-sites", "NYU"]
    bi.main([*common, "--out", str(tmp_path / "plain")])
    assert not (tmp_path / "plain" / "timeseries").exists()
    bi.main([*common, "--out", str(tmp_path / "kept"), "--keep-timeseries"])
    series = read_timeseries(load_config(tmp_path / "kept", "timeseries"))
    train = load_config(tmp_path / "kept", "subjects")["train"]
    assert set(series) == set(train["subject_id"]) and next(iter(series.values())).shape[1] == 116
