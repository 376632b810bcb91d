"""The simulator's planted attribute effects at three scales, read from `effects.json`.

Each attribute's effect is a sum of components, each with its own separability d' (SDs of subject
variability per unit code; see `simulate.effect_model`):
- ``roi``: named regions of the file's reference atlas whose coupling to target Yeo-7 networks (or to
  ``"all"``) changes: the effect lives on the ~N edges of a few ROI rows;
- ``blocks``: Yeo-7 network pairs (network_a, network_b, weight), within-network when a == b;
- ``whole_brain``: ``global`` coupling (every edge), ``segregation`` (within- minus between-network
  coupling) and ``distributed`` (a seeded low-amplitude pattern spread over every edge).

Regions are given by name in the reference atlas; on another Schaefer atlas the planted ROI is the
one nearest to the named region's centroid.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from processing.atlases import Atlas, load_atlas

EFFECTS_FILE = Path(__file__).with_name("effects.json")
YEO7 = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")
WHOLE_BRAIN_TERMS = ("global", "segregation", "distributed")
COMPONENTS = ("roi", "blocks", "whole_brain")


class UnknownRegionError(ValueError):
    """A planted-effect region name that is not in the atlas."""


@dataclass(frozen=True)
class RegionEffect:
    """One region's connectivity-profile change: its coupling to `targets` (Yeo-7 names) scaled by `weight`."""

    region: str
    targets: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class Effect:
    """How one attribute changes connectivity (see the module docstring).

    code(value) = (value - center) / scale for continuous attributes, 1 for `level` (a binary 1 or a
    categorical class), else 0.
    """

    center: float = 0.0
    scale: float = 1.0
    level: str | float | None = None
    pairs: tuple[tuple[str, str, float], ...] = ()
    block_separability: float = 0.0
    regions: tuple[RegionEffect, ...] = ()
    roi_separability: float = 0.0
    whole_brain: tuple[tuple[str, float], ...] = ()
    whole_brain_separability: float = 0.0

    def code(self, values: pd.Series | np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if self.level is None:
            return (values.astype(float) - self.center) / self.scale
        if isinstance(self.level, str):
            return (values == self.level).astype(float)
        return (values.astype(float) == float(self.level)).astype(float)

    @property
    def separabilities(self) -> dict[str, float]:
        """d' per component present (roi, blocks, whole_brain)."""
        out = {"roi": self.roi_separability if self.regions else 0.0,
               "blocks": self.block_separability if self.pairs else 0.0,
               "whole_brain": self.whole_brain_separability if self.whole_brain else 0.0}
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class EffectSet:
    """All attributes' effects, the atlas their region names refer to, and the distributed pattern's seed."""

    effects: dict[str, Effect]
    reference_atlas: str
    distributed_seed: int

    @property
    def region_names(self) -> list[str]:
        """Every planted region, in order of first appearance."""
        names: list[str] = []
        for eff in self.effects.values():
            names += [r.region for r in eff.regions if r.region not in names]
        return names


def _check_network(name: str, where: str) -> str:
    if name not in YEO7:
        raise ValueError(f"{where}: unknown network {name!r}; networks: {', '.join(YEO7)}.")
    return name


def parse_effects(spec: dict) -> EffectSet:
    """An `EffectSet` from the JSON structure of `effects.json` (networks and terms checked)."""
    effects = {}
    for key, raw in spec["attributes"].items():
        code = raw.get("code", {})
        blocks = raw.get("blocks", {})
        pairs = tuple((_check_network(a, key), _check_network(b, key), float(w)) for a, b, w in blocks.get("pairs", []))
        roi = raw.get("roi", {})
        regions = []
        for r in roi.get("regions", []):
            targets = YEO7 if r["targets"] == "all" else tuple(_check_network(t, key) for t in r["targets"])
            regions.append(RegionEffect(r["region"], tuple(targets), float(r["weight"])))
        wb = raw.get("whole_brain", {})
        unknown = set(wb) - set(WHOLE_BRAIN_TERMS) - {"separability"}
        if unknown:
            raise ValueError(f"{key}: unknown whole-brain term(s) {sorted(unknown)}; terms: {', '.join(WHOLE_BRAIN_TERMS)}.")
        effects[key] = Effect(center=float(code.get("center", 0.0)), scale=float(code.get("scale", 1.0)),
                              level=code.get("level"), pairs=pairs,
                              block_separability=float(blocks.get("separability", 0.0)), regions=tuple(regions),
                              roi_separability=float(roi.get("separability", 0.0)),
                              whole_brain=tuple((t, float(wb[t])) for t in WHOLE_BRAIN_TERMS if t in wb),
                              whole_brain_separability=float(wb.get("separability", 0.0)))
    return EffectSet(effects, spec["reference_atlas"], int(spec["distributed_seed"]))


def load_effects(path: str | Path = EFFECTS_FILE) -> EffectSet:
    return parse_effects(json.loads(Path(path).read_text()))


def region_index(name: str, atlas: Atlas) -> int:
    """Index of ROI `name` in `atlas`; an unknown name raises, naming the nearest names."""
    if name in atlas.labels:
        return atlas.labels.index(name)
    near = difflib.get_close_matches(name, atlas.labels, n=5, cutoff=0.0)
    raise UnknownRegionError(f"Planted-effect region {name!r} is not in atlas {atlas.name!r}; nearest names: "
                             f"{', '.join(near)}.")


def resolve_regions(effect_set: EffectSet, atlas: Atlas) -> dict[str, int]:
    """{region name: ROI index in `atlas`}: by name in the reference atlas, then the nearest centroid of `atlas`."""
    reference = load_atlas(effect_set.reference_atlas)
    out = {}
    for name in effect_set.region_names:
        idx = region_index(name, reference)
        if atlas.name == reference.name:
            out[name] = idx
        else:
            out[name] = int(np.argmin(((atlas.coords - reference.coords[idx]) ** 2).sum(1)))
    return out


EFFECT_SET = load_effects()
EFFECTS: dict[str, Effect] = EFFECT_SET.effects
