"""Subnetworks for any atlas: from a mapping file, or derived from ROI coordinates.

Derived assignment: every cortical ROI takes the network of the nearest Schaefer-400 parcel centroid
(Yeo-7 or Yeo-17 networks, MNI mm, Euclidean); subcortical and cerebellar ROIs (the atlas table's
``structure`` column) form networks of their own, ``Subcortical`` and ``Cerebellum``. Network names
are ordered as the reference lists them, then ``Subcortical``, ``Cerebellum``; only networks that
receive an ROI are kept, so the indices are ``0..K-1`` without gaps.

A mapping file names each ROI's network: a CSV/TSV with columns ``region`` and ``network`` (every
atlas region once), or a JSON object ``{region: network}``.

Agreement with an atlas' own labels (`agreement`): adjusted Rand index and normalised mutual
information over all ROIs, and the share of ROIs whose own label's counterpart (a given
correspondence, e.g. Dosenbach's ``occipital`` -> Yeo ``Vis``) is the derived network.

    python -m processing.network_assignment            # agreement table for the labelled atlases
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SUBCORTICAL, CEREBELLUM = "Subcortical", "Cerebellum"
OWN_NETWORK_STRUCTURES = {"subcortical": SUBCORTICAL, "cerebellum": CEREBELLUM, "cerebellar": CEREBELLUM}
REFERENCES = {"yeo7": "schaefer400-7", "yeo17": "schaefer400-17"}

# Own labels of the labelled atlases -> their Yeo-7 counterpart (None: no counterpart; left out of
# the correspondence accuracy). Auditory cortex lies in Yeo's somatomotor network.
YEO7_CORRESPONDENCE: dict[str, dict[str, str | None]] = {
    "dosenbach160": {"default": "Default", "sensorimotor": "SomMot", "cingulo-opercular": "SalVentAttn",
                     "occipital": "Vis", "fronto-parietal": "Cont", "cerebellum": CEREBELLUM},
    "seitzman300": {"DefaultMode": "Default", "SomatomotorDorsal": "SomMot", "SomatomotorLateral": "SomMot",
                    "Auditory": "SomMot", "Visual": "Vis", "FrontoParietal": "Cont", "CinguloOpercular": "SalVentAttn",
                    "Salience": "SalVentAttn", "VentralAttention": "SalVentAttn", "DorsalAttention": "DorsAttn",
                    "ParietoMedial": "Default", "MedialTemporalLobe": None, "Reward": None, "unassigned": None},
}


def nearest_networks(coords: np.ndarray, reference_coords: np.ndarray, reference_networks: Sequence[str]) -> list[str]:
    """The network of the nearest reference centroid for each of N points.

    Args:
        coords: `(N, 3)` MNI coordinates.
        reference_coords: `(M, 3)` reference parcel centroids.
        reference_networks: M network names.
    """
    coords, reference_coords = np.asarray(coords, float), np.asarray(reference_coords, float)
    dist = ((coords[:, None, :] - reference_coords[None, :, :]) ** 2).sum(-1)  # (N, M)
    return [reference_networks[j] for j in dist.argmin(1)]


def derive_networks(coords: np.ndarray, structures: Sequence[str] | None, reference_coords: np.ndarray,
                    reference_networks: Sequence[str]) -> list[str]:
    """N network names: nearest reference centroid for cortical ROIs, own networks for subcortical
    and cerebellar ones (`structures` None: every ROI is cortical)."""
    nearest = nearest_networks(coords, reference_coords, reference_networks)
    if structures is None:
        return nearest
    return [OWN_NETWORK_STRUCTURES.get(str(s).strip().casefold(), n) for s, n in zip(structures, nearest)]


def ordered_names(networks: Sequence[str], order: Sequence[str]) -> list[str]:
    """The distinct names of `networks`, in `order` first, then in order of first appearance."""
    present = list(dict.fromkeys(networks))
    return [n for n in order if n in present] + [n for n in present if n not in order]


def read_network_mapping(path: str | Path, regions: Sequence[str]) -> list[str]:
    """Each region's network from a mapping file (CSV/TSV ``region,network`` or JSON ``{region: network}``).

    Raises ValueError naming the atlas regions the file does not map and the file's unknown regions.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Network mapping file {str(path)!r} does not exist.")
    if path.suffix.lower() == ".json":
        spec = json.loads(path.read_text())
        if not isinstance(spec, Mapping):
            raise ValueError(f"{path.name}: a JSON network mapping is an object {{region: network}}.")
        mapping = {str(k).strip(): str(v).strip() for k, v in spec.items()}
    else:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
        rows = list(csv.DictReader(io.StringIO(path.read_text()), delimiter=delimiter))
        columns = [c.strip() for c in (rows[0].keys() if rows else [])]
        if "region" not in columns or "network" not in columns:
            raise ValueError(f"{path.name}: a network mapping table needs columns 'region' and 'network'; "
                             f"it has {columns}.")
        mapping = {}
        for row in rows:
            row = {k.strip(): (v or "").strip() for k, v in row.items()}
            if row["region"] in mapping:
                raise ValueError(f"{path.name}: region {row['region']!r} is mapped twice.")
            mapping[row["region"]] = row["network"]
    missing = [r for r in regions if not mapping.get(r)]
    unknown = sorted(set(mapping) - set(regions))
    if missing or unknown:
        raise ValueError(f"{path.name} does not map every atlas region to a network: {len(missing)} region(s) "
                         f"without a network (e.g. {missing[:5]}), {len(unknown)} region(s) not in the atlas "
                         f"(e.g. {unknown[:5]}); the atlas regions are e.g. {list(regions[:5])}.")
    return [mapping[r] for r in regions]


def agreement(own: Sequence[str], derived: Sequence[str], correspondence: Mapping[str, str | None] | None = None) -> dict:
    """How well a derived assignment matches an atlas' own labels (N each).

    Returns ``ari`` and ``nmi`` (scikit-learn, all ROIs) and, with a correspondence (own label ->
    derived network name or None), ``accuracy`` over the ``n_compared`` ROIs whose own label has a
    counterpart.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    out = {"n": len(own), "ari": float(adjusted_rand_score(own, derived)),
           "nmi": float(normalized_mutual_info_score(own, derived))}
    if correspondence is not None:
        unknown = sorted(set(own) - set(correspondence))
        if unknown:
            raise ValueError(f"Correspondence has no entry for own label(s) {unknown}.")
        pairs = [(correspondence[o], d) for o, d in zip(own, derived) if correspondence[o] is not None]
        out["n_compared"] = len(pairs)
        out["accuracy"] = float(np.mean([a == b for a, b in pairs])) if pairs else float("nan")
    return out


def agreement_table(atlases: Sequence[str] = ("dosenbach160", "seitzman300"), reference: str = "yeo7") -> list[dict]:
    """Agreement of the derived assignment with each labelled atlas' own labels (rows of `agreement`)."""
    from processing.atlases import load_atlas

    rows = []
    for name in atlases:
        own, derived = load_atlas(name), load_atlas(name, networks=reference)
        own_names = [own.network_names[i] for i in own.network_assignment]
        derived_names = [derived.network_names[i] for i in derived.network_assignment]
        correspondence = YEO7_CORRESPONDENCE.get(name) if reference == "yeo7" else None
        reference_names = set(load_atlas(REFERENCES[reference]).network_names)
        if correspondence is None and set(own_names) <= reference_names:  # labelled with the reference's networks
            correspondence = {n: n for n in own_names}
        row = {"atlas": name, "reference": reference, **agreement(own_names, derived_names, correspondence)}
        if correspondence is not None:
            cortical = [i for i, s in enumerate(own.structures or ["cortical"] * own.num_rois) if s == "cortical"]
            sub = agreement([own_names[i] for i in cortical], [derived_names[i] for i in cortical], correspondence)
            row["accuracy_cortical"], row["n_compared_cortical"] = sub["accuracy"], sub["n_compared"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="Agreement of the coordinate-derived network assignment with "
                                                 "labelled atlases' own networks.")
    parser.add_argument("--atlases", nargs="+", default=["dosenbach160", "seitzman300"])
    parser.add_argument("--reference", choices=sorted(REFERENCES), default="yeo7")
    args = parser.parse_args(argv)
    rows = agreement_table(args.atlases, args.reference)
    print("| atlas | reference | ROIs | ARI | NMI | correspondence accuracy (ROIs compared) | cortical ROIs only |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        acc = f"{r['accuracy']:.3f} ({r['n_compared']})" if "accuracy" in r else "-"
        cortical = f"{r['accuracy_cortical']:.3f} ({r['n_compared_cortical']})" if "accuracy_cortical" in r else "-"
        print(f"| {r['atlas']} | {r['reference']} | {r['n']} | {r['ari']:.3f} | {r['nmi']:.3f} | {acc} | {cortical} |")
    return rows


if __name__ == "__main__":
    main()
