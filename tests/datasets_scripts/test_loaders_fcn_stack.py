"""Loader (c): FCN stacks (.npy / .npz) plus attribute CSVs, and the real HCP individual FCNs."""

import math

import numpy as np
import pandas as pd
import pytest

from datasets_scripts.hcp import PARCELLATIONS
from datasets_scripts.load_fcn_stack import fcn_stack_to_table, load_fcn_stack, load_hcp_individuals

N = 10


def _fcns(num_subjects=4, num_rois=N, seed=0):
    rng = np.random.default_rng(seed)
    ts = rng.normal(size=(num_subjects, 50, num_rois))
    return np.stack([np.corrcoef(x.T) for x in ts])


def _attributes_csv(path, ids=("s1", "s2", "s3", "s4")):
    table = pd.DataFrame(
        {
            "subject_id": list(ids),
            "site": ["A", "A", "B", "B"][: len(ids)],
            "age": ["21", "", "40.5", "33"][: len(ids)],
            "sex": ["Female", "Male", "", "Male"][: len(ids)],
            "autism": ["1", "0", "0", ""][: len(ids)],
        }
    )
    table.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("parcellation", PARCELLATIONS)
def test_real_hcp_individual_fcns_load_through_the_stack_path(parcellation):
    table = load_hcp_individuals(parcellation)
    size = int(parcellation.split("_")[1])
    assert table.fcns.shape == (3, size, size) and table.fcns.dtype == np.float32
    assert table.attribute_columns() == []
    assert set(table.meta["dataset"]) == {"HCP"} and table.meta["subject_id"].str.startswith("HCP_").all()
    assert np.allclose(np.diagonal(table.fcns, axis1=1, axis2=2), 1.0)
    if parcellation.startswith("schaefer"):
        assert set(table.meta["atlas"]) == {f"schaefer{size}-7"}


def test_all_24_hcp_subjects_load():
    assert sum(len(load_hcp_individuals(p)) for p in PARCELLATIONS) == 24


def test_npz_with_ids_matches_rows_by_id_and_counts_leftovers(tmp_path):
    path = tmp_path / "stack.npz"
    np.savez(path, fcns=_fcns(), subject_ids=np.array(["s1", "s2", "s3", "s9"]))
    csv = _attributes_csv(tmp_path / "attrs.csv", ids=("s4", "s3", "s2", "s1"))
    table = load_fcn_stack(path, csv, atlas="toy10", dataset="toy")
    assert table.meta["subject_id"].tolist() == ["s1", "s2", "s3"]
    assert table.meta["site"].tolist() == ["B", "B", "A"]
    assert table.meta["autism"].iloc[0] != table.meta["autism"].iloc[0]  # s1 row has an empty autism cell
    assert table.meta["sex"].tolist() == ["Male", None, "Male"]
    np.testing.assert_allclose(table.fcns, _fcns()[:3], atol=1e-6)
    assert table.info["unmatched"]["fcns_without_phenotype"] == ["s9"]
    assert table.info["unmatched"]["phenotype_without_fcn"] == ["s4"]
    assert table.info["counts"] == {"fcns": 4, "phenotype_rows": 4, "loaded": 3}


def test_npy_without_ids_matches_rows_in_order(tmp_path):
    path = tmp_path / "stack.npy"
    np.save(path, _fcns())
    table = load_fcn_stack(path, _attributes_csv(tmp_path / "a.csv"), atlas="toy10")
    assert table.meta["subject_id"].tolist() == ["s1", "s2", "s3", "s4"]
    assert table.meta["autism"].iloc[:3].tolist() == [1.0, 0.0, 0.0] and math.isnan(table.meta["autism"].iloc[3])
    assert math.isnan(table.meta["age"].iloc[1])
    with pytest.raises(ValueError, match="matched in order.*4 FCNs.*3 rows|has 4 FCNs.*3 rows"):
        load_fcn_stack(path, _attributes_csv(tmp_path / "b.csv", ids=("s1", "s2", "s3")), atlas="toy10")


def test_stack_without_attributes_and_with_a_declared_mapping(tmp_path):
    path = tmp_path / "stack.npy"
    np.save(path, _fcns())
    bare = load_fcn_stack(path, atlas="toy10", site="X")
    assert bare.attribute_columns() == [] and set(bare.meta["site"]) == {"X"}
    raw = pd.DataFrame({"ID": ["001", "002", "003", "004"], "dx": ["MDD", "HC", "HC", "MDD"]})
    mapping = {"name": "mdd", "subject_id": "ID", "columns": {"dx": {"attribute": "depression", "codes": {"MDD": 1, "HC": 0}}}}
    table = load_fcn_stack(path, raw, mapping, atlas="toy10", site="X")
    assert table.meta["depression"].tolist() == [1.0, 0.0, 0.0, 1.0] and set(table.meta["dataset"]) == {"mdd"}


def test_fcn_of_wrong_size_for_atlas_names_both_sizes(tmp_path):
    path = tmp_path / "stack.npy"
    np.save(path, _fcns())
    with pytest.raises(ValueError, match=r"10 x 10 but atlas 'schaefer100-7' has 100 ROIs"):
        load_fcn_stack(path, atlas="schaefer100-7")
    with pytest.raises(ValueError, match=r"10 x 10 but atlas 'cc200' has 200 ROIs"):
        load_fcn_stack(path, atlas="cc200", num_rois=200)


def test_nan_in_fcn_names_the_subject(tmp_path):
    fcns = _fcns()
    fcns[2, 3, 4] = fcns[2, 4, 3] = np.nan
    path = tmp_path / "stack.npz"
    np.savez(path, fcns=fcns, subject_ids=np.array(["s1", "s2", "s3", "s4"]))
    with pytest.raises(ValueError, match=r"subject\(s\) \['s3'\] has NaN"):
        load_fcn_stack(path, atlas="toy10")


def test_bad_stack_files_are_clear_errors(tmp_path):
    np.savez(tmp_path / "x.npz", matrices=_fcns())
    with pytest.raises(ValueError, match=r"no array 'fcns'; its arrays: \['matrices'\]"):
        load_fcn_stack(tmp_path / "x.npz", atlas="toy10")
    np.save(tmp_path / "flat.npy", np.zeros((4, 10)))
    with pytest.raises(ValueError, match=r"shape \(S, N, N\)"):
        load_fcn_stack(tmp_path / "flat.npy", atlas="toy10")
    np.save(tmp_path / "dict.npy", {"corr": _fcns()}, allow_pickle=True)
    with pytest.raises(ValueError, match="load_braingb"):
        load_fcn_stack(tmp_path / "dict.npy", atlas="toy10")
    asym = _fcns()
    asym[0, 0, 1] += 0.5
    with pytest.raises(ValueError, match=r"\['t-0'\] is not symmetric"):
        fcn_stack_to_table(asym, ["t-0", "t-1", "t-2", "t-3"], atlas="toy10", dataset="t")


def test_unknown_attribute_value_in_stack_csv_is_an_error(tmp_path):
    path = tmp_path / "stack.npy"
    np.save(path, _fcns())
    csv = _attributes_csv(tmp_path / "a.csv")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.loc[1, "autism"] = "2"
    with pytest.raises(ValueError, match=r"'autism'.*\['2'\].*allowed values: \[0, 1\]"):
        load_fcn_stack(path, table, atlas="toy10")


def test_concat_merges_exclusion_counts_of_both_cohorts():
    import numpy as np
    import pandas as pd

    from datasets_scripts.subjects import SubjectTable

    def table(prefix, site, count):
        meta = pd.DataFrame({"subject_id": [f"{prefix}1"], "dataset": [prefix], "site": [site], "atlas": ["a"]})
        return SubjectTable(np.eye(3, dtype=np.float32)[None], meta, {"excluded": {site: {"constant ROI": count}}, "counts": {"loaded": 1}})

    merged = SubjectTable.concat([table("A", "s1", 2), table("B", "s2", 3)])
    assert merged.info["excluded"] == {"s1": {"constant ROI": 2}, "s2": {"constant ROI": 3}}
    assert merged.info["counts"] == {"loaded": 2}
