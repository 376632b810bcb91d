"""Phenotype mappings: ready ABIDE I / ADHD-200 mappings, declared mappings, bad input."""

import json
import math

import pandas as pd
import pytest

from datasets_scripts.phenotype_mappings import (
    ABIDE_I,
    ADHD_200,
    ColumnMapping,
    PhenotypeMapping,
    code_key,
    load_mapping,
    read_phenotype_table,
)
from datasets_scripts.subject_ids import canonical_id, ids_in_name, match_files


def _abide_rows():
    # As in Phenotypic_V1_0b_preprocessed1.csv: -9999 is missing, ids without zero padding.
    return pd.DataFrame(
        {
            "SUB_ID": ["50003", "50004", "51456"],
            "SITE_ID": ["PITT", "PITT", "CALTECH"],
            "DX_GROUP": ["1", "2", "1"],
            "AGE_AT_SCAN": ["24.45", "19.09", "-9999"],
            "SEX": ["1", "2", "1"],
            "HANDEDNESS_CATEGORY": ["R", "Ambi", ""],
            "FIQ": ["124", "-9999", "95.0"],
            "VIQ": ["128", "113", ""],
            "PIQ": ["115", "-9999", "97"],
            "EYE_STATUS_AT_SCAN": ["2", "1", "1"],
            "ADOS_TOTAL": ["12", "-9999", "9"],
        }
    )


def test_abide_mapping_follows_value_conventions():
    frame = ABIDE_I.apply(_abide_rows()).frame
    assert frame["subject_id"].tolist() == ["50003", "50004", "51456"]
    assert frame["site"].tolist() == ["PITT", "PITT", "CALTECH"]
    assert frame["autism"].tolist() == [1.0, 0.0, 1.0]
    assert frame["sex"].tolist() == ["Male", "Female", "Male"]
    assert frame["handedness"].tolist() == ["Right", "Ambidextrous", None]
    assert frame["eye_status"].tolist() == ["Closed", "Open", "Open"]
    assert frame["age"].iloc[0] == pytest.approx(24.45) and math.isnan(frame["age"].iloc[2])
    assert math.isnan(frame["fiq"].iloc[1]) and frame["fiq"].iloc[2] == 95.0
    assert frame["ados_total"].dtype == float


def test_adhd200_mapping_codes_sites_and_missing():
    raw = pd.DataFrame(
        {
            "ScanDir ID": ["10001", "10002", "1050345", "27000"],
            "Site": ["5", "NYU ", "1", "4"],
            "Gender": ["0", "1", "1", "0"],
            "Age": ["9.1", "12.4", "N/A", "15"],
            "Handedness": ["1", "0.58", "-999", "2"],
            "DX": ["0", "3", "1", "pending"],
            "ADHD Index": ["40", "-999", "71", "55"],
            "Full4 IQ": ["110", "98", "-999", "101"],
            "Verbal IQ": ["N/A", "97", "100", "102"],
            "Performance IQ": ["105", "pending", "99", "100"],
        }
    )
    frame = ADHD_200.apply(raw).frame
    assert frame["site"].tolist() == ["NYU", "NYU", "Peking", "NeuroIMAGE"]
    assert frame["adhd"].iloc[:3].tolist() == [0.0, 1.0, 1.0] and math.isnan(frame["adhd"].iloc[3])
    assert frame["sex"].tolist() == ["Female", "Male", "Male", "Female"]
    # integer codes, then an Edinburgh laterality quotient, then missing
    assert frame["handedness"].tolist() == ["Right", "Right", None, "Ambidextrous"]
    assert math.isnan(frame["age"].iloc[2]) and math.isnan(frame["adhd_index"].iloc[1])


def test_unknown_phenotype_column_names_column_and_available_ones():
    raw = _abide_rows().drop(columns=["FIQ"])
    with pytest.raises(ValueError, match=r"'FIQ'.*available columns: \['SUB_ID', 'SITE_ID'"):
        ABIDE_I.apply(raw)


def test_unknown_diagnosis_code_names_value_and_allowed_values():
    raw = _abide_rows()
    raw.loc[1, "DX_GROUP"] = "3"
    with pytest.raises(ValueError, match=r"DX_GROUP.*unknown value\(s\) \['3'\].*50004.*allowed values: \[1, 2\]"):
        ABIDE_I.apply(raw)


def test_unknown_sex_code_names_value_and_allowed_values():
    raw = _abide_rows()
    raw.loc[0, "SEX"] = "M"
    with pytest.raises(ValueError, match=r"SEX.*\['M'\].*allowed values: \[1, 2\]"):
        ABIDE_I.apply(raw)


def test_non_numeric_value_in_numeric_column_is_an_error():
    raw = _abide_rows()
    raw.loc[0, "AGE_AT_SCAN"] = "twenty"
    with pytest.raises(ValueError, match=r"AGE_AT_SCAN.*non-numeric.*'twenty'"):
        ABIDE_I.apply(raw)


def test_undeclared_missing_code_is_caught_by_the_registry_range():
    mapping = PhenotypeMapping("x", "SUB_ID", columns=(ColumnMapping("AGE_AT_SCAN", "age"),))
    with pytest.raises(ValueError, match=r"'age'.*subject '51456'.*-9999.*missing codes"):
        mapping.apply(_abide_rows())


def test_missing_values_become_nan_or_none_and_rows_without_id_are_counted():
    raw = _abide_rows()
    raw.loc[3] = [""] + ["-9999"] * 10
    mapped = ABIDE_I.apply(raw)
    assert mapped.rows_without_id == 1 and len(mapped.frame) == 3
    assert mapped.frame["handedness"].iloc[2] is None


def test_repeated_subject_ids_are_an_error():
    raw = _abide_rows()
    raw.loc[2, "SUB_ID"] = "0050003"
    with pytest.raises(ValueError, match="repeats subject id"):
        ABIDE_I.apply(raw)


def test_declared_mapping_from_dict_and_json(tmp_path):
    spec = {
        "name": "my-cohort",
        "subject_id": "participant_id",
        "site": "scanner",
        "missing": [-1, "unknown"],
        "columns": {
            "age_years": "age",
            "group": {"attribute": "depression", "codes": {"MDD": 1, "HC": 0}},
            "gender": {"attribute": "sex", "codes": {"f": "Female", "m": "Male"}},
        },
    }
    raw = pd.DataFrame(
        {
            "participant_id": ["sub-01", "sub-02"],
            "scanner": ["A", "B"],
            "age_years": ["30", "-1"],
            "group": ["mdd", "HC"],
            "gender": ["F", "unknown"],
        }
    )
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(spec))
    for mapping in (PhenotypeMapping.from_dict(spec), load_mapping(path), load_mapping(spec)):
        frame = mapping.apply(raw).frame
        assert frame["depression"].tolist() == [1.0, 0.0]
        assert frame["sex"].tolist() == ["Female", None]
        assert frame["age"].iloc[0] == 30 and math.isnan(frame["age"].iloc[1])
    assert load_mapping("ABIDE_I") is ABIDE_I and load_mapping("adhd-200") is ADHD_200
    with pytest.raises(ValueError, match="ready mappings"):
        load_mapping("abide3")


def test_mapping_codes_must_follow_registry_conventions():
    with pytest.raises(ValueError, match=r"'sex'.*'female' is not one of the allowed classes \['Female', 'Male'\]"):
        PhenotypeMapping("x", "id", columns=(ColumnMapping("g", "sex", codes={0: "female", 1: "Male"}),))
    with pytest.raises(ValueError, match="'autism'.*must be 0 .* or 1"):
        PhenotypeMapping("x", "id", columns=(ColumnMapping("dx", "autism", codes={1: 2, 2: 0}),))
    with pytest.raises(ValueError, match="needs codes"):
        PhenotypeMapping("x", "id", columns=(ColumnMapping("g", "sex"),))
    with pytest.raises(ValueError, match="more than one column"):
        PhenotypeMapping("x", "id", columns=(ColumnMapping("a", "age"), ColumnMapping("b", "age")))


def test_native_mapping_checks_categories():
    raw = pd.DataFrame({"subject_id": ["a", "b"], "site": ["s", "s"], "sex": ["female", "Male"], "autism": ["1", ""]})
    mapping = PhenotypeMapping.native(list(raw.columns))
    frame = mapping.apply(raw).frame
    assert frame["sex"].tolist() == ["Female", "Male"] and frame["autism"].iloc[0] == 1.0
    raw.loc[0, "sex"] = "F"
    with pytest.raises(ValueError, match=r"\['F'\].*allowed values: \['Female', 'Male'\]"):
        mapping.apply(raw)


def test_code_keys_and_ids_are_type_and_padding_tolerant():
    assert code_key(1) == code_key("1.0") == code_key(" 1 ") == code_key(1.0) == "1"
    assert code_key("") is None and code_key(float("nan")) is None and code_key("Ambi") == "ambi"
    assert canonical_id("0050003") == canonical_id(50003) == canonical_id("50003.0") == "50003"
    assert ids_in_name("Pitt_0050003_rois_cc200.1D", ["50003", "200"]) == ["50003"]
    assert ids_in_name("sfnwmrda0010042_session_1_rest_1_aal_TCs.1D", ["10042"]) == ["10042"]
    assert ids_in_name("sub-01_bold.csv", ["sub-01", "sub-011"]) == ["sub-01"]
    assert ids_in_name("x_7_y_123.csv", ["7", "123"], id_pattern=r"y_(?P<id>\d+)") == ["123"]


def test_match_files_counts_and_ambiguity(tmp_path):
    names = ["Pitt_0050003_rois.1D", "Pitt_0050004_rois.1D", "Pitt_0059999_rois.1D"]
    paths = [tmp_path / n for n in names]
    match = match_files(paths, ["50003", "50004", "50005"])
    assert set(match.files) == {"50003", "50004"}
    assert [p.name for p in match.files_without_subject] == ["Pitt_0059999_rois.1D"]
    assert match.subjects_without_file == ["50005"]
    with pytest.raises(ValueError, match="several files"):
        match_files([tmp_path / "a_0050003_run1.1D", tmp_path / "a_0050003_run2.1D"], ["50003"])


def test_read_phenotype_table_keeps_text_and_stacks(tmp_path):
    (tmp_path / "a.csv").write_text("SUB_ID,AGE\n0050003,20\n")
    (tmp_path / "b.tsv").write_text("SUB_ID\tAGE\n0050004\t\n")
    table = read_phenotype_table([tmp_path / "a.csv", tmp_path / "b.tsv"])
    assert table["SUB_ID"].tolist() == ["0050003", "0050004"] and table["AGE"].tolist() == ["20", ""]
    with pytest.raises(FileNotFoundError):
        read_phenotype_table(tmp_path / "nope.csv")


def test_attributes_outside_the_registry_pass_through_as_numbers_or_text():
    raw = pd.DataFrame({"id": ["1", "2"], "iq_z": ["0.5", "-1"], "site_code": ["007", "008"], "notes": ["a", ""]})
    mapping = PhenotypeMapping(
        "x", "id",
        columns=(ColumnMapping("iq_z", "iq_z"), ColumnMapping("site_code", "scanner", numeric=False)),
    )
    frame = mapping.apply(raw).frame
    assert frame["iq_z"].tolist() == [0.5, -1.0] and frame["scanner"].tolist() == ["007", "008"]
    native = PhenotypeMapping.native(["id", "notes"], subject_id="id", site=None).apply(raw).frame
    assert native["notes"].tolist() == ["a", None] and native["site"].tolist() == ["unknown", "unknown"]


def test_dataset_column_names_each_rows_cohort():
    table = pd.DataFrame({"id": ["1", "2", "3"], "cohort": ["A", "", "B"], "age": ["20", "30", "40"]})
    mapping = PhenotypeMapping.from_dict({"name": "mixed", "subject_id": "id", "dataset": "cohort",
                                          "columns": {"age": "age"}})
    assert mapping.apply(table).frame["dataset"].tolist() == ["A", "mixed", "B"]
    native = PhenotypeMapping.native(["subject_id", "dataset", "age"])
    assert native.dataset == "dataset" and [c.attribute for c in native.columns] == ["age"]
