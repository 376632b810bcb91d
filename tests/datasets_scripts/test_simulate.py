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


# --------------------------------------------------------------------------------------------------
# Effects at three scales, nuisance, and the exact oracle's pieces
# --------------------------------------------------------------------------------------------------
def test_unknown_planted_region_names_it_and_the_nearest_names():
    from datasets_scripts.effects import UnknownRegionError, load_atlas, parse_effects, resolve_regions

    spec = {"reference_atlas": "schaefer100-7", "distributed_seed": 0, "attributes": {
        "anxiety": {"code": {"level": 1}, "roi": {"separability": 1.0, "regions": [
            {"region": "7Networks_LH_Limbic_OFC_9", "targets": ["Default"], "weight": 1.0}]}}}}
    with pytest.raises(UnknownRegionError, match=r"'7Networks_LH_Limbic_OFC_9' is not in atlas 'schaefer100-7'; "
                                                 r"nearest names: 7Networks_LH_Limbic_OFC_1"):
        resolve_regions(parse_effects(spec), load_atlas("schaefer100-7"))


def test_unknown_target_network_is_named():
    from datasets_scripts.effects import parse_effects

    spec = {"reference_atlas": "schaefer100-7", "distributed_seed": 0, "attributes": {
        "anxiety": {"roi": {"separability": 1.0, "regions": [{"region": "x", "targets": ["Amygdala"], "weight": 1}]}}}}
    with pytest.raises(ValueError, match=r"unknown network 'Amygdala'"):
        parse_effects(spec)


def test_default_effects_put_roi_components_on_at_least_half_of_the_conditions():
    with_roi = [c for c in sim.CONDITIONS if c in sim.EFFECTS and sim.EFFECTS[c].regions]
    assert len(with_roi) >= len(sim.CONDITIONS) / 2
    for c in with_roi:  # a sizeable share of the signal: at least a quarter of the d'^2
        seps = sim.EFFECTS[c].separabilities
        assert seps["roi"] ** 2 >= sum(v ** 2 for v in seps.values()) / 4


@pytest.fixture(scope="module")
def truth():
    return sim.planted_effects(sim.SimulationConfig())


def test_roi_component_lives_on_its_region_rows(truth):
    n = truth["num_rois"]
    mat = np.zeros((n, n))
    mat[np.triu_indices(n, 1)] = truth["edge_maps"]["depression"]["roi"]
    mat = mat + mat.T
    rois = {r["roi"] for r in truth["attributes"]["depression"]["roi"]}
    touched = np.flatnonzero(np.abs(mat).sum(1) > 0)
    rows_only = np.abs(np.delete(np.delete(mat, list(rois), 0), list(rois), 1)).max()
    assert rows_only == 0 and rois <= set(touched)
    assert (mat != 0).sum() / 2 < 0.05 * n * (n - 1) / 2  # a few region rows, not a block


def test_distributed_pattern_is_invisible_to_network_block_means(truth):
    from processing.atlases import load_atlas

    net = sim.yeo7_assignment(load_atlas("schaefer100-7"))
    n = truth["num_rois"]
    mat = np.zeros((n, n))
    mat[np.triu_indices(n, 1)] = truth["edge_maps"]["sex"]["whole_brain"]
    mat = mat + mat.T
    np.fill_diagonal(mat, 0)
    assert (mat[np.triu_indices(n, 1)] != 0).mean() > 0.95
    block = np.array([[mat[np.ix_(net == a, net == b)].sum() for b in range(7)] for a in range(7)])
    assert np.abs(block).max() < 1e-3 * np.abs(mat).sum()


def test_component_separabilities_are_their_mahalanobis_norms():
    from datasets_scripts.hcp import load_group_fcn
    from processing.atlases import load_atlas

    cfg = sim.SimulationConfig()
    atlas = load_atlas(cfg.atlas)
    net = sim.yeo7_assignment(atlas)
    ind = np.eye(7)[net]
    main = sim.clip_pd(load_group_fcn("schaefer_100", "main"), 1e-3)[0]
    psi = np.linalg.inv(ind.T @ np.linalg.solve(main + cfg.network_signal * ind @ ind.T, ind))
    model, omega = sim.effect_model(atlas, net, (psi + psi.T) / 2, cfg)
    for key in ("autism", "sex", "schizophrenia"):
        for comp, v in model.directions[key].items():
            want = sim.EFFECTS[key].separabilities[comp] * cfg.effect_scale
            assert sim._mahalanobis(v, omega) == pytest.approx(want, rel=1e-6), (key, comp)


def test_ar1_noise_has_the_lag_one_correlation_and_unit_variance():
    z = sim.ar1_noise((20, 2000, 3), 0.5, np.random.default_rng(0))
    lag1 = np.mean(z[:, 1:] * z[:, :-1])
    assert abs(z.var() - 1) < 0.05 and abs(lag1 - 0.5) < 0.03
    spec = sim.SiteSpec("s", 300, 0.3, 0.0, 0.0, 0.5, ar1=0.5)
    assert spec.effective_timepoints == pytest.approx(300 * 0.75 / 1.25)


def test_motion_artefact_falls_with_distance():
    from processing.atlases import load_atlas

    atlas = load_atlas("schaefer100-7")
    fields = sim.motion_fields(atlas.coords, 8, 30.0)
    change = fields @ fields.T
    iu = np.triu_indices(100, 1)
    dist = np.sqrt(((atlas.coords[iu[0]] - atlas.coords[iu[1]]) ** 2).sum(1))
    near, far = change[iu][dist < 30].mean(), change[iu][dist > 90].mean()
    assert near > 3 * far
    attrs = pd.DataFrame({"age": [8.0, 40.0] * 500, "adhd": [0.0] * 1000, "autism": [0.0] * 1000})
    motion = sim.sample_motion(attrs, spec := sim.SiteSpec("s", 300, 0.3, 0, 0, 0.5, motion=0.06),
                               np.random.default_rng(0))
    assert (motion > 0).all() and motion[::2].mean() > 1.2 * motion[1::2].mean()  # children move more


def test_motion_is_recorded_per_subject(table):
    assert table.info["motion"].shape == (80,) and (table.info["motion"] > 0).all()


def test_laplace_curvature_matches_finite_differences():
    import torch

    from datasets_scripts.oracle import _f_grad_hess, active_weights

    rng = np.random.default_rng(0)
    k = 4
    a, b = rng.normal(size=(k, k)), rng.normal(size=(k, k))
    psi = torch.tensor(a @ a.T + k * np.eye(k))[None]
    q = torch.tensor(b @ b.T + np.eye(k))[None]
    rows, cols = np.array([0, 0, 1, 2, 3]), np.array([0, 1, 3, 2, 3])  # a subset of the entries
    w = active_weights(rows, cols)
    ra, rb = torch.as_tensor(rows), torch.as_tensor(cols)
    flat = (ra[:, None] * k + ra[None], rb[:, None] * k + rb[None], ra[:, None] * k + rb[None], rb[:, None] * k + ra[None])
    act = (ra, rb, torch.as_tensor(w), torch.as_tensor(np.outer(w, w) / 2), flat)
    one = torch.ones(1, dtype=torch.float64)
    args = (q, one * 0.5, one * 10, one * 50, act)
    _, grad, hess = _f_grad_hess(psi, *args)

    def f(v):
        m = psi[0].clone()
        m[ra, rb] += torch.as_tensor(v)
        m[rb, ra] = m[ra, rb]
        return _f_grad_hess(m[None], *args, derivatives=False)[0].item()

    eps, p = 1e-4, len(rows)
    basis = np.eye(p)
    num_grad = np.array([(f(eps * e) - f(-eps * e)) / (2 * eps) for e in basis])
    num_hess = np.array([[(f(eps * (ei + ej)) - f(eps * (ei - ej)) - f(eps * (ej - ei)) + f(-eps * (ei + ej)))
                          / (4 * eps ** 2) for ej in basis] for ei in basis])
    np.testing.assert_allclose(grad[0].numpy(), num_grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hess[0].numpy(), num_hess, rtol=1e-3, atol=1e-4)
