"""ComBat site harmonisation (datasets_scripts/harmonize.py) and the builder's --harmonize flag."""

import warnings

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("neuroHarmonize")

from datasets_scripts import build_instructions as bi
from datasets_scripts.harmonize import (HarmonizationWarning, apply_harmonization, from_edges, harmonize_fcns,
                                        site_variance_share, to_edges)

N_ROIS = 10
AGE_EFFECT = 0.01  # Fisher-z per year on the first third of the edges


def _cohort(per_site=(40, 40, 40), seed=0, site_shift=0.3):
    """Fisher-z edges = template + site shift + age effect (first third of edges) + sex effect
    (second third) + noise scaled per site; ages differ between sites (site and age confounded)."""
    rng = np.random.default_rng(seed)
    names = [f"site{k}" for k in range(len(per_site))]
    sites = np.repeat(names, per_site)
    n, e = len(sites), N_ROIS * (N_ROIS - 1) // 2
    shifts = {s: rng.normal(0, site_shift, e) for s in names}
    scales = {s: 1.0 + 0.3 * k for k, s in enumerate(names)}
    age_mean = {s: 20.0 + 15.0 * k for k, s in enumerate(names)}
    age = np.array([age_mean[s] for s in sites]) + rng.normal(0, 10, n)
    sex = rng.choice(["Female", "Male"], n)
    groups = np.arange(e) * 3 // e  # 0: age edges, 1: sex edges, 2: no covariate effect
    z = (rng.uniform(-0.2, 0.5, e) + np.stack([shifts[s] for s in sites])
         + AGE_EFFECT * (age[:, None] - 35.0) * (groups == 0) + 0.1 * (sex == "Male")[:, None] * (groups == 1)
         + rng.normal(0, 0.1, (n, e)) * np.array([scales[s] for s in sites])[:, None])
    fcns = from_edges(z, np.ones((n, N_ROIS))).astype(np.float32)
    return fcns, sites, pd.DataFrame({"age": age, "sex": sex}), groups


def _site_mean_gap(fcns, sites, edges_mask):
    """Mean over site pairs and edges of |difference of site means| of Fisher-z edges."""
    z = to_edges(fcns)[:, edges_mask]
    means = [z[sites == s].mean(0) for s in np.unique(sites)]
    return float(np.mean([np.abs(a - b).mean() for i, a in enumerate(means) for b in means[i + 1:]]))


def _age_slope(fcns, covariates, edges_mask):
    z = to_edges(fcns)[:, edges_mask]
    x = np.column_stack([np.ones(len(z)), covariates["age"], covariates["sex"] == "Male"])
    return float(np.linalg.lstsq(x, z, rcond=None)[0][1].mean())


def test_site_offset_removed_and_age_effect_preserved():
    fcns, sites, cov, groups = _cohort()
    null_edges = groups == 2
    out, model = harmonize_fcns(fcns, sites, cov)
    before, after = _site_mean_gap(fcns, sites, null_edges), _site_mean_gap(out, sites, null_edges)
    assert after < 0.2 * before, (before, after)
    assert site_variance_share(out, sites) < 0.5 * site_variance_share(fcns, sites)
    # age is confounded with site (site means 20/35/50 years): its effect survives only because it is a covariate
    assert _age_slope(out, cov, groups == 0) == pytest.approx(AGE_EFFECT, rel=0.2)
    assert abs(_age_slope(out, cov, null_edges)) < 0.2 * AGE_EFFECT
    without, _ = harmonize_fcns(fcns, sites, None)
    assert _age_slope(without, cov, groups == 0) < 0.7 * AGE_EFFECT
    assert model.covariates == ("age", "sex") and model.sites == ("site0", "site1", "site2") and not model.dropped


def test_output_is_symmetric_with_original_diagonal_and_deterministic():
    fcns, sites, cov, _ = _cohort()
    fcns[:, np.arange(N_ROIS), np.arange(N_ROIS)] = 0.5  # any diagonal is kept as it was
    out, _ = harmonize_fcns(fcns, sites, cov)
    again, _ = harmonize_fcns(fcns.copy(), sites.copy(), cov.copy())
    assert out.dtype == np.float32 and out.shape == fcns.shape
    assert np.array_equal(out, again)
    assert np.array_equal(out, np.transpose(out, (0, 2, 1)))
    assert np.array_equal(np.diagonal(out, axis1=1, axis2=2), np.diagonal(fcns, axis1=1, axis2=2))
    off = ~np.eye(N_ROIS, dtype=bool)
    assert np.abs(out[:, off]).max() < 1 and not np.allclose(out, fcns)


def test_apply_to_held_out_subjects_of_seen_sites():
    fcns, sites, cov, groups = _cohort(per_site=(60, 60, 60))
    held = np.zeros(len(sites), dtype=bool)
    for s in np.unique(sites):
        held[np.flatnonzero(sites == s)[:30]] = True
    learned, model = harmonize_fcns(fcns[~held], sites[~held], cov[~held])
    applied = apply_harmonization(fcns[held], sites[held], cov[held].reset_index(drop=True), model)
    null_edges = groups == 2
    assert _site_mean_gap(applied, sites[held], null_edges) < 0.2 * _site_mean_gap(fcns[held], sites[held], null_edges)
    # applying the model to learning subjects of only some sites gives back what learning gave
    some = np.flatnonzero(sites[~held] == "site1")
    again = apply_harmonization(fcns[~held][some], sites[~held][some], cov[~held].iloc[some], model)
    np.testing.assert_allclose(again, learned[some], atol=1e-6)


def test_unseen_sites_cannot_be_harmonised():
    fcns, sites, cov, _ = _cohort()
    _, model = harmonize_fcns(fcns, sites, cov)
    new_sites = np.where(sites == "site2", "siteZ", sites)
    with pytest.raises(ValueError, match=r"Cannot harmonise site\(s\) \['siteZ'\].*unseen sites"):
        apply_harmonization(fcns, new_sites, cov, model)


def test_single_site_is_an_error():
    fcns, _, cov, _ = _cohort()
    with pytest.raises(ValueError, match="one site \\('a'\\): there is nothing to harmonise"):
        harmonize_fcns(fcns, ["a"] * len(fcns), cov)


def test_site_with_one_subject_is_an_error():
    fcns, sites, cov, _ = _cohort()
    sites = sites.astype(object)
    sites[0] = "lonely"
    with pytest.raises(ValueError, match=r"fewer than 2 subjects: \{'lonely': 1\}"):
        harmonize_fcns(fcns, sites, cov)


def test_nan_in_fcns_is_an_error():
    fcns, sites, cov, _ = _cohort()
    fcns[3, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 subject\(s\) \(indices \[3\]\)"):
        harmonize_fcns(fcns, sites, cov)


def test_shape_mismatches_are_errors():
    fcns, sites, cov, _ = _cohort()
    with pytest.raises(ValueError, match=r"shape \(S, N, N\), got \(120, 10, 9\)"):
        harmonize_fcns(fcns[:, :, :9], sites, cov)
    with pytest.raises(ValueError, match="sites has 119 entries but there are 120 FCNs"):
        harmonize_fcns(fcns, sites[:-1], cov)
    with pytest.raises(ValueError, match="covariates has 119 rows but there are 120 FCNs"):
        harmonize_fcns(fcns, sites, cov.iloc[:-1])
    _, model = harmonize_fcns(fcns, sites, cov)
    small = from_edges(np.zeros((3, 6)), np.ones((3, 4))).astype(np.float32)
    with pytest.raises(ValueError, match="N=4 ROIs but the harmonisation model was learned on N=10"):
        apply_harmonization(small, ["site0"] * 3, cov.iloc[:3], model)


def test_non_correlations_need_fisher_z_off():
    fcns, sites, cov, _ = _cohort()
    with pytest.raises(ValueError, match="not correlations.*fisher_z=False"):
        harmonize_fcns(fcns * 3, sites, cov)
    out, model = harmonize_fcns(fcns * 3, sites, cov, fisher_z=False)
    assert not model.fisher_z and np.isfinite(out).all()


def test_missing_covariate_column_is_an_error():
    fcns, sites, cov, _ = _cohort()
    with pytest.raises(KeyError, match=r"missing covariate column\(s\) \['iq'\]; available columns: \['age', 'sex'\]"):
        harmonize_fcns(fcns, sites, cov, columns=["age", "iq"])
    _, model = harmonize_fcns(fcns, sites, cov)
    with pytest.raises(KeyError, match=r"missing covariate column\(s\) \['sex'\]"):
        apply_harmonization(fcns, sites, cov[["age"]], model)
    with pytest.raises(ValueError, match="'SITE' column: that name is reserved"):
        harmonize_fcns(fcns, sites, cov.assign(SITE=sites))


def test_unusable_covariates_are_dropped_with_a_warning():
    fcns, sites, cov, _ = _cohort()
    cov = cov.assign(bmi=np.where(np.arange(len(cov)) == 5, np.nan, 22.0 + np.arange(len(cov)) % 7),
                     scanner_field=np.where(sites == "site0", 1.5, 3.0), handedness="R")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, model = harmonize_fcns(fcns, sites, cov)
    messages = " | ".join(str(w.message) for w in caught if issubclass(w.category, HarmonizationWarning))
    assert "'bmi' dropped: 1 of 120 subjects have no value" in messages
    assert "'handedness' dropped: a single value" in messages
    assert "'scanner_field' dropped: confounded with site" in messages
    assert model.covariates == ("age", "sex") and set(model.dropped) == {"bmi", "handedness", "scanner_field"}
    with pytest.raises(ValueError, match=r"Covariate 'age' is missing for 1 subject\(s\) \(indices \[2\]\)"):
        apply_harmonization(fcns[:5], sites[:5], cov.iloc[:5].assign(age=[1.0, 2.0, np.nan, 3.0, 4.0]), model)


# --------------------------------------------------------------------------------------------------
# The builder's --harmonize
# --------------------------------------------------------------------------------------------------
def _fcns_of(path):
    table = pq.read_table(path).to_pandas()
    return table, np.stack(table["fcn"].to_numpy()).astype(np.float32)


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    plain, harmonized = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("harmonized")
    args = ["--subjects", "120", "--check-train", "100"]
    return bi.main(["--out", str(plain), *args]), bi.main(["--out", str(harmonized), *args, "--harmonize"])


def test_builder_harmonizes_train_and_validation_only(two_builds):
    plain, harmonized = two_builds
    for split in ("train", "validation", "zero_shot"):
        meta_p, fcn_p = _fcns_of(plain.out / "subjects" / f"{split}.parquet")
        meta_h, fcn_h = _fcns_of(harmonized.out / "subjects" / f"{split}.parquet")
        assert meta_p["subject_id"].tolist() == meta_h["subject_id"].tolist()
        assert pq.read_table(plain.out / "instructions" / f"{split}.parquet").equals(
            pq.read_table(harmonized.out / "instructions" / f"{split}.parquet"))
        if split == "zero_shot":
            assert np.array_equal(fcn_p, fcn_h)  # unseen sites: never touched
        else:
            assert not np.array_equal(fcn_p, fcn_h)
    meta, fcn_p = _fcns_of(plain.out / "subjects" / "train.parquet")
    _, fcn_h = _fcns_of(harmonized.out / "subjects" / "train.parquet")
    as_matrices = lambda tri: from_edges(tri.astype(np.float64), np.ones((len(tri), 100)), fisher_z=False)
    batches = (meta["dataset"] + "/" + meta["site"]).to_numpy()
    assert site_variance_share(as_matrices(fcn_h), batches) < 0.5 * site_variance_share(as_matrices(fcn_p), batches)
    assert harmonized.harmonization["covariates"] == ["age", "sex"] and plain.harmonization is None


def test_builder_card_says_what_was_harmonized(two_builds):
    plain, harmonized = two_builds
    card = (harmonized.out / "README.md").read_text()
    assert "## Site harmonisation" in card
    assert "learned on `train`" in card and "applied to `validation`" in card and "`zero_shot`" in card
    assert "`zero_shot` (unseen cohorts and sites) not harmonised" in card
    assert "Covariates whose effects were preserved: `age`, `sex`." in card
    assert "Not harmonised" in (plain.out / "README.md").read_text()


def _small_table(sites, **columns):
    from datasets_scripts.subjects import SubjectTable

    rng = np.random.default_rng(0)
    n = len(sites)
    fcns = np.stack([np.corrcoef(rng.normal(size=(60, 100)).T) for _ in range(n)]).astype(np.float32)
    meta = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)], "dataset": "A", "site": sites,
                         "atlas": "schaefer100-7", **columns})
    return SubjectTable(fcns, meta)


def test_builder_names_validation_sites_without_train_subjects(tmp_path):
    table = _small_table(["a1"] * 5 + ["a2"] * 5 + ["a3"] * 2, age=np.linspace(20, 60, 12))
    split = np.array(["train"] * 10 + ["validation"] * 2, dtype=object)
    with pytest.raises(ValueError, match=r"site\(s\) \['A/a3'\] that have no train subjects"):
        bi.build(tmp_path, table, "schaefer100-7", split=split, harmonize=True)


def test_builder_drops_covariates_missing_in_validation_and_says_so(tmp_path):
    age = np.linspace(20, 60, 12)
    age[11] = np.nan  # a validation subject without age
    table = _small_table(["a1", "a2"] * 6, age=age, sex=["Female", "Male", "Male"] * 4)
    split = np.array(["train"] * 10 + ["validation"] * 2, dtype=object)
    with pytest.warns(HarmonizationWarning, match="'age' dropped: 1 validation subjects have no value"):
        result = bi.build(tmp_path, table, "schaefer100-7", split=split, harmonize=True)
    card = (tmp_path / "README.md").read_text()
    assert "preserved: `sex`. Dropped: `age` (1 validation subjects have no value)" in card
    assert result.harmonization["applied_to"] == ["validation"] and "zero_shot" not in card.split("## Site")[1].split("##")[0]
