import json

import numpy as np
import pytest

from datasets_scripts.attributes import DEFAULT_KEYS, PARADIGMS, load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_default_registry_has_the_19_keys_in_order(registry):
    assert tuple(registry) == DEFAULT_KEYS
    assert len(registry) == 19


def test_kinds_and_classes(registry):
    assert registry["sex"].classes == ("Female", "Male")
    assert registry["handedness"].classes == ("Right", "Left", "Ambidextrous")
    assert registry["eye_status"].classes == ("Open", "Closed")
    assert registry["adhd"].kind == "binary" and registry["age"].kind == "continuous"


def test_every_attribute_has_several_paraphrases(registry):
    for attr in registry.values():
        assert len(attr.templates["predictive"]) >= 2, attr.key
        assert len(attr.templates["judgment"]) >= 2, attr.key
        if attr.kind != "categorical":
            assert attr.templates["comparative"], attr.key


def test_answer_formatting(registry):
    assert registry["age"].format_value(34.4) == "34"
    assert registry["bmi"].format_value(23.44) == "23.4"
    assert registry["sex"].format_value("Female") == "Female"
    assert registry["adhd"].format_value(1.0) == "ADHD"


def test_missing_values_are_recognised(registry):
    assert registry["age"].is_missing(float("nan")) and registry["sex"].is_missing(None)
    assert registry["age"].is_missing(np.float32("nan")) and not registry["age"].is_missing(3.0)


def test_unknown_key_names_the_allowed_keys(registry):
    with pytest.raises(KeyError, match="allowed attribute keys: age, sex"):
        registry["iq"]
    with pytest.raises(KeyError, match="'iq'"):
        registry.select(["age", "iq"])


def test_bad_values_are_rejected_with_the_allowed_values(registry):
    with pytest.raises(ValueError, match=r"\['Female', 'Male'\]"):
        registry["sex"].check_value("F")
    with pytest.raises(ValueError, match="0 \\(no\\) or 1"):
        registry["adhd"].check_value(2)
    with pytest.raises(ValueError, match="valid range"):
        registry["age"].check_value(250.0)


def test_users_add_an_attribute_by_editing_the_data_file(tmp_path):
    data = json.loads((__import__("datasets_scripts.attributes", fromlist=["x"]).DEFAULT_REGISTRY_PATH).read_text())
    data["attributes"]["reaction_time"] = {
        "kind": "continuous", "name": "mean reaction time", "units": "ms", "valid_range": [100, 2000],
        "thresholds": [400],
        "templates": {"predictive": ["What is this subject's mean reaction time?", "Estimate the reaction time."],
                      "judgment": ["Is this subject's reaction time above {threshold} ms? Answer yes or no."],
                      "comparative": ["Which of the two subjects reacts more slowly, the first or the second?"]}}
    path = tmp_path / "attrs.json"
    path.write_text(json.dumps(data))
    reg = load_registry(path)
    assert len(reg) == 20 and reg["reaction_time"].paradigms() == list(PARADIGMS)


def test_malformed_entries_are_rejected(tmp_path):
    bad = {"attributes": {"x": {"kind": "continuous", "valid_range": [0, 1],
                                "templates": {"judgment": ["Is it high?"]}}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="threshold"):
        load_registry(path)
