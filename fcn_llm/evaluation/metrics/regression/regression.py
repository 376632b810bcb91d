"""Regression metrics for FCN-LLM evaluation: MAE, Pearson r, Spearman rho, RMSE.

A local `evaluate` module (evaluate's Hub metrics cannot be fetched offline):
``evaluate.load("evaluation/metrics/regression")``. Predictions and references are floats `(n,)`;
Pearson/Spearman are NaN when either side is constant or n < 2.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr

_DESCRIPTION = "Mean absolute error, root mean squared error, Pearson r and Spearman rho."
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted values (float), `(n,)`.
    references: true values (float), `(n,)`.
Returns:
    mae, rmse, pearson_r, spearman_rho (floats), n (int).
"""


class Regression(evaluate.Metric):
    """MAE, RMSE, Pearson r and Spearman rho."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references) -> dict:
        pred = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(references, dtype=np.float64)
        out = {"n": int(len(y))}
        if len(y) == 0:
            return {**out, "mae": float("nan"), "rmse": float("nan"), "pearson_r": float("nan"),
                    "spearman_rho": float("nan")}
        out["mae"] = float(np.mean(np.abs(pred - y)))
        out["rmse"] = float(np.sqrt(np.mean((pred - y) ** 2)))
        varies = len(y) >= 2 and np.ptp(pred) > 0 and np.ptp(y) > 0
        out["pearson_r"] = float(pearsonr(pred, y)[0]) if varies else float("nan")
        out["spearman_rho"] = float(spearmanr(pred, y)[0]) if varies else float("nan")
        return out
