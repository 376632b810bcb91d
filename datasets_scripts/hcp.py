"""Real HCP connectivity shipped by the `brainspace` package (read as CSVs; brainspace itself needs vtk).

- group templates: mean FCNs of the HCP "main" and "holdout" groups per parcellation;
- individual FCNs: 24 subjects' matrices (3 subjects x {schaefer, vosdewael} x {100, 200, 300, 400}).
Schaefer matrices follow the ROI order of `processing.atlases.load_atlas("schaefer{N}-7")`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processing.atlases import package_data_dir

GROUPS = ("main", "holdout")
PARCELLATIONS = tuple(f"{p}_{n}" for p in ("schaefer", "vosdewael") for n in (100, 200, 300, 400))
_INDIVIDUAL = re.compile(r"HCP_(?P<subject>\d+)_(?P<kind>[a-z]+)_(?P<parcellation>[a-z]+_\d+)\.csv")


def _matrices_dir() -> Path:
    return package_data_dir("brainspace") / "datasets" / "matrices"


def _check_parcellation(parcellation: str) -> str:
    key = parcellation.lower()
    if key not in PARCELLATIONS:
        raise ValueError(f"Unknown HCP parcellation {parcellation!r}; available: {', '.join(PARCELLATIONS)}.")
    return key


def load_group_fcn(parcellation: str = "schaefer_100", group: str = "main") -> np.ndarray:
    """The HCP group-mean FCN, `(N, N)` float64 with a unit diagonal."""
    key = _check_parcellation(parcellation)
    if group not in GROUPS:
        raise ValueError(f"Unknown HCP group {group!r}; available: {', '.join(GROUPS)}.")
    path = _matrices_dir() / f"{group}_group" / f"{key}_mean_connectivity_matrix.csv"
    return np.loadtxt(path, delimiter=",")


@dataclass(frozen=True)
class IndividualFCN:
    subject_id: str
    parcellation: str
    fcn: np.ndarray  # (N, N)


def load_individual_fcns(parcellation: str = "schaefer_100") -> list[IndividualFCN]:
    """The real individual HCP FCNs brainspace ships for one parcellation (3 subjects)."""
    key = _check_parcellation(parcellation)
    out = []
    for path in sorted((_matrices_dir() / "individual").glob("HCP_*.csv")):
        match = _INDIVIDUAL.fullmatch(path.name)
        if match and match["parcellation"] == key:
            fcn = np.loadtxt(path, delimiter=",")
            out.append(IndividualFCN(subject_id=f"HCP_{match['subject']}", parcellation=key, fcn=fcn))
    return out
