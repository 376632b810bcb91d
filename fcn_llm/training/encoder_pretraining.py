"""Stage 0: pre-train the FCN encoder on the seen cohorts' attributes with light multi-task heads.

Alignment of a frozen LLM to a random encoder stalls on CPU budgets (shared DESIGN §10): the graph
tokens are nearly identical across subjects, so the LLM learns the class prior. Training the encoder
directly as a multi-attribute predictor takes seconds and gives stage 1 tokens that differ between
subjects. The same code is the `encoder_supervised` baseline of the zero-shot evaluation.

Early stopping on a held-out part of the training subjects (by subject) keeps stage 0 from
over-separating the training subjects (DESIGN §10's readout gap).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from torch import nn

from modeling_fcnllm import (
    AttributeHeadConfig,
    FCNEncoderConfig,
    FCNEncoderForAttributePrediction,
    FCNEncoderModel,
    GraphAttributeHeads,
)
from processing.processing_fcnllm import prepare_fcn_stack

LOGISTIC_CS = (1e-3, 1e-2, 1e-1, 1.0)
RIDGE_ALPHAS = tuple(np.logspace(-1, 4, 11))
ABSENT_LOGIT = -20.0  # logit of a class no training subject has (it is never chosen)


def head_specs(meta: pd.DataFrame, attributes) -> list[AttributeHeadConfig]:
    """Specs for the registry `attributes` that have at least 2 distinct non-missing values in `meta`."""
    specs = []
    for attr in attributes:
        if attr.key not in meta.columns:
            continue
        values = meta[attr.key].dropna()
        if values.nunique() < 2:
            continue
        if attr.kind == "continuous":
            x = values.astype(float)
            specs.append(AttributeHeadConfig(attr.key, "continuous", 1, mean=float(x.mean()), std=float(x.std() or 1.0),
                                             valid_range=attr.valid_range, decimals=int(attr.decimals or 0)))
        elif attr.kind == "binary":
            specs.append(AttributeHeadConfig(attr.key, "binary", 1))
        else:
            specs.append(AttributeHeadConfig(attr.key, "categorical", len(attr.classes), classes=tuple(attr.classes)))
    return specs


def attribute_model(specs: list[AttributeHeadConfig], encoder_config: FCNEncoderConfig) -> FCNEncoderForAttributePrediction:
    """A new `FCNEncoderForAttributePrediction`: an encoder of `encoder_config` with heads `specs` (its
    config's `attribute_heads`), what stage 0 trains and saves."""
    config = FCNEncoderConfig.from_dict({**encoder_config.to_dict(), "attribute_heads": [s.to_dict() for s in specs]})
    return FCNEncoderForAttributePrediction(config)


def nan_targets(meta: pd.DataFrame, specs: list[AttributeHeadConfig]) -> torch.Tensor:
    """`encode_targets` as one `(S, A)` tensor with NaN where a target is unknown (the heads' label format)."""
    targets, mask = encode_targets(meta, specs)
    return torch.where(mask, targets, torch.full_like(targets, float("nan")))


def encode_targets(meta: pd.DataFrame, specs: list[AttributeHeadConfig]) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets `(S, A)` float (class index for categorical, standardised value for continuous) and a mask `(S, A)`."""
    targets = np.zeros((len(meta), len(specs)), dtype=np.float32)
    mask = np.zeros_like(targets, dtype=bool)
    for j, spec in enumerate(specs):
        column = meta[spec.key] if spec.key in meta.columns else pd.Series([None] * len(meta))
        for i, value in enumerate(column.tolist()):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if spec.kind == "categorical":
                if value not in spec.classes:
                    continue
                targets[i, j] = spec.classes.index(value)
            elif spec.kind == "binary":
                targets[i, j] = float(value)
            else:
                targets[i, j] = (float(value) - spec.mean) / spec.std
            mask[i, j] = True
    return torch.from_numpy(targets), torch.from_numpy(mask)


@torch.no_grad()
def stack_network_heads(heads: GraphAttributeHeads, encoder: FCNEncoderModel, x: torch.Tensor, targets: torch.Tensor,
                        seed: int = 0, batch_size: int = 256) -> None:
    """Fit the heads' final linear stack in closed form: the network-level FCN next to the trained token heads.

    Per attribute j, a cross-validated L2 logistic (binary, categorical) or ridge (continuous) regression
    on [z, t_j]: z `(S, K(K+1)/2)` the standardised upper triangle of the network-level FCN of the
    subjects `x` `(S, N, N)` (normalised FCNs), t_j `(S, C_j)` the token head's outputs (standardised),
    for the subjects whose `targets[:, j]` `(S, A)` is known. The fit is folded back into the heads:
    the network path gets z's coefficients and the intercept, the token head becomes B W_t (B: the
    coefficients of t_j), so the heads compute exactly the fitted model. Attributes that cannot be
    fitted (one class, too few labels) keep their token head.
    """
    heads.eval(), encoder.eval()
    encoded = [encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    features = torch.cat([heads.network_features(e.network_connectivity) for e in encoded]).double()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    heads.network_mean.copy_(mean)
    heads.network_std.copy_(std)
    z = ((features - mean) / std).numpy()
    flat = torch.cat([heads.norm(e.graph_tokens).flatten(1) for e in encoded])
    for j, spec in enumerate(heads.specs):
        network_head, token_head = heads.network_heads[spec.key], heads.heads[spec.key]
        tokens = token_head(flat).double()
        t_mean, t_std = tokens.mean(0), tokens.std(0).clamp_min(1e-6)
        stacked = np.concatenate([z, ((tokens - t_mean) / t_std).numpy()], axis=1)
        known = ~torch.isnan(targets[:, j]).numpy()
        weight, bias = _fit_linear(stacked[known], targets[known, j].numpy(), spec, seed)
        if weight is None:
            continue
        weight, bias = torch.from_numpy(weight).double(), torch.from_numpy(bias).double()
        on_z, on_tokens = weight[:, : z.shape[1]], weight[:, z.shape[1] :] / t_std  # (C, F), (C, C_j)
        network_head.weight.copy_(on_z)
        network_head.bias.copy_(bias + on_tokens @ (token_head.bias.double() - t_mean))
        token_head.weight.copy_(on_tokens @ token_head.weight.double())
        token_head.bias.zero_()


def _fit_linear(z: np.ndarray, y: np.ndarray, spec: AttributeHeadConfig, seed: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Weights `(num_outputs, F)` and bias `(num_outputs,)` of one head's linear model; (None, None) if untrainable."""
    if spec.kind == "continuous":
        if len(y) < 10 or np.ptp(y) == 0:
            return None, None
        model = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, y)
        return model.coef_[None].astype(np.float32), np.array([model.intercept_], dtype=np.float32)
    labels = y.astype(np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() < 3:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegressionCV(Cs=list(LOGISTIC_CS), cv=3, scoring="neg_log_loss", max_iter=500,
                                     random_state=seed).fit(z, labels)
    if spec.kind == "binary":
        return model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    return class_logits(model, spec.num_outputs)


def class_logits(classifier, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted sklearn logistic regression as linear logits of all `num_classes` classes: weight
    `(num_classes, F)` and bias `(num_classes,)` float32 (same softmax over the fitted classes).

    Classes absent from the fit get `ABSENT_LOGIT`. With two classes sklearn keeps one row, the logit
    of classes_[1] against classes_[0]; it is split +-1/2 over the two, so each class's output varies
    (the evidence token can read "female?" as well as "male?").
    """
    weight = np.zeros((num_classes, classifier.coef_.shape[1]), dtype=np.float32)
    bias = np.full(num_classes, ABSENT_LOGIT, dtype=np.float32)
    if len(classifier.classes_) == 2:
        first, second = classifier.classes_
        weight[second], weight[first] = classifier.coef_[0] / 2, -classifier.coef_[0] / 2
        bias[second], bias[first] = classifier.intercept_[0] / 2, -classifier.intercept_[0] / 2
    else:
        weight[classifier.classes_], bias[classifier.classes_] = classifier.coef_, classifier.intercept_
    return weight, bias


@dataclass
class PretrainingHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    samples_seen: int = 0
    seconds: float = 0.0


def pretrain_encoder(
    encoder_config: FCNEncoderConfig,
    fcns: np.ndarray,
    meta: pd.DataFrame,
    attributes,
    *,
    normalization: str = "zscore",
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    val_fraction: float = 0.15,
    patience: int = 5,
    seed: int = 0,
    max_seconds: float | None = None,
    log_every: int = 0,
    linear_network_heads: bool = True,
) -> tuple[FCNEncoderForAttributePrediction, PretrainingHistory]:
    """Train an `FCNEncoderForAttributePrediction` (an encoder of `encoder_config` + attribute heads) to
    predict `attributes` from `fcns`.

    The encoder and the token heads are trained first (the network path silent), with early stopping
    on held-out subjects. With `linear_network_heads` (default), the heads' outputs then become a
    closed-form linear stack of the network-level FCN and the token heads' outputs, fitted on all
    the subjects (`stack_network_heads`); without it, the network path stays zero.

    Args:
        fcns: `(S, N, N)` FCNs of the training subjects, rows aligned with `meta`.
        meta: one row per subject with attribute columns (NaN/None = missing, skipped).
        attributes: registry `Attribute`s to predict (those without 2+ values in `meta` are dropped).
        val_fraction: subjects held out for early stopping (best validation loss is kept).
    Returns:
        the trained model (best epoch, in eval mode; its config's `attribute_heads` are the heads' specs) and
        the history.
    """
    if fcns.ndim != 3 or len(fcns) != len(meta):
        raise ValueError(f"fcns must be (S, N, N) aligned with meta ({len(meta)} rows), got {fcns.shape}.")
    specs = head_specs(meta, attributes)
    if not specs:
        raise ValueError("No attribute has two or more distinct values in these subjects: nothing to pre-train on.")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(prepare_fcn_stack(fcns, normalization))
    targets = nan_targets(meta, specs)
    order = rng.permutation(len(x))
    num_val = int(round(val_fraction * len(x))) if len(x) >= 20 else 0
    val_idx, train_idx = order[:num_val], order[num_val:]

    start = time.perf_counter()
    model = attribute_model(specs, encoder_config)
    encoder, heads = model.encoder, model.attribute_heads
    heads.network_heads.requires_grad_(False)
    history, best, bad_epochs = PretrainingHistory(), (math.inf, None), 0
    params = [p for p in (*encoder.parameters(), *heads.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    for epoch in range(epochs):
        encoder.train(), heads.train()
        perm = rng.permutation(train_idx)
        epoch_loss = []
        for i in range(0, len(perm), batch_size):
            idx = torch.from_numpy(perm[i : i + batch_size])
            loss = heads.loss(heads(encoder(x[idx])), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            epoch_loss.append(loss.item())
            history.samples_seen += len(idx)
        history.train_loss.append(float(np.mean(epoch_loss)))
        if num_val:
            val_loss = _evaluate_loss(encoder, heads, x[val_idx], targets[val_idx], batch_size)
            history.val_loss.append(val_loss)
            if val_loss < best[0] - 1e-4:
                best, bad_epochs, history.best_epoch = (val_loss, _snapshot(encoder, heads)), 0, epoch
            else:
                bad_epochs += 1
        if log_every and (epoch % log_every == 0 or epoch == epochs - 1):
            val = f", val {history.val_loss[-1]:.4f}" if num_val else ""
            print(f"  stage 0 epoch {epoch}: train {history.train_loss[-1]:.4f}{val}", flush=True)
        if num_val and bad_epochs >= patience:
            break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    if best[1] is not None:
        encoder.load_state_dict(best[1][0])
        heads.load_state_dict(best[1][1])
    if linear_network_heads:  # on all stage-0 subjects: the held-out ones temper the (optimistic) token outputs
        stack_network_heads(heads, encoder, x, targets, seed)
    history.seconds = time.perf_counter() - start
    return model.eval(), history


def _snapshot(*modules: nn.Module) -> tuple[dict, ...]:
    return tuple(copy.deepcopy(m.state_dict()) for m in modules)


@torch.no_grad()
def _evaluate_loss(encoder, heads, x, targets, batch_size) -> float:
    encoder.eval(), heads.eval()
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        sl = slice(i, i + batch_size)
        total += heads.loss(heads(encoder(x[sl])), targets[sl]).item() * len(x[sl])
        count += len(x[sl])
    return total / max(count, 1)


@torch.no_grad()
def predict_attributes(
    model: FCNEncoderForAttributePrediction, fcns: np.ndarray, normalization: str = "zscore", batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Per attribute of `model`'s heads, from FCNs `(S, N, N)`: binary P(1) `(S,)`, categorical probabilities
    `(S, C)` (classes order), continuous value `(S,)`."""
    return head_predictions(model.encoder, model.attribute_heads, fcns, normalization, batch_size)


@torch.no_grad()
def head_predictions(encoder: nn.Module, heads: GraphAttributeHeads, fcns: np.ndarray, normalization: str = "zscore",
                     batch_size: int = 256) -> dict[str, np.ndarray]:
    """`predict_attributes` for an encoder and its heads wherever they live (a stage-0 model, or an FCN-LLM's
    `graph_encoder` and `graph_attribute_heads`); FCNs `(S, N, N)` are validated and normalised first."""
    encoder, heads = encoder.eval(), heads.eval()
    dtype = next(heads.parameters()).dtype
    x = torch.from_numpy(prepare_fcn_stack(fcns, normalization))
    outputs = torch.cat([heads(encoder(x[i : i + batch_size].to(dtype))).float() for i in range(0, len(x), batch_size)])
    predictions = {}
    for spec, (key, out) in zip(heads.specs, heads.split(outputs).items()):
        if spec.kind == "binary":
            predictions[key] = torch.sigmoid(out[:, 0]).numpy()
        elif spec.kind == "categorical":
            predictions[key] = torch.softmax(out, -1).numpy()
        else:
            predictions[key] = (out[:, 0] * spec.std + spec.mean).numpy()
    return predictions
