"""The training subjects' time series: kept by the simulator and the time-series loader, stored by the builder."""

import numpy as np
import pandas as pd
import pytest

from datasets_scripts import build_instructions as bi
from datasets_scripts.loading import load_config
from datasets_scripts.simulate import SimulationConfig, simulate
from datasets_scripts.subjects import SubjectTable
from datasets_scripts.timeseries_store import TIMESERIES_CONFIG, read_timeseries, standardized_float16
from processing.connectivity import compute_fcns


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts")
    bi.main(["--out", str(out), "--subjects", "60", "--check-train", "30", "--keep-timeseries", "--seed", "2"])
    return out


def test_the_simulator_keeps_the_series_its_fcns_come_from_without_changing_the_draws():
    kept = simulate(SimulationConfig(subjects=24, seed=5, oracle_pool=100, keep_timeseries=True))
    plain = simulate(SimulationConfig(subjects=24, seed=5, oracle_pool=100))
    assert plain.timeseries is None and np.array_equal(plain.fcns, kept.fcns)
    assert len(kept.timeseries) == 24 and kept.timeseries[0].dtype == np.float16
    for series, fcn in zip(kept.timeseries[:3], kept.fcns[:3]):
        assert series.shape[1] == 100 and series.shape[0] >= 200
        np.testing.assert_allclose(compute_fcns(series.astype(np.float64))[0], fcn, atol=1e-3)


def test_only_train_subjects_are_stored_and_read_back_as_their_fcns(built):
    subjects = load_config(built, "subjects")
    series = read_timeseries(load_config(built, TIMESERIES_CONFIG))
    assert set(series) == set(subjects["train"]["subject_id"])
    row = subjects["train"][0]
    fcn = compute_fcns(series[row["subject_id"]].astype(np.float64))[0]
    np.testing.assert_allclose(fcn[np.triu_indices(100, 1)], np.asarray(row["fcn"], dtype=np.float64), atol=2e-3)
    card = (built / "README.md").read_text()
    assert f"config_name: {TIMESERIES_CONFIG}" in card and "## Time series (for sliding-window FCNs)" in card


def test_a_plain_build_stores_no_series(tmp_path):
    bi.main(["--out", str(tmp_path), "--subjects", "40", "--check-train", "20"])
    assert not (tmp_path / TIMESERIES_CONFIG).exists()
    assert f"config_name: {TIMESERIES_CONFIG}" not in (tmp_path / "README.md").read_text()


def test_standardized_series_keep_their_correlations():
    x = np.random.default_rng(0).normal(size=(80, 6)) * np.arange(1, 7) + 5
    z = standardized_float16(x)
    assert z.dtype == np.float16
    np.testing.assert_allclose(np.corrcoef(z.astype(np.float64).T), np.corrcoef(x.T), atol=2e-3)


def test_series_of_the_wrong_shape_name_the_subject():
    fcns = np.stack([np.eye(5, dtype=np.float32)] * 2)
    meta = pd.DataFrame({"subject_id": ["a", "b"], "dataset": "D", "site": "s", "atlas": "x"})
    with pytest.raises(ValueError, match=r"'b'.*\(T, N=5\)"):
        SubjectTable(fcns, meta, timeseries=[np.zeros((30, 5)), np.zeros((30, 4))])
    with pytest.raises(ValueError, match="1 time series but 2 subjects"):
        SubjectTable(fcns, meta, timeseries=[np.zeros((30, 5))])
    table = SubjectTable(fcns, meta, timeseries=[np.zeros((30, 5)), None])
    assert table.subset(np.array([False, True])).timeseries == [None]
    assert SubjectTable.concat([table, SubjectTable(fcns, meta.assign(subject_id=["c", "d"]))]).timeseries[2:] == [None, None]


@pytest.mark.parametrize("extra, message", [
    (["--harmonize"], "bypass the ComBat"),
    (["--fisher-z", "--source", "timeseries", "x"], "Pearson correlations"),
    (["--source", "fcn-stack", "x"], "needs the subjects' time series"),
])
def test_keep_timeseries_refuses_what_windows_cannot_match(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        bi.parse_args(["--out", str(tmp_path), "--keep-timeseries", *extra])
    assert message in capsys.readouterr().err
