import pytest

from tests.hf_test_suite import VERSION, SuiteUnavailable, fetch, load, suite_dir


def test_a_version_without_an_sdist_raises_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_LLM_CACHE", str(tmp_path))
    with pytest.raises(SuiteUnavailable, match=r"transformers 0\.0\.1\.dev999 sdist"):
        fetch("0.0.1.dev999")
    assert not (tmp_path / "transformers-tests" / "0.0.1.dev999").exists()  # nothing half-written is kept


def test_the_suite_is_the_installed_versions_from_the_cache():
    try:
        suite = load()
    except SuiteUnavailable as error:
        pytest.skip(str(error))
    assert suite.modeling.__file__ == str(suite_dir(VERSION) / "test_modeling_common.py")
    assert hasattr(suite.modeling, "ModelTesterMixin") and hasattr(suite.configuration, "ConfigTester")
