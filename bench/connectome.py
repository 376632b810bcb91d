"""Item 3: ROI time series -> FCNs, `processing.connectivity.compute_fcns` vs nilearn's `ConnectivityMeasure`.

Each comparison uses the same covariance estimator on both sides and checks the outputs agree:
- Pearson: ``cov_estimator="empirical"`` vs ``EmpiricalCovariance(store_precision=False)`` (nilearn's
  correlation never reads the precision; sklearn's default ``store_precision=True`` adds a
  pseudo-inverse per subject, timed on a subset as `pearson_store_precision`);
- Ledoit-Wolf: ``cov_estimator="ledoit_wolf"`` vs nilearn's default ``LedoitWolf(store_precision=False)``;
- partial correlation and tangent space (Ledoit-Wolf, as nilearn's default), on subsets: nilearn's
  tangent computes a geometric mean with an eigendecomposition per subject per iteration.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.covariance import EmpiricalCovariance, LedoitWolf

from processing.connectivity import CHUNK, compute_fcns

from .timing import interleaved

TARGETS = {"pearson": 10.0, "ledoit_wolf": 3.0}


def random_series(subjects: int, timepoints: int, rois: int, seed: int = 0) -> list[np.ndarray]:
    """Subjects' `(T, N)` series: noise plus a shared signal and an offset (so correlations are not ~0)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(subjects, timepoints, 1))
    return list(rng.normal(size=(subjects, timepoints, rois)) + 0.5 * shared + 100.0)


def _nilearn(kind: str, estimator) -> "callable":
    from nilearn.connectome import ConnectivityMeasure

    def run(series):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ConnectivityMeasure(kind=kind, cov_estimator=estimator).fit_transform(series)

    return run


def comparisons(subjects: int) -> dict[str, dict]:
    """name -> kind, project estimator, nilearn estimator, subjects measured."""
    return {
        "pearson": dict(kind="correlation", estimator="empirical", nilearn=EmpiricalCovariance(store_precision=False),
                        subjects=subjects),
        "ledoit_wolf": dict(kind="correlation", estimator="ledoit_wolf", nilearn=LedoitWolf(store_precision=False),
                            subjects=subjects),
        "partial": dict(kind="partial correlation", estimator="ledoit_wolf", nilearn=LedoitWolf(store_precision=False),
                        subjects=max(2, subjects // 5)),
        "tangent": dict(kind="tangent", estimator="ledoit_wolf", nilearn=LedoitWolf(store_precision=False),
                        subjects=max(2, subjects // 20)),
        "pearson_store_precision": dict(kind="correlation", estimator="empirical", nilearn=EmpiricalCovariance(),
                                        subjects=max(2, subjects // 20)),
    }


def gemm_only(series: list[np.ndarray]) -> "callable":
    """The covariance products alone, on pre-centred stacked series (no preparation, no output pages)."""
    stack = torch.from_numpy(np.stack(series))
    stack = stack - stack.mean(1, keepdim=True)
    out = torch.empty(len(series), stack.shape[2], stack.shape[2], dtype=torch.float64)

    def run():
        for start in range(0, len(series), CHUNK):
            torch.bmm(stack[start : start + CHUNK].transpose(1, 2), stack[start : start + CHUNK],
                      out=out[start : start + CHUNK])

    return run


def connectome_speed(subjects: int = 1000, timepoints: int = 200, rois: int = 200, repeats: int = 3,
                     slow_repeats: int = 1, only: list[str] | None = None) -> dict:
    """Per comparison: ms/subject of each side, speedup (nilearn / project) and max |difference|.

    `slow_repeats` repeats the subset comparisons (partial, tangent, store_precision).
    """
    series = random_series(subjects, timepoints, rois)
    out = {"subjects": subjects, "timepoints": timepoints, "rois": rois}
    for name, spec in comparisons(subjects).items():
        if only is not None and name not in only:
            continue
        part = series[: spec["subjects"]]
        ours = lambda: compute_fcns(part, kind=spec["kind"], cov_estimator=spec["estimator"])  # noqa: E731
        theirs = _nilearn(spec["kind"], spec["nilearn"])
        diff = float(np.abs(ours() - theirs(part)).max())
        reps = repeats if spec["subjects"] == subjects else slow_repeats
        fns = {"project": ours, "nilearn": lambda: theirs(part)}
        if name == "pearson":
            fns["gemm_only"] = gemm_only(part)
        times = interleaved(fns, repeats=reps, warmup=0)
        n = len(part)
        if name == "pearson":
            out["gemm_floor"] = {
                "ms_per_subject": times["gemm_only"].median / n * 1e3,
                "speedup_ceiling": times["nilearn"].median / times["gemm_only"].median,
                "what": "the T x N x N product alone (torch.bmm, float64, pre-centred, preallocated output): "
                        "what any exact path computes; nilearn / this bounds the Pearson speedup",
            }
        out[name] = {
            "kind": spec["kind"], "estimator": spec["estimator"], "subjects": n,
            "project_ms_per_subject": times["project"].median / n * 1e3,
            "nilearn_ms_per_subject": times["nilearn"].median / n * 1e3,
            "project_s": times["project"].median, "nilearn_s": times["nilearn"].median,
            "speedup": times["nilearn"].median / times["project"].median,
            "max_abs_difference": diff, "equal_1e-5": diff <= 1e-5,
        }
    return out
