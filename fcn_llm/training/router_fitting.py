"""Fit the evidence token's router in closed form before stage 1.

The router (`InstructionConditioning.route`) is a bag-of-words linear classifier: a linear map of the
sum of the instruction tokens' layer-normed embeddings `(B, D)`, over the attribute heads. The
training instructions say which attribute they ask about, so it is fitted here as a multinomial
logistic regression on those features, instead of being learned from scratch by the answer loss
(which, with the earlier log-sum-exp pooling, sent half the demo's anxiety questions to the ADHD
head after 400 steps). Stage 1 then fine-tunes it with the routing loss. With one readout per
paradigm (`evidence_paradigms`), the question's paradigm (judgment, predictive, comparative) is
classified the same way (`fit_paradigms`), and so is whether a judgment asks the other way round ("Can ADHD
be ruled out?", "younger than 40?": `fit_turns`, one classifier for every head); stage 1 then trains both
with their own losses (`paradigm_labels`, `turn_labels`, built by the collator), never with the answer loss.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from fcn_llm.questions import row_value

from .encoder_pretraining import ABSENT_LOGIT, class_logits

logger = logging.getLogger("fcn_llm.train")


@torch.no_grad()
def instruction_features(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict],
                         batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Router features `(S, D)` of the training instructions `rows` and their head indices `(S,)` (-100: no
    head). `collate` is the training collator: the same tokens, masks and `routing_labels` as in training."""
    features, labels = [], []
    for start in range(0, len(rows), batch_size):
        batch = collate(list(rows[start : start + batch_size]))
        if "routing_labels" not in batch:
            raise ValueError("The collator gives no routing_labels: build it with routing_keys (the heads' keys).")
        prompt = batch["labels"] == -100  # the answer is never read, as in FCNLLMForCausalLM.forward
        features.append(model.model.routing_features(batch["input_ids"], batch["attention_mask"], prompt).numpy())
        labels.append(batch["routing_labels"].numpy())
    return np.concatenate(features), np.concatenate(labels)


def routing_dataset(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict],
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """`instruction_features` of the rows whose attribute has a head."""
    x, y = instruction_features(model, collate, rows, batch_size)
    known = y >= 0
    return x[known], y[known]


def _sample(rows: Sequence[dict], max_rows: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [rows[i] for i in sorted(rng.choice(len(rows), size=min(max_rows, len(rows)), replace=False).tolist())]


def _logistic_regression(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)


def fit_router(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *, max_rows: int = 4096,
               seed: int = 0, c: float = 1.0) -> float:
    """Set the router's weights to a multinomial logistic regression (L2, inverse strength `c`) of the
    attribute asked on the router features of up to `max_rows` training instructions (a seeded sample).

    Returns:
        the fitted router's accuracy on those instructions.
    """
    conditioning = model.model.instruction_conditioning
    if conditioning is None or not conditioning.reads_attributes:
        raise ValueError("fit_router needs instruction_evidence='attributes' (a router over the attribute heads).")
    if not len(rows):
        raise ValueError("No training instructions to fit the router on.")
    was_training = model.training
    model.eval()
    x, y = routing_dataset(model, collate, _sample(rows, max_rows, seed))
    model.train(was_training)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"The router needs instructions about at least 2 attributes, got heads {classes.tolist()}.")
    classifier = _logistic_regression(x, y, c, seed)
    router = conditioning.router
    weight, bias = class_logits(classifier, router.out_features)  # heads no instruction asks about: never chosen
    with torch.no_grad():
        router.weight.copy_(torch.from_numpy(weight))
        router.bias.copy_(torch.from_numpy(bias))
    accuracy = float((classifier.predict(x) == y).mean())
    logger.info("router fitted on %d instructions about %d attributes: accuracy %.3f", len(y), len(classes), accuracy)
    return accuracy


def fit_paradigms(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *, max_rows: int = 4096,
                  seed: int = 0, c: float = 1.0) -> float:
    """Set the evidence token's paradigm classifier (`paradigm_weight`, `paradigm_bias`: which of
    `config.evidence_paradigms` a question is) to a multinomial logistic regression of the rows' `paradigm` on
    the router features of up to `max_rows` training instructions (a seeded sample; rows of other paradigms
    are left out). A paradigm absent from them is never chosen; with one present, it always is.

    Returns:
        the fitted classifier's accuracy on those instructions.
    """
    conditioning = model.model.instruction_conditioning
    paradigms = getattr(conditioning, "paradigms", [])
    if len(paradigms) < 2:
        raise ValueError("fit_paradigms needs an evidence token with one readout per paradigm (evidence_paradigms).")
    rows = [row for row in rows if row.get("paradigm") in paradigms]
    if not rows:
        raise ValueError(f"No training instructions of the paradigms {paradigms} to fit the paradigm classifier on.")
    was_training = model.training
    model.eval()
    chosen = _sample(rows, max_rows, seed)
    x, _ = instruction_features(model, collate, chosen)
    model.train(was_training)
    y = np.array([paradigms.index(row["paradigm"]) for row in chosen])
    if len(np.unique(y)) > 1:
        classifier = _logistic_regression(x, y, c, seed)
        weight, bias = class_logits(classifier, len(paradigms))
        accuracy = float((classifier.predict(x) == y).mean())
    else:
        weight = np.zeros((len(paradigms), x.shape[1]), dtype=np.float32)
        bias = np.full(len(paradigms), ABSENT_LOGIT, dtype=np.float32)
        bias[y[0]], accuracy = 0.0, 1.0
    with torch.no_grad():
        conditioning.paradigm_weight.copy_(torch.from_numpy(weight))
        conditioning.paradigm_bias.copy_(torch.from_numpy(bias))
    logger.info("paradigm classifier fitted on %d instructions (%s): accuracy %.3f", len(y),
                ", ".join(f"{p} {int((y == k).sum())}" for k, p in enumerate(paradigms)), accuracy)
    return accuracy


def question_sign(row: dict) -> int:
    """-1 where the question asks the other way round (its `direction` column -1: "younger than", "less likely
    to have"; or `negated`: "Can ADHD be ruled out?"; both: +1), else +1 (rows without those columns too)."""
    direction = row_value(row, "direction")
    sign = -1 if direction is not None and int(direction) == -1 else 1
    return -sign if row_value(row, "negated") else sign


def fit_turns(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *, max_rows: int = 4096,
              seed: int = 0, c: float = 1.0) -> float | None:
    """Set the evidence token's turn classifier (`turn_weight`, `turn_bias`: does a judgment or a comparison ask
    the other way round, `question_sign` -1: "younger than 40?", "which is younger?") to a logistic regression
    on the router features of up to `max_rows` training judgments and comparisons about any attribute (a
    seeded sample). Questions that all ask the plain way leave it plain.

    Returns:
        the fitted classifier's accuracy on those judgments (None when nothing was fitted).
    """
    conditioning = model.model.instruction_conditioning
    if conditioning is None or not conditioning.reads_attributes:
        raise ValueError("fit_turns needs instruction_evidence='attributes' (an evidence token over the attribute heads).")
    judgments = [row for row in rows if row.get("paradigm") in ("judgment", "comparative")]
    chosen = _sample(judgments, max_rows, seed)
    turned = np.array([question_sign(row) == -1 for row in chosen], dtype=int)
    if not 0 < turned.sum() < len(turned):
        return None
    was_training = model.training
    model.eval()
    x, _ = instruction_features(model, collate, chosen)
    model.train(was_training)
    classifier = _logistic_regression(x, turned, c, seed)
    with torch.no_grad():
        conditioning.turn_weight.copy_(torch.from_numpy(classifier.coef_[0].astype(np.float32)))
        conditioning.turn_bias.fill_(float(classifier.intercept_[0]))
    accuracy = float((classifier.predict(x) == turned).mean())
    logger.info("turn classifier fitted on %d judgments (%d asked the other way round): accuracy %.3f",
                len(turned), int(turned.sum()), accuracy)
    return accuracy
