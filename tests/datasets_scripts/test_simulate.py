import numpy as np
import pandas as pd
import pytest

import datasets_scripts.simulate as sim
from datasets_scripts.attributes import DEFAULT_KEYS


@pytest.fixture(scope="module")
def table():
    return sim.simulate(sim.SimulationConfig(subjects=80, oracle_pool=300, seed=1))


def test_shapes_and_columns(table):
    assert table.fcns.shape == (80, 100, 100) and table.fcns.dtype == np.float32
    assert list(table.meta.columns[:4]) == ["subject_id", "dataset", "site", "atlas"]
    assert set(DEFAULT_KEYS) <= set(table.meta.columns)
    assert table.meta["subject_id"].is_unique
    np.testing.assert_allclose(np.diagonal(table.fcns, axis1=1, axis2=2), 1.0, atol=1e-5)
    assert np.allclose(table.fcns, np.swapaxes(table.fcns, 1, 2), atol=1e-6)


def test_cohorts_have_several_sites_and_zero_shot_cohorts_are_separate(table):
    info = table.info
    assert info["zero_shot_datasets"] and info["seen_datasets"]
    assert not set(info["zero_shot_datasets"]) & set(info["seen_datasets"])
    assert (table.meta.groupby("dataset")["site"].nunique() >= 2).all()
    templates = {info["sites"][s]["template"] for s in table.meta.loc[table.meta.dataset.isin(info["zero_shot_datasets"]), "site"]}
    assert templates == {"holdout"}


def test_value_conventions(table):
    meta = table.meta
    assert set(meta["sex"].dropna()) <= {"Female", "Male"}
    assert set(meta["handedness"].dropna()) <= {"Right", "Left", "Ambidextrous"}
    assert set(meta["autism"].dropna()) <= {0.0, 1.0} and meta["autism"].dtype == float
    assert meta["ados_total"].isna().any()  # not measured everywhere: skipped later, never invented


def test_ground_truth_recorded(table):
    maps = table.info["effect_maps"]
    assert maps["autism"].shape == (100, 100) and np.abs(maps["autism"]).max() > 0
    for key in ("handedness", "education_years", "bmi", "ocd"):
        assert key not in maps  # attributes with no planted effect
    assert ("Default", "Default", -1.0) in table.info["planted_pairs"]["autism"]
    scores = table.info["oracle_scores"]
    assert scores["autism"].shape == (80,) and np.isfinite(scores["autism"]).all()
    assert scores["handedness"].shape == (80, 3)


def test_reproducible_from_seed():
    cfg = sim.SimulationConfig(subjects=24, oracle_pool=200, seed=3)
    a, b = sim.simulate(cfg), sim.simulate(cfg)
    np.testing.assert_array_equal(a.fcns, b.fcns)
    pd.testing.assert_frame_equal(a.meta, b.meta)


def test_correlated_attributes():
    cohort = sim.DEFAULT_COHORTS[3]
    df = sim.sample_attributes(cohort, cohort.sites[0], 4000, np.random.default_rng(0))
    assert np.corrcoef(df.viq, df.piq)[0, 1] > 0.5
    assert df.loc[df.autism == 1, "ados_total"].mean() > df.loc[df.autism == 0, "ados_total"].mean() + 5


def test_template_of_the_wrong_size_names_both_sizes(monkeypatch):
    monkeypatch.setattr(sim, "load_group_fcn", lambda parcellation, group: np.eye(50))
    with pytest.raises(ValueError, match="N=50 ROIs but atlas 'schaefer100-7' has N=100"):
        sim.simulate(sim.SimulationConfig(subjects=10))


def test_non_schaefer_atlas_is_rejected():
    with pytest.raises(ValueError, match="Schaefer"):
        sim.simulate(sim.SimulationConfig(subjects=10, atlas="aal116"))


def test_oracle_laplace_fit_recovers_network_matrix():
    from datasets_scripts.oracle import laplace_fit, vech

    rng = np.random.default_rng(0)
    n, k, t, kappa = 40, 3, 400, 60.0
    ind = np.eye(k)[np.arange(n) % k]
    base = 0.3 * ind @ ind.T + 0.7 * np.eye(n)
    psi = np.linalg.inv(ind.T @ np.linalg.solve(base, ind))
    shift = np.diag([0.05, -0.03, 0.0])
    cov = base + ind @ shift @ ind.T
    x = sim.sample_time_series(np.repeat(cov[None], 200, 0), kappa, t, rng).numpy()
    g1 = np.stack([ind.T @ np.linalg.solve(kappa * base + xi.T @ xi, ind) for xi in x])
    fit = laplace_fit(g1, np.repeat(psi[None], 200, 0), kappa, n + 1 + kappa, np.full(200, t))
    err = fit.psi_hat.mean(0) - vech(psi + shift)
    se = np.sqrt(np.diagonal(fit.info_inv, axis1=1, axis2=2).mean(0) / 200)
    assert np.all(np.abs(err) < 5 * se + 1e-3)
