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
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import GroupKFold, StratifiedKFold

from fcn_llm.questions import row_value

from .encoder_pretraining import ABSENT_LOGIT, class_logits

logger = logging.getLogger("fcn_llm.train")
FRAME_CS = tuple(np.logspace(-4, 0, 9))  # L2 strengths (inverse) the question classifiers choose from
FOLDS = 5
TRAINING_ACCURACY_SLACK = 0.01  # how much of the fitted rows' accuracy a stronger L2 may cost


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


def question_frames(rows: Sequence[dict]) -> np.ndarray | None:
    """Each row's question frame, `(S,)` strings: its `template_id` ("attribute/paradigm/frame/term/instruction")
    without the attribute, term and answer instruction ("judgment/older"); None where a row has no such id."""
    frames = []
    for row in rows:
        parts = str(row_value(row, "template_id") or "").split("/")
        if len(parts) < 3:
            return None
        frames.append("/".join(parts[1:3]))
    return np.array(frames)


def _folds(y: np.ndarray, groups: np.ndarray | None, seed: int, splits: int = FOLDS) -> list | None:
    """Cross-validation folds `[(train, test), ...]` that hold out whole question frames (`groups`), or stratified
    folds where there are fewer than `splits` frames or a fold would train on one class; None when a class has
    fewer than `splits` rows."""
    if np.unique(y, return_counts=True)[1].min() < splits:
        return None
    if groups is not None and len(np.unique(groups)) >= splits:
        folds = list(GroupKFold(splits).split(y, y, groups))
        if all(len(np.unique(y[train])) == len(np.unique(y)) for train, _ in folds):
            return folds
    return list(StratifiedKFold(splits, shuffle=True, random_state=seed).split(y, y))


def _logistic_regression_cv(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, seed: int) -> LogisticRegression:
    """An L2 logistic regression whose strength C (out of `FRAME_CS`) has the lowest cross-validated log loss on
    question frames held out whole (`_folds`: frames none of the fitted rows use, as a user's own wording is)
    among those that read the rows themselves as well as C = 1 does (accuracy within `TRAINING_ACCURACY_SLACK`),
    refitted on all rows; C = 1 where the rows are too few to cross-validate."""
    plain = _logistic_regression(x, y, 1.0, seed)
    folds = _folds(y, groups, seed)
    if folds is None:
        return plain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = LogisticRegressionCV(Cs=list(FRAME_CS), cv=folds, scoring="neg_log_loss", max_iter=2000,
                                      random_state=seed, refit=False).fit(x, y)
    held_out_loss = -next(iter(search.scores_.values())).mean(0)  # (len(FRAME_CS),), the same for every class
    floor = float((plain.predict(x) == y).mean()) - TRAINING_ACCURACY_SLACK
    for i in np.argsort(held_out_loss, kind="stable"):
        c = float(search.Cs_[i])
        candidate = plain if c == 1.0 else _logistic_regression(x, y, c, seed)
        if float((candidate.predict(x) == y).mean()) >= floor:
            return candidate
    return plain


def _fit(x: np.ndarray, y: np.ndarray, rows: Sequence[dict], c: float | None, seed: int):
    """A logistic regression of `y` on `x`: at L2 strength `c`, or chosen on `rows`' held-out frames where `c` is None."""
    if c is not None:
        return _logistic_regression(x, y, c, seed)
    classifier = _logistic_regression_cv(x, y, question_frames(rows), seed)
    logger.info("L2 strength C=%.3g (cross-validated, whole question frames held out where rows name them)", classifier.C)
    return classifier


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
                  seed: int = 0, c: float | None = None) -> float:
    """Set the evidence token's paradigm classifier (`paradigm_weight`, `paradigm_bias`: which of
    `config.evidence_paradigms` a question is) to a multinomial logistic regression of the rows' `paradigm` on
    the router features of up to `max_rows` training instructions (a seeded sample; rows of other paradigms
    are left out), L2 strength `c` or, by default, the one that reads held-out question frames best
    (`_logistic_regression_cv`). A paradigm absent from them is never chosen; with one present, it always is.

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
        classifier = _fit(x, y, chosen, c, seed)
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


def turn_label(row: dict) -> int | None:
    """What the turn classifier learns from a training row: 1 where a judgment or comparison asks the other way round
    (reversed or negated, `question_sign` -1), 0 where it asks plainly, None where it learns nothing: other
    paradigms, and double negatives (negated and reversed: "Is it false that this subject is younger than 40?"). A
    double negative is plain while each of its two words alone turns the question, an XOR that a linear reader of
    words cannot fit; fitted with the rest, it turned "younger than 40?" around as well."""
    if row.get("paradigm") not in ("judgment", "comparative"):
        return None
    direction = row_value(row, "direction")
    reversed_, negated = direction is not None and int(direction) == -1, bool(row_value(row, "negated"))
    return None if reversed_ and negated else int(reversed_ or negated)


def fit_turns(model, collate: Callable[[Sequence[dict]], dict], rows: Sequence[dict], *, max_rows: int = 4096,
              seed: int = 0, c: float | None = None) -> float | None:
    """Set the evidence token's turn classifier (`turn_weight`, `turn_bias`: does a judgment or a comparison ask
    the other way round, `question_sign` -1: "younger than 40?", "which is younger?") to a logistic regression
    on the router features of up to `max_rows` training judgments and comparisons about any attribute (a
    seeded sample; double negatives left out, `turn_label`), L2 strength `c` or, by default, the one that reads
    held-out question frames best (`_logistic_regression_cv`: words no training question has, such as a new answer
    instruction's, then weigh less). Questions that all ask the plain way leave it plain.

    Returns:
        the fitted classifier's accuracy on those judgments (None when nothing was fitted).
    """
    conditioning = model.model.instruction_conditioning
    if conditioning is None or not conditioning.reads_attributes:
        raise ValueError("fit_turns needs instruction_evidence='attributes' (an evidence token over the attribute heads).")
    judgments = [row for row in rows if turn_label(row) is not None]
    chosen = _sample(judgments, max_rows, seed)
    turned = np.array([turn_label(row) for row in chosen], dtype=int)
    if not 0 < turned.sum() < len(turned):
        return None
    was_training = model.training
    model.eval()
    x, _ = instruction_features(model, collate, chosen)
    model.train(was_training)
    classifier = _fit(x, turned, chosen, c, seed)
    with torch.no_grad():
        conditioning.turn_weight.copy_(torch.from_numpy(classifier.coef_[0].astype(np.float32)))
        conditioning.turn_bias.fill_(float(classifier.intercept_[0]))
    accuracy = float((classifier.predict(x) == turned).mean())
    logger.info("turn classifier fitted on %d judgments (%d asked the other way round): accuracy %.3f",
                len(turned), int(turned.sum()), accuracy)
    return accuracy
