"""Supervised baselines and the oracle as per-subject predictions.

Every method returns, per attribute key, predictions for the requested subjects: binary P(1) `(S,)`,
categorical class probabilities `(S, C)` in the registry's class order, continuous values `(S,)`.
`questions.baseline_answer` turns them into answers to judgment and comparative questions.

- `edge_regression`: logistic (binary/categorical) or ridge (continuous) regression on the upper-
  triangle edges `(S, N(N-1)/2)` after the same per-subject normalisation the FCN-LLM processor uses,
  standardised per edge, with a small cross-validation over C / alpha. With more edges than training
  subjects it is fitted in the coordinates of the training subjects' span (`row_space`): an L2-penalised
  linear model's weights lie in that span, so the fit is the same, on S instead of E features.
- `encoder_supervised`: the FCN-LLM encoder and attribute heads trained directly on the attributes, as
  stage 0 does (`training.encoder_pretraining`: the encoder with token heads, then the closed-form
  linear stack with the network-level FCN): what FCN-LLM's evidence token hands the LLM.
- `oracle`: the simulator's Bayes scores (binary log-odds are turned into probabilities).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from processing.processing_fcnllm import prepare_fcn_stack

LOGISTIC_CS = (1e-3, 1e-2, 1e-1, 1.0)
RIDGE_ALPHAS = tuple(np.logspace(0, 5, 11))
MIN_TRAIN_SUBJECTS = 10


def edge_features(fcns: np.ndarray, normalization: str = "zscore") -> np.ndarray:
    """Upper-triangle edges `(S, N(N-1)/2)` float32 of FCNs `(S, N, N)`, validated and normalised per subject."""
    normed = prepare_fcn_stack(fcns, normalization) if len(fcns) else fcns
    r, c = np.triu_indices(fcns.shape[-1], 1)
    return normed[:, r, c].astype(np.float32)


def known_targets(meta: pd.DataFrame, attribute) -> tuple[np.ndarray, np.ndarray]:
    """(row mask `(S,)` of non-missing values, targets: class index / 0-1 / value)."""
    if attribute.key not in meta.columns:
        return np.zeros(len(meta), dtype=bool), np.zeros(0)
    values = meta[attribute.key]
    if attribute.kind == "categorical":
        mask = values.isin(list(attribute.classes)).to_numpy()
        return mask, np.array([list(attribute.classes).index(v) for v in values[mask]], dtype=np.int64)
    numeric = pd.to_numeric(values, errors="coerce")
    mask = numeric.notna().to_numpy()
    y = numeric[mask].to_numpy(dtype=float)
    return mask, (y.astype(np.int64) if attribute.kind == "binary" else y)


def row_space(x_train: np.ndarray, x_eval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised `x_train` `(S, E)` and `x_eval` `(S', E)` in an orthonormal basis of the standardised training
    rows' span, `(S, r)` and `(S', r)` with r <= min(S, E): for an L2-penalised linear model of the training rows
    (any loss, any subset of them, intercept unpenalised) the same weights and predictions, with r features.
    Only standardised where `x_train` has no more columns than rows."""
    scaler = StandardScaler().fit(x_train)
    train, evaluate = scaler.transform(x_train), scaler.transform(x_eval)
    if train.shape[1] <= train.shape[0]:
        return train, evaluate
    _, singular, basis = np.linalg.svd(train.astype(np.float64), full_matrices=False)
    basis = basis[singular > singular.max(initial=0.0) * 1e-10]  # the directions the rows span
    return train @ basis.T, evaluate @ basis.T


def fit_predict_edges(x_train: np.ndarray, y: np.ndarray, x_eval: np.ndarray, attribute,
                      seed: int = 0) -> np.ndarray | None:
    """Fit the edge model on `x_train` `(S, E)` with targets `y` and predict `x_eval`; None if untrainable."""
    if attribute.kind == "continuous":
        if len(y) < MIN_TRAIN_SUBJECTS or np.ptp(y) == 0:
            return None
        train, evaluate = row_space(x_train, x_eval)
        return RidgeCV(alphas=RIDGE_ALPHAS).fit(train, y).predict(evaluate).astype(float)
    classes, counts = np.unique(y, return_counts=True)
    if len(y) < MIN_TRAIN_SUBJECTS or len(classes) < 2 or counts.min() < 2:
        return None
    folds = StratifiedKFold(n_splits=int(min(3, counts.min())), shuffle=True, random_state=seed)
    model = LogisticRegressionCV(Cs=list(LOGISTIC_CS), cv=folds, scoring="neg_log_loss", max_iter=500,
                                 random_state=seed)
    train, evaluate = row_space(x_train, x_eval)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.8+ l1_ratios / legacy-attribute notices
        model.fit(train, y)
    proba = model.predict_proba(evaluate)
    if attribute.kind == "binary":
        return proba[:, list(model.classes_).index(1)] if 1 in model.classes_ else np.zeros(len(x_eval))
    out = np.zeros((len(x_eval), len(attribute.classes)))
    out[:, model.classes_] = proba  # classes never seen in training keep probability 0
    return out


def edge_regression(fcns_train: np.ndarray, meta_train: pd.DataFrame, fcns_eval: np.ndarray, attributes,
                    *, normalization: str = "zscore", seed: int = 0) -> tuple[dict[str, np.ndarray], list[str]]:
    """Edge regression per attribute, trained on (`fcns_train` `(S, N, N)`, `meta_train`), predicting `fcns_eval`.

    Returns:
        predictions per attribute key, and notes naming the attributes that could not be trained.
    """
    x_train = edge_features(fcns_train, normalization)
    x_eval = edge_features(fcns_eval, normalization)
    predictions, notes = {}, []
    for attribute in attributes:
        mask, y = known_targets(meta_train, attribute)
        pred = fit_predict_edges(x_train[mask], y, x_eval, attribute, seed) if mask.any() else None
        if pred is None:
            notes.append(f"{attribute.key}: too few labelled subjects ({int(mask.sum())}) or a single class "
                         f"to train edge regression")
            continue
        predictions[attribute.key] = pred
    return predictions, notes


def encoder_supervised(encoder_config, fcns_train: np.ndarray, meta_train: pd.DataFrame, fcns_eval: np.ndarray,
                       attributes, *, normalization: str = "zscore", epochs: int = 40, batch_size: int = 64,
                       lr: float = 1e-3, seed: int = 0, linear_network_heads: bool = True
                       ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The FCN encoder trained as a multi-task classifier/regressor (stage 0; `linear_network_heads`: its heads'
    closed-form stack of the network-level FCN and the token heads); predictions per attribute key for `fcns_eval`."""
    from fcn_llm.training.encoder_pretraining import predict_attributes, pretrain_encoder

    model, history = pretrain_encoder(encoder_config, fcns_train.astype(np.float32), meta_train, list(attributes),
                                      normalization=normalization, epochs=epochs, batch_size=batch_size, lr=lr,
                                      seed=seed, linear_network_heads=linear_network_heads)
    predictions = predict_attributes(model, fcns_eval.astype(np.float32), normalization=normalization)
    notes = [f"{a.key}: no labels to train the encoder head" for a in attributes if a.key not in predictions]
    notes.append(f"encoder_supervised: {len(history.train_loss)} epochs, best {history.best_epoch}, "
                 f"{history.seconds:.1f}s")
    return predictions, notes


def model_heads(model, fcns_eval: np.ndarray, attributes, *, normalization: str = "zscore"
                ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The evaluated FCN-LLM's own attribute heads read directly, without the LLM: the classifier on the same
    graph tokens the LLM reads (predictions per attribute key for `fcns_eval`)."""
    from fcn_llm.training.encoder_pretraining import head_predictions

    heads = model.model.graph_attribute_heads
    if heads is None:
        return {}, ["fcn_llm_heads: the model has no attribute heads"]
    predictions = head_predictions(model.model.graph_encoder, heads, fcns_eval.astype(np.float32),
                                   normalization=normalization)
    wanted = {a.key for a in attributes}
    return {k: v for k, v in predictions.items() if k in wanted}, []


def oracle(scores: dict[str, np.ndarray], rows: np.ndarray, attributes) -> tuple[dict[str, np.ndarray], list[str]]:
    """The simulator's oracle scores for subject `rows`; binary log-odds -> P(1)."""
    predictions, notes = {}, []
    for attribute in attributes:
        if attribute.key not in scores:
            notes.append(f"{attribute.key}: no oracle scores stored in the dataset")
            continue
        values = np.asarray(scores[attribute.key], dtype=float)[rows]
        if attribute.kind == "binary":
            values = 1.0 / (1.0 + np.exp(-np.clip(values, -500, 500)))
        predictions[attribute.key] = values
    return predictions, notes
