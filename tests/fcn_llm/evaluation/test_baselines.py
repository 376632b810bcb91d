"""Baselines learn a learnable signal; predictions come in the registry's formats."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from datasets_scripts.attributes import load_registry
from fcn_llm.evaluation import baselines
from tests.conftest import NUM_ROIS, tiny_encoder_config

REGISTRY = load_registry()


def _toy(n, seed, shift=0.0):
    """FCNs `(n, N, N)` whose edges (0, 1), (5, 6), (9, 10) carry adhd, sex and age."""
    rng = np.random.default_rng(seed)
    adhd = (rng.random(n) < 0.4).astype(float)
    sex = np.where(rng.random(n) < 0.5, "Male", "Female")
    age = rng.uniform(8, 60, n)
    series = rng.normal(size=(n, 80, NUM_ROIS))
    series[:, :, 1] += (0.9 * adhd[:, None] + shift) * series[:, :, 0]
    series[:, :, 5] += 0.8 * (sex == "Male")[:, None] * series[:, :, 6]
    series[:, :, 9] += ((age - 30) / 30)[:, None] * series[:, :, 10]
    fcns = np.stack([np.corrcoef(s.T) for s in series]).astype(np.float32)
    return fcns, pd.DataFrame({"adhd": adhd, "sex": sex, "age": age})


ATTRS = [REGISTRY["adhd"], REGISTRY["sex"], REGISTRY["age"]]


def test_edge_features_shape():
    fcns, _ = _toy(5, 0)
    assert baselines.edge_features(fcns).shape == (5, NUM_ROIS * (NUM_ROIS - 1) // 2)


def test_edge_regression_learns_a_learnable_signal():
    fcns_train, meta_train = _toy(200, 0)
    fcns_test, meta_test = _toy(120, 1, shift=0.1)
    preds, notes = baselines.edge_regression(fcns_train, meta_train, fcns_test, ATTRS)
    assert not notes
    assert preds["adhd"].shape == (120,) and roc_auc_score(meta_test["adhd"], preds["adhd"]) > 0.8
    assert preds["sex"].shape == (120, 2)
    np.testing.assert_allclose(preds["sex"].sum(1), 1.0, atol=1e-6)
    assert roc_auc_score(meta_test["sex"] == "Male", preds["sex"][:, 1]) > 0.8  # column 1 = "Male" (registry order)
    assert np.corrcoef(preds["age"], meta_test["age"])[0, 1] > 0.5


def test_edge_regression_skips_untrainable_attributes():
    fcns, meta = _toy(30, 0)
    meta["adhd"] = 0.0  # a single class
    meta["age"] = np.nan
    preds, notes = baselines.edge_regression(fcns, meta, fcns[:5], ATTRS)
    assert set(preds) == {"sex"}
    assert any(n.startswith("adhd:") for n in notes) and any(n.startswith("age:") for n in notes)


def test_categorical_classes_absent_from_training_get_zero_probability():
    fcns, _ = _toy(40, 0)
    meta = pd.DataFrame({"handedness": ["Right", "Left"] * 20})
    preds, _ = baselines.edge_regression(fcns, meta, fcns[:3], [REGISTRY["handedness"]])
    assert preds["handedness"].shape == (3, 3) and np.all(preds["handedness"][:, 2] == 0)


def test_encoder_supervised_predicts_every_attribute():
    fcns_train, meta_train = _toy(120, 0)
    fcns_test, meta_test = _toy(60, 1)
    preds, notes = baselines.encoder_supervised(tiny_encoder_config(), fcns_train, meta_train, fcns_test, ATTRS,
                                                epochs=30, lr=3e-3)
    assert preds["adhd"].shape == (60,) and preds["sex"].shape == (60, 2) and preds["age"].shape == (60,)
    assert roc_auc_score(meta_test["adhd"], preds["adhd"]) > 0.6
    assert any("epochs" in n for n in notes)


def test_oracle_turns_log_odds_into_probabilities():
    scores = {"adhd": np.array([0.0, 2.0, -2.0]), "age": np.array([10.0, 20.0, 30.0])}
    preds, notes = baselines.oracle(scores, np.array([2, 0]), ATTRS)
    np.testing.assert_allclose(preds["adhd"], [1 / (1 + np.exp(2)), 0.5])
    np.testing.assert_allclose(preds["age"], [30.0, 10.0])
    assert notes == ["sex: no oracle scores stored in the dataset"]


def test_a_nan_fcn_is_refused_by_the_processors_validation():
    fcns, meta = _toy(30, 0)
    fcns[2, 0, 1] = fcns[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match="FCN 2 has 2 NaN or inf"):
        baselines.edge_features(fcns)
    with pytest.raises(ValueError, match="FCN 2 has 2 NaN or inf"):
        baselines.edge_regression(fcns, meta, fcns[:3], ATTRS)


def test_model_heads_read_the_models_own_heads_without_the_llm():
    import torch

    from processing import prepare_fcn_stack
    from tests.conftest import make_tiny_model, make_tokenizer, random_fcns

    model = make_tiny_model(make_tokenizer(), attribute_evidence=True).eval()
    fcns = random_fcns(5, seed=3)
    keys = [h["key"] for h in model.config.auxiliary_heads]
    preds, notes = baselines.model_heads(model, fcns, [REGISTRY[k] for k in keys[:1]])
    assert list(preds) == keys[:1] and not notes  # only the asked attributes
    with torch.no_grad():
        x = torch.from_numpy(prepare_fcn_stack(fcns, "zscore"))
        outputs = model.model.get_attribute_outputs(model.model.graph_encoder(x))
    spec = model.config.auxiliary_heads[0]
    expected = torch.sigmoid(outputs[:, 0]) if spec["kind"] == "binary" else outputs[:, 0] * spec["std"] + spec["mean"]
    np.testing.assert_allclose(preds[keys[0]], expected.numpy(), rtol=1e-5, atol=1e-6)
    bare = make_tiny_model(make_tokenizer())  # no attribute heads
    assert baselines.model_heads(bare, fcns, ATTRS) == ({}, ["fcn_llm_heads: the model has no attribute heads"])


def test_the_row_space_fit_predicts_as_the_fit_on_every_edge():
    """An L2-penalised linear model on S subjects x E > S edges: the same predictions from S coordinates."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x, x_eval = rng.normal(size=(30, 200)), rng.normal(size=(7, 200))
    y = (x[:, 0] + 0.5 * rng.normal(size=30) > 0).astype(int)
    train, evaluate = baselines.row_space(x, x_eval)
    assert train.shape == (30, 29) and evaluate.shape == (7, 29)  # standardised rows sum to zero: rank S - 1
    scaler = StandardScaler().fit(x)
    full = LogisticRegression(C=0.1, tol=1e-10, max_iter=10000).fit(scaler.transform(x), y)
    reduced = LogisticRegression(C=0.1, tol=1e-10, max_iter=10000).fit(train, y)
    np.testing.assert_allclose(reduced.predict_proba(evaluate), full.predict_proba(scaler.transform(x_eval)), atol=1e-6)
    target = x[:, :3].sum(1)
    np.testing.assert_allclose(Ridge(alpha=3.0).fit(train, target).predict(evaluate),
                               Ridge(alpha=3.0).fit(scaler.transform(x), target).predict(scaler.transform(x_eval)),
                               atol=1e-8)
    few = baselines.row_space(x[:, :20], x_eval[:, :20])[0]  # no more edges than subjects: only standardised
    np.testing.assert_allclose(few, scaler.fit_transform(x[:, :20]))
