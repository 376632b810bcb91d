"""The local evaluate metric modules give sklearn's / scipy's numbers."""

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from fcn_llm.evaluation.metrics import classification_metrics, load_metric, regression_metrics


def test_binary_known_values():
    out = load_metric("classification", "binary").compute(
        predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], prediction_scores=[0.1, 0.9, 0.6, 0.2])
    assert out == {"n": 4, "accuracy": 0.75, "balanced_accuracy": pytest.approx(5 / 6), "auc": 1.0}


def test_binary_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = y + rng.normal(0, 1.2, 200)
    pred = (scores > 0.5).astype(int)
    out = classification_metrics(y, scores, pred)
    assert out["auc"] == pytest.approx(roc_auc_score(y, scores))
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))


def test_multiclass_matches_sklearn_macro_ovr():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300) + 0.5 * np.eye(3)[y]
    probs /= probs.sum(1, keepdims=True)
    out = classification_metrics(y, probs)
    assert out["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert out["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))


def test_single_class_auc_is_nan():
    out = classification_metrics(np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9]), np.array([0, 1, 1]))
    assert math.isnan(out["auc"]) and out["accuracy"] == pytest.approx(2 / 3)


def test_regression_matches_scipy():
    rng = np.random.default_rng(2)
    y = rng.normal(30, 10, 100)
    pred = y + rng.normal(0, 5, 100)
    out = regression_metrics(y, pred)
    assert out["n"] == 100
    assert out["mae"] == pytest.approx(np.mean(np.abs(pred - y)))
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)))
    assert out["pearson_r"] == pytest.approx(pearsonr(pred, y)[0])
    assert out["spearman_rho"] == pytest.approx(spearmanr(pred, y)[0])


def test_regression_constant_prediction_has_nan_r():
    out = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    assert out["mae"] == pytest.approx(2 / 3) and math.isnan(out["pearson_r"])


def test_unknown_metric_module():
    with pytest.raises(FileNotFoundError, match="No local metric module"):
        load_metric("nonexistent")
