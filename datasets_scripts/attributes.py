"""The attribute registry: what can be asked about a subject, and how.

The registry lives in a data file (`attributes.json` beside this module); users add an attribute by
adding an entry there (or by passing their own file to `load_registry`), never by editing code.

Each entry has:
    kind: ``"continuous"``, ``"binary"`` or ``"categorical"``;
    name: display name used in questions (e.g. ``"full-scale IQ"``);
    continuous: ``units``, ``valid_range`` [lo, hi], ``decimals`` (answer and threshold rounding),
        ``thresholds`` (typical cut-offs: interpretation's default question; the instruction builder
        draws its thresholds from the cohort instead, see `question_bank`);
    binary: ``labels`` {"1": ..., "0": ...} (predictive answers); judgment answers are "Yes"/"No";
    categorical: ``classes`` (answers) and ``class_phrases`` (class -> phrase used in "Is this subject {phrase}?");
    templates: paradigm -> list of paraphrased questions. Paradigms: ``predictive``, ``judgment``
        (continuous: with ``{threshold}``; categorical: with ``{phrase}``), ``comparative`` (asks which
        of two subjects has the *higher* value / has the condition) and ``comparative_lower``. They say
        which paradigms an attribute has, and are the plain questions (interpretation; reading the
        threshold of rows built without the instruction columns); the instruction builder composes its
        questions from the question bank;
    bank (optional): ``family`` (frames in `question_bank.json`; default by kind), ``terms`` and
        ``held_out_terms`` (names, synonyms, abbreviations, clinical terms), categorical ``class_terms``
        and ``held_out_class_terms`` (class -> phrases); see `datasets_scripts/question_bank.py`.

Value conventions in `SubjectTable.meta`: continuous = float; binary = 0/1 float (1 = has the
condition); categorical = class-name string; NaN/None = missing (that attribute is skipped).
"""

from __future__ import annotations

import json
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

KINDS = ("continuous", "binary", "categorical")
PARADIGMS = ("predictive", "judgment", "comparative")
DEFAULT_REGISTRY_PATH = Path(__file__).with_name("attributes.json")
_TEMPLATE_KEYS = ("predictive", "judgment", "comparative", "comparative_lower")
_ALLOWED_FIELDS = {"predictive": set(), "judgment": {"threshold", "phrase", "units"},
                   "comparative": set(), "comparative_lower": set()}


@dataclass(frozen=True)
class Attribute:
    """One askable attribute (see the module docstring for the fields)."""

    key: str
    kind: str
    name: str
    templates: dict[str, list[str]]
    units: str = ""
    valid_range: tuple[float, float] | None = None
    decimals: int = 0
    thresholds: tuple[float, ...] = ()
    classes: tuple[str, ...] = ()
    class_phrases: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    bank: dict[str, Any] = field(default_factory=dict)  # question-bank family and terms (datasets_scripts/question_bank.py)

    def paradigms(self) -> list[str]:
        """The paradigms this attribute has questions for."""
        return [p for p in PARADIGMS if self.templates.get(p)]

    def is_missing(self, value: Any) -> bool:
        if value is None or value is pd.NA or value is pd.NaT:
            return True
        return isinstance(value, (float, np.floating)) and math.isnan(value)

    def check_value(self, value: Any, where: str = "") -> None:
        """Raise ValueError if a non-missing value is not valid for this attribute."""
        if self.is_missing(value):
            return
        at = f" ({where})" if where else ""
        if self.kind == "categorical":
            if value not in self.classes:
                raise ValueError(f"Attribute {self.key!r}{at}: value {value!r} is not one of the allowed classes "
                                 f"{list(self.classes)}.")
            return
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"Attribute {self.key!r}{at}: value {value!r} is not a number.") from None
        if self.kind == "binary" and x not in (0.0, 1.0):
            raise ValueError(f"Attribute {self.key!r}{at}: binary value {value!r} must be 0 (no) or 1 (yes).")
        if self.kind == "continuous" and self.valid_range is not None:
            lo, hi = self.valid_range
            if not lo <= x <= hi:
                raise ValueError(f"Attribute {self.key!r}{at}: value {x} is outside the valid range [{lo}, {hi}] "
                                 f"{self.units}.")

    def format_value(self, value: Any) -> str:
        """The predictive answer for a value: "34", "23.4", "Female", "ADHD"/"Control"."""
        if self.kind == "categorical":
            return str(value)
        if self.kind == "binary":
            return self.labels[str(int(float(value)))]
        x = round(float(value), self.decimals)
        return f"{x:.{self.decimals}f}"

    def format_threshold(self, threshold: float) -> str:
        return f"{threshold:g}"


class UnknownAttributeError(KeyError):
    """An attribute key that the registry does not define."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class AttributeRegistry(Mapping[str, Attribute]):
    """An ordered mapping key -> `Attribute`; unknown keys raise an error naming the allowed keys."""

    def __init__(self, attributes: Iterable[Attribute]):
        self._attrs = {a.key: a for a in attributes}

    def __getitem__(self, key: str) -> Attribute:
        if key not in self._attrs:
            raise UnknownAttributeError(f"Unknown attribute {key!r}; allowed attribute keys: {', '.join(self._attrs)}.")
        return self._attrs[key]

    def __iter__(self):
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def select(self, keys: Iterable[str] | None) -> list[Attribute]:
        """The attributes for `keys` (all if None), validating every key."""
        return list(self._attrs.values()) if keys is None else [self[k] for k in keys]


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _parse(key: str, spec: Mapping[str, Any]) -> Attribute:
    where = f"attribute {key!r}"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
        raise ValueError(f"{where}: keys must be lower-case identifiers (letters, digits, _).")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r} is not one of {list(KINDS)}.")
    templates = {p: list(spec.get("templates", {}).get(p, [])) for p in _TEMPLATE_KEYS}
    unknown = set(spec.get("templates", {})) - set(_TEMPLATE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown template paradigm(s) {sorted(unknown)}; allowed: {list(_TEMPLATE_KEYS)}.")
    if not templates["predictive"] and not templates["judgment"]:
        raise ValueError(f"{where}: needs at least one predictive or judgment template.")
    for paradigm, texts in templates.items():
        for text in texts:
            if "<graph>" in text:
                raise ValueError(f"{where}: templates must not contain <graph> (the builder places it): {text!r}.")
            extra = _template_fields(text) - _ALLOWED_FIELDS[paradigm]
            if extra:
                raise ValueError(f"{where}: {paradigm} template {text!r} uses unknown field(s) {sorted(extra)}.")
    kwargs: dict[str, Any] = {}
    if kind == "continuous":
        rng = spec.get("valid_range")
        if rng is None or len(rng) != 2 or not rng[0] < rng[1]:
            raise ValueError(f"{where}: continuous attributes need valid_range [lo, hi] with lo < hi.")
        if any("{threshold}" not in t for t in templates["judgment"]):
            raise ValueError(f"{where}: continuous judgment templates need a {{threshold}} field.")
        kwargs.update(units=spec.get("units", ""), valid_range=(float(rng[0]), float(rng[1])),
                      decimals=int(spec.get("decimals", 0)), thresholds=tuple(float(t) for t in spec.get("thresholds", ())))
    elif kind == "binary":
        labels = {str(k): str(v) for k, v in spec.get("labels", {"1": "Yes", "0": "No"}).items()}
        if set(labels) != {"0", "1"}:
            raise ValueError(f"{where}: binary labels must have exactly the keys '0' and '1'.")
        kwargs.update(labels=labels)
    else:
        classes = tuple(spec.get("classes", ()))
        if len(classes) < 2:
            raise ValueError(f"{where}: categorical attributes need at least two classes.")
        phrases = dict(spec.get("class_phrases", {c: c.lower() for c in classes}))
        if set(phrases) != set(classes):
            raise ValueError(f"{where}: class_phrases must cover exactly the classes {list(classes)}.")
        if any("{phrase}" not in t for t in templates["judgment"]):
            raise ValueError(f"{where}: categorical judgment templates need a {{phrase}} field.")
        if templates["comparative"] or templates["comparative_lower"]:
            raise ValueError(f"{where}: categorical attributes have no order, so no comparative templates.")
        kwargs.update(classes=classes, class_phrases=phrases)
    kwargs["bank"] = _parse_bank(where, spec.get("bank", {}), kwargs.get("classes", ()))
    return Attribute(key=key, kind=kind, name=str(spec.get("name", key)), templates=templates, **kwargs)


_BANK_FIELDS = {"family", "terms", "held_out_terms", "class_terms", "held_out_class_terms"}


def _parse_bank(where: str, bank: Any, classes: tuple[str, ...]) -> dict[str, Any]:
    """Check an attribute's ``bank`` entry (family name, term lists, per-class term lists)."""
    if not isinstance(bank, dict):
        raise ValueError(f"{where}: 'bank' must be an object (family, terms, held_out_terms, class_terms, "
                         "held_out_class_terms).")
    unknown = set(bank) - _BANK_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown bank field(s) {sorted(unknown)}; allowed: {sorted(_BANK_FIELDS)}.")

    def words(value: Any, name: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
            raise ValueError(f"{where}: bank {name} must be a list of non-empty strings.")
        if len(set(value)) != len(value):
            raise ValueError(f"{where}: bank {name} lists a term twice: {value}.")
        return list(value)

    out: dict[str, Any] = {}
    if "family" in bank:
        out["family"] = str(bank["family"])
    for name in ("terms", "held_out_terms"):
        if name in bank:
            out[name] = words(bank[name], name)
    if set(out.get("terms", [])) & set(out.get("held_out_terms", [])):
        raise ValueError(f"{where}: a term cannot be both a training and a held-out term: "
                         f"{sorted(set(out['terms']) & set(out['held_out_terms']))}.")
    for name in ("class_terms", "held_out_class_terms"):
        if name not in bank:
            continue
        if not classes:
            raise ValueError(f"{where}: bank {name} is for categorical attributes only.")
        given = bank[name]
        if not isinstance(given, dict) or set(given) - set(classes):
            raise ValueError(f"{where}: bank {name} must map classes {list(classes)} to term lists.")
        out[name] = {c: words(v, f"{name}[{c!r}]") for c, v in given.items()}
    return out


def load_registry(path: str | Path | None = None) -> AttributeRegistry:
    """Read a registry file (JSON: ``{"attributes": {key: spec, ...}}``); default: the bundled 19 attributes."""
    path = Path(path) if path is not None else DEFAULT_REGISTRY_PATH
    data = json.loads(Path(path).read_text())
    specs = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(specs, dict) or not specs:
        raise ValueError(f"{path}: expected a JSON object with a non-empty 'attributes' mapping.")
    return AttributeRegistry(_parse(key, spec) for key, spec in specs.items())


DEFAULT_KEYS = ("age", "sex", "handedness", "education_years", "fiq", "viq", "piq", "bmi", "eye_status",
                "ados_total", "adhd_index", "autism", "adhd", "depression", "schizophrenia", "bipolar",
                "anxiety", "ocd", "ptsd")
