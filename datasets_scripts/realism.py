"""Realism check of a set of FCNs against the real individual HCP FCNs that brainspace ships.

Two summaries, side by side for the dataset's FCNs and the real ones:
- mean FC by inter-ROI distance (Euclidean distance of the atlas' MNI centroids, in bins): real FC
  falls with distance, and head motion steepens that fall;
- the distribution of edge values (upper-triangle r): quantiles, mean and SD.
The real FCNs of the dataset's own parcellation (3 subjects) give the distance profile; the edge
distribution is also shown over all 24 real individual FCNs (3 subjects x 8 parcellations).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from datasets_scripts.hcp import PARCELLATIONS, load_individual_fcns

DISTANCE_BINS_MM = (0, 20, 40, 60, 80, 100, 120, 200)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def hcp_parcellation_of(atlas_name: str) -> str | None:
    """``"schaefer100-7"`` -> ``"schaefer_100"``; None for an atlas without real HCP individual FCNs."""
    key = atlas_name.lower()
    if not key.startswith("schaefer"):
        return None
    name = f"schaefer_{key[len('schaefer'):].split('-')[0]}"
    return name if name in PARCELLATIONS else None


def distance_profile(fcns: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """`(B,)` mean FC over subjects and edges i < j in each distance bin (NaN for an empty bin)."""
    iu = np.triu_indices(coords.shape[0], 1)
    dist = np.sqrt(((coords[iu[0]] - coords[iu[1]]) ** 2).sum(1))
    edges = fcns[:, iu[0], iu[1]].astype(np.float64).mean(0)
    bins = np.digitize(dist, DISTANCE_BINS_MM[1:-1])
    return np.array([edges[bins == b].mean() if (bins == b).any() else np.nan for b in range(len(DISTANCE_BINS_MM) - 1)])


def edge_distribution(fcns: np.ndarray) -> dict[str, float]:
    """Quantiles, mean and SD of the upper-triangle edge values of `fcns` `(S, N, N)`."""
    iu = np.triu_indices(fcns.shape[1], 1)
    values = np.concatenate([f[iu] for f in fcns]).astype(np.float64)
    out = {f"q{int(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES}
    return {**out, "mean": float(values.mean()), "sd": float(values.std())}


def realism_tables(groups: dict[str, np.ndarray], atlas_name: str, coords: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(distance table, edge-distribution table) for named FCN groups `(S, N, N)` and the real HCP FCNs."""
    parcellation = hcp_parcellation_of(atlas_name)
    named = dict(groups)
    if parcellation is not None:
        real = np.stack([s.fcn for s in load_individual_fcns(parcellation)])
        if real.shape[1] == coords.shape[0]:
            named[f"real HCP individuals ({parcellation}, n={len(real)})"] = real
    labels = [f"{a}-{b} mm" for a, b in zip(DISTANCE_BINS_MM[:-1], DISTANCE_BINS_MM[1:])]
    dist = pd.DataFrame({"distance": labels, **{k: np.round(distance_profile(v, coords), 3) for k, v in named.items()}})
    rows = [{"FCNs": k, "subjects": len(v), **{s: round(x, 3) for s, x in edge_distribution(v).items()}}
            for k, v in named.items()]
    every = [s.fcn for p in PARCELLATIONS for s in load_individual_fcns(p)]
    pooled = np.concatenate([f[np.triu_indices(f.shape[0], 1)] for f in every])
    stats = {f"q{int(q * 100):02d}": round(float(np.quantile(pooled, q)), 3) for q in QUANTILES}
    rows.append({"FCNs": f"all real HCP individuals (8 parcellations, n={len(every)})", "subjects": len(every),
                 **stats, "mean": round(float(pooled.mean()), 3), "sd": round(float(pooled.std()), 3)})
    return dist, pd.DataFrame(rows)
