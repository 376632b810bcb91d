"""Local `evaluate` metric modules and thin wrappers around them.

`evaluate.load(path)` on `classification/` and `regression/` (beside this file) works offline; the
wrappers cache the loaded modules and take numpy arrays.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np

METRICS_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def load_metric(name: str, config_name: str | None = None) -> evaluate.EvaluationModule:
    """Load the local metric module `name` ("classification" or "regression")."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(f"No local metric module {name!r} at {path}.")
    return evaluate.load(str(path), config_name) if config_name else evaluate.load(str(path))


def classification_metrics(references: np.ndarray, scores: np.ndarray,
                           predictions: np.ndarray | None = None) -> dict[str, float]:
    """AUC, accuracy, balanced accuracy of integer `references` `(n,)`.

    Args:
        scores: `(n,)` class-1 scores (binary; predictions default to score > 0.5 only if not given, so
            pass predictions for log-odds) or `(n, C)` class scores (multiclass; predictions default to argmax).
        predictions: `(n,)` predicted labels.
    """
    scores = np.asarray(scores, dtype=np.float64)
    references = np.asarray(references, dtype=np.int64)
    if predictions is None:
        predictions = scores.argmax(1) if scores.ndim == 2 else (scores > 0.5).astype(np.int64)
    config = "multiclass" if scores.ndim == 2 else "binary"
    kwargs = {"num_classes": scores.shape[1]} if scores.ndim == 2 else {}
    return load_metric("classification", config).compute(
        predictions=np.asarray(predictions, dtype=np.int64).tolist(), references=references.tolist(),
        prediction_scores=scores.tolist(), **kwargs)


def regression_metrics(references: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Pearson r and Spearman rho of `predictions` `(n,)` against `references` `(n,)`."""
    return load_metric("regression").compute(
        predictions=np.asarray(predictions, dtype=np.float64).tolist(),
        references=np.asarray(references, dtype=np.float64).tolist())
