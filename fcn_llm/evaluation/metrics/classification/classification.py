"""Classification metrics for FCN-LLM evaluation: AUC, accuracy, balanced accuracy.

A local `evaluate` module (evaluate's Hub metrics cannot be fetched offline):
``evaluate.load("evaluation/metrics/classification", "binary" | "multiclass")``.

- ``binary``: references 0/1 `(n,)`, predictions 0/1 `(n,)`, prediction_scores `(n,)` (any
  monotone score of class 1: probability, log-odds, log-likelihood difference).
- ``multiclass``: references and predictions class indices in 0..C-1 `(n,)`, prediction_scores
  `(n, C)` class probabilities (rows need not sum to 1); AUC is the macro one-vs-rest AUC over the
  classes present in the references.

AUC is NaN when the references hold a single class.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

_DESCRIPTION = "AUC (binary or macro one-vs-rest), accuracy and balanced accuracy."
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (int), `(n,)`.
    references: true labels (int), `(n,)`.
    prediction_scores: `(n,)` scores of class 1 (binary) or `(n, C)` class scores (multiclass).
    num_classes: C for multiclass (default: the score width).
Returns:
    auc, accuracy, balanced_accuracy (floats), n (int).
"""


class Classification(evaluate.Metric):
    """AUC, accuracy and balanced accuracy for binary and multiclass predictions."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in ("binary", "multiclass", "default"):
            raise ValueError(f"Unknown configuration {self.config_name!r}; use 'binary' or 'multiclass'.")
        score = datasets.Sequence(datasets.Value("float64")) if self.config_name == "multiclass" \
            else datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("int64"),
                "references": datasets.Value("int64"),
                "prediction_scores": score,
            }),
        )

    def _compute(self, predictions, references, prediction_scores, num_classes: int | None = None) -> dict:
        y = np.asarray(references, dtype=np.int64)
        pred = np.asarray(predictions, dtype=np.int64)
        scores = np.asarray(prediction_scores, dtype=np.float64)
        out = {"n": int(len(y))}
        if len(y) == 0:
            return {**out, "auc": float("nan"), "accuracy": float("nan"), "balanced_accuracy": float("nan")}
        out["accuracy"] = float(accuracy_score(y, pred))
        out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 \
            else float(np.mean(pred == y))
        present = np.unique(y)
        if len(present) < 2:
            out["auc"] = float("nan")
        elif scores.ndim == 1:
            out["auc"] = float(roc_auc_score(y, scores))
        else:
            num_classes = num_classes or scores.shape[1]
            # Macro one-vs-rest over the classes present; absent classes have no defined AUC.
            aucs = [roc_auc_score(y == c, scores[:, c]) for c in range(num_classes) if c in present]
            out["auc"] = float(np.mean(aucs))
        return out
