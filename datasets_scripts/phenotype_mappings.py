"""Phenotype tables -> registry attributes: column mappings, value codes, missing codes.

A `PhenotypeMapping` says which column of a cohort's phenotype table holds the subject id, the site
and each attribute (by registry key, see `subjects.py`), how raw codes translate to our value
conventions, and which raw values mean "missing":

- continuous attributes: float, NaN when missing;
- binary conditions: 0.0 / 1.0 (1 = has the condition), NaN when missing;
- categorical attributes: a class name (sex Female/Male, handedness Right/Left/Ambidextrous,
  eye_status Open/Closed), None when missing.

Ready mappings: `ABIDE_I` (ABIDE I preprocessed, `Phenotypic_V1_0b_preprocessed1.csv`) and
`ADHD_200` (ADHD-200 phenotypic CSVs). Declare others in code or as a dict / JSON file
(`PhenotypeMapping.from_dict`, `load_mapping`):

    {"name": "my-cohort", "subject_id": "participant_id", "site": "scanner",
     "missing": [-999, "n/a"],
     "columns": {"age_years": "age",
                 "group": {"attribute": "depression", "codes": {"MDD": 1, "HC": 0}}}}

Codes are matched tolerant of type and case: ``1``, ``1.0`` and ``"1"`` are the same code, ``"R"``
and ``"r"`` too. A raw value that is neither a code nor a missing code raises a ValueError naming the
value and the allowed ones; a mapped column absent from the table raises one naming the column and
the available columns.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .attributes import Attribute, AttributeRegistry, load_registry
from .subject_ids import canonical_id
from .subjects import REQUIRED_COLUMNS

@functools.lru_cache(maxsize=1)
def default_registry() -> AttributeRegistry:
    """The attribute registry whose kinds, classes and valid ranges mappings are checked against."""
    return load_registry()


def _attribute(key: str) -> Attribute | None:
    """The registry entry of `key`; None for keys it does not define (passed through unchecked)."""
    registry = default_registry()
    return registry[key] if key in registry else None


# Raw values that mean "missing" in every mapping (empty cells and NaN are always missing).
DEFAULT_MISSING: tuple[Any, ...] = ("NA", "N/A", "NaN", "None", "null")


def code_key(value: Any) -> str | None:
    """Canonical form of a raw cell for code matching; None for empty / NaN.

    Numbers compare by value (``1``, ``1.0``, ``"1"``, ``" 1.0 "`` -> ``"1"``), text case-insensitively.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _number_key(float(value))
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text.casefold()
    return _number_key(number)


def _number_key(number: float) -> str | None:
    if math.isnan(number):
        return None
    if math.isfinite(number) and number.is_integer():
        return str(int(number))
    return repr(number)


@dataclass(frozen=True)
class ColumnMapping:
    """One phenotype column -> one attribute.

    Attributes:
        column: the column's name in the phenotype table.
        attribute: the registry key it fills (e.g. ``"autism"``).
        codes: raw value -> attribute value (e.g. ``{1: 1.0, 2: 0.0}``); None for a numeric column.
        missing: raw values meaning "missing" in this column, on top of the mapping's own.
        transform: instead of `codes`, a function of the raw text (stripped) returning the attribute
            value; it raises ValueError for a value it does not know.
        numeric: without codes or transform: parse values as floats (True), keep them as text
            (False), or numbers when every value parses and text otherwise (None).
    """

    column: str
    attribute: str
    codes: Mapping[Any, Any] | None = None
    missing: tuple[Any, ...] = ()
    transform: Callable[[str], Any] | None = None
    numeric: bool | None = True


@dataclass
class MappedPhenotypes:
    """A phenotype table in our conventions.

    Attributes:
        frame: one row per subject; columns `subject_id` (str), `site` (str), `dataset` (str; only when
            the mapping names a dataset column), then attributes.
        rows_without_id: phenotype rows dropped because their subject id cell was empty.
    """

    frame: pd.DataFrame
    rows_without_id: int = 0


@dataclass(frozen=True)
class PhenotypeMapping:
    """How to read one cohort's phenotype table.

    Attributes:
        name: the cohort's name, the default `dataset` of its subjects (e.g. ``"ABIDE-I"``).
        subject_id: the column holding subject ids.
        site: the column holding sites; None when the cohort is one site (the loader's `site`).
        columns: the attribute columns.
        missing: raw values meaning "missing" in every column.
        site_codes: raw site value -> site name (e.g. ADHD-200's numeric site codes); values not
            listed keep their raw text.
        dataset: the column holding each row's cohort name, for a table of several cohorts; None: one
            cohort (`name`).
    """

    name: str
    subject_id: str
    site: str | None = None
    columns: tuple[ColumnMapping, ...] = ()
    missing: tuple[Any, ...] = DEFAULT_MISSING
    site_codes: Mapping[Any, str] | None = None
    dataset: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        targets = [c.attribute for c in self.columns]
        repeated = sorted({t for t in targets if targets.count(t) > 1})
        if repeated:
            raise ValueError(f"Mapping {self.name!r} fills attribute(s) {repeated} from more than one column.")
        for col in self.columns:
            _check_conventions(self.name, col)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "PhenotypeMapping":
        """Build a mapping from a plain dict (see the module docstring for the layout)."""
        unknown = sorted(set(spec) - {"name", "subject_id", "site", "columns", "missing", "site_codes", "dataset"})
        if unknown:
            raise ValueError(
                f"Unknown mapping key(s) {unknown}; allowed: name, subject_id, site, columns, missing, site_codes, "
                "dataset."
            )
        if "subject_id" not in spec:
            raise ValueError("A phenotype mapping needs `subject_id`: the column holding subject ids.")
        columns = []
        for column, target in dict(spec.get("columns", {})).items():
            if isinstance(target, str):
                columns.append(ColumnMapping(column=column, attribute=target))
            elif isinstance(target, Mapping):
                extra = sorted(set(target) - {"attribute", "codes", "missing", "numeric"})
                if extra or "attribute" not in target:
                    raise ValueError(
                        f"Column {column!r}: expected keys attribute (required), codes, missing, numeric; got {sorted(target)}."
                    )
                columns.append(
                    ColumnMapping(
                        column=column,
                        attribute=target["attribute"],
                        codes=target.get("codes"),
                        missing=tuple(target.get("missing", ())),
                        numeric=target.get("numeric", True),
                    )
                )
            else:
                raise ValueError(f"Column {column!r}: expected an attribute key or a dict, got {target!r}.")
        return cls(
            name=str(spec.get("name", "cohort")),
            subject_id=spec["subject_id"],
            site=spec.get("site"),
            columns=tuple(columns),
            missing=tuple(spec.get("missing", DEFAULT_MISSING)),
            site_codes=spec.get("site_codes"),
            dataset=spec.get("dataset"),
        )

    @classmethod
    def native(
        cls, columns: Sequence[str], name: str = "cohort", subject_id: str = "subject_id", site: str | None = "site"
    ) -> "PhenotypeMapping":
        """The mapping of a table already in our conventions: every other column is an attribute key.

        Default keys are checked against their conventions (e.g. sex must read Female/Male, binary
        conditions 0/1); other columns are numeric when every value parses as a number. A ``dataset``
        column names each row's cohort.
        """
        mapped = []
        for column in columns:
            if column in (subject_id, site) or column in REQUIRED_COLUMNS:
                continue
            attr = _attribute(column)
            if attr is None:
                mapped.append(ColumnMapping(column, column, numeric=None))
            elif attr.kind == "categorical":
                mapped.append(ColumnMapping(column, column, codes={c: c for c in attr.classes}))
            elif attr.kind == "binary":
                mapped.append(ColumnMapping(column, column, codes={0: 0.0, 1: 1.0}))
            else:
                mapped.append(ColumnMapping(column, column))
        return cls(name=name, subject_id=subject_id, site=site, columns=tuple(mapped),
                   dataset="dataset" if "dataset" in columns else None)

    def apply(self, table: pd.DataFrame, default_site: str = "unknown") -> MappedPhenotypes:
        """Translate a raw phenotype table into `MappedPhenotypes` (our columns and conventions)."""
        resolve = _column_resolver(table)
        id_column = resolve(self.subject_id, "subject ids")
        ids = table[id_column].map(lambda v: None if code_key(v) is None else str(v).strip())
        has_id = ids.notna().to_numpy()
        rows = table.loc[has_id].reset_index(drop=True)
        ids = ids[has_id].reset_index(drop=True).map(_clean_id)
        repeated = ids[ids.map(canonical_id).duplicated(keep=False)].unique().tolist()
        if repeated:
            raise ValueError(f"Phenotype table ({self.name}) repeats subject id(s) {repeated[:10]}.")

        out = pd.DataFrame({"subject_id": ids.astype(object)})
        if self.site is None:
            out["site"] = default_site
        else:
            site_codes = {code_key(k): str(v) for k, v in (self.site_codes or {}).items()}
            raw_sites = rows[resolve(self.site, "sites")]
            out["site"] = [
                default_site if code_key(v) is None else site_codes.get(code_key(v), str(v).strip())
                for v in raw_sites
            ]
        if self.dataset is not None:
            out["dataset"] = [self.name if code_key(v) is None else str(v).strip()
                              for v in rows[resolve(self.dataset, "datasets")]]
        global_missing = {code_key(m) for m in self.missing} - {None}
        for col in self.columns:
            values = rows[resolve(col.column, f"attribute {col.attribute!r}")]
            out[col.attribute] = _convert_column(col, values, global_missing, ids)
            _check_values(col, out[col.attribute], ids)
        return MappedPhenotypes(frame=out, rows_without_id=int((~has_id).sum()))


def _clean_id(value: str) -> str:
    """An id that a float column turned into ``50003.0`` back to ``50003``; others unchanged."""
    if "." in value:
        try:
            number = float(value)
        except ValueError:
            return value
        if number.is_integer():
            return str(int(number))
    return value


def _column_resolver(table: pd.DataFrame) -> Callable[[str, str], str]:
    """Find a column by exact name, else by name with surrounding spaces ignored (ADHD-200, ABIDE II)."""
    stripped = {str(c).strip(): c for c in table.columns}

    def resolve(column: str, role: str) -> str:
        if column in table.columns:
            return column
        if column.strip() in stripped:
            return stripped[column.strip()]
        raise ValueError(
            f"Phenotype column {column!r} (for {role}) not found; available columns: {[str(c) for c in table.columns]}."
        )

    return resolve


def _convert_column(col: ColumnMapping, values: pd.Series, global_missing: set[str], ids: pd.Series) -> pd.Series:
    missing = global_missing | ({code_key(m) for m in col.missing} - {None})
    keys = [code_key(v) for v in values]
    is_missing = [k is None or k in missing for k in keys]
    texts = [None if m else str(v).strip() for v, m in zip(values, is_missing)]
    bad: dict[str, str] = {}  # raw value -> first subject id carrying it
    converted: list[Any] = []

    if col.codes is not None:
        index = {code_key(k): v for k, v in col.codes.items()}
        for key, text, sid in zip(keys, texts, ids):
            if text is None:
                converted.append(None)
            elif key in index:
                converted.append(index[key])
            else:
                bad.setdefault(text, sid)
                converted.append(None)
        if bad:
            raise ValueError(
                f"Phenotype column {col.column!r} (attribute {col.attribute!r}) has unknown value(s) "
                f"{list(bad)[:10]} (e.g. subject {next(iter(bad.values()))!r}); allowed values: "
                f"{list(col.codes)}; missing codes: {sorted(missing)}. Add them to the mapping's codes or missing."
            )
    elif col.transform is not None:
        for text, sid in zip(texts, ids):
            try:
                converted.append(None if text is None else col.transform(text))
            except ValueError as err:
                raise ValueError(
                    f"Phenotype column {col.column!r} (attribute {col.attribute!r}), subject {sid!r}: {err}"
                ) from None
    elif col.numeric is False:
        return pd.Series(texts, dtype=object)
    else:
        numbers = []
        for text, sid in zip(texts, ids):
            if text is None:
                numbers.append(math.nan)
                continue
            try:
                numbers.append(float(text))
            except ValueError:
                bad.setdefault(text, sid)
        if not bad:
            return pd.Series(numbers, dtype=float)
        if col.numeric:
            raise ValueError(
                f"Phenotype column {col.column!r} (attribute {col.attribute!r}) has non-numeric value(s) "
                f"{list(bad)[:10]} (e.g. subject {next(iter(bad.values()))!r}); expected numbers, or one of the "
                f"missing codes {sorted(missing)}. Declare the value as missing or give the column codes."
            )
        converted = texts  # text column (explicitly numeric=False, or auto with text values)

    if all(v is None or isinstance(v, (int, float, np.integer, np.floating)) for v in converted):
        return pd.Series([math.nan if v is None else float(v) for v in converted], dtype=float)
    return pd.Series(converted, dtype=object)


def _check_conventions(name: str, col: ColumnMapping) -> None:
    """Coded values of registry attributes must follow its conventions (kinds, classes)."""
    key = col.attribute
    if key in REQUIRED_COLUMNS:
        raise ValueError(f"Mapping {name!r}: column {col.column!r} cannot fill the reserved column {key!r}.")
    attr = _attribute(key)
    if attr is None:
        return
    if col.codes is None:
        if attr.kind == "categorical" and col.transform is None:
            raise ValueError(
                f"Mapping {name!r}: categorical attribute {key!r} (column {col.column!r}) needs codes mapping raw "
                f"values to {list(attr.classes)}."
            )
        return
    for value in col.codes.values():
        try:
            attr.check_value(value, where=f"mapping {name!r}, codes of column {col.column!r}")
        except ValueError as err:
            raise ValueError(f"{err} Fix the mapping's codes.") from None


def _check_values(col: ColumnMapping, values: pd.Series, ids: pd.Series) -> None:
    """Converted values of a registry attribute must be valid (e.g. an undeclared -9999 age is not)."""
    attr = _attribute(col.attribute)
    if attr is None:
        return
    for value, sid in zip(values, ids):
        try:
            attr.check_value(value, where=f"column {col.column!r}, subject {sid!r}")
        except ValueError as err:
            raise ValueError(f"{err} If it means 'unknown', add it to the mapping's missing codes.") from None


# --------------------------------------------------------------------------------------------------
# Ready mappings
# --------------------------------------------------------------------------------------------------
ABIDE_I = PhenotypeMapping(
    name="ABIDE-I",
    subject_id="SUB_ID",
    site="SITE_ID",
    missing=(-9999, *DEFAULT_MISSING),
    columns=(
        ColumnMapping("DX_GROUP", "autism", codes={1: 1.0, 2: 0.0}),  # 1 = autism, 2 = control
        ColumnMapping("AGE_AT_SCAN", "age"),
        ColumnMapping("SEX", "sex", codes={1: "Male", 2: "Female"}),
        # "L->R" / "R->L" (switched handedness) has no class of ours: read as missing.
        ColumnMapping(
            "HANDEDNESS_CATEGORY",
            "handedness",
            codes={"R": "Right", "L": "Left", "Ambi": "Ambidextrous", "Mixed": "Ambidextrous"},
            missing=("L->R", "R->L"),
        ),
        ColumnMapping("FIQ", "fiq"),
        ColumnMapping("VIQ", "viq"),
        ColumnMapping("PIQ", "piq"),
        ColumnMapping("EYE_STATUS_AT_SCAN", "eye_status", codes={1: "Open", 2: "Closed"}),
        ColumnMapping("ADOS_TOTAL", "ados_total"),
    ),
)


def adhd200_handedness(text: str) -> str:
    """ADHD-200 `Handedness`: codes 0 = Left, 1 = Right, 2 = Ambidextrous; some sites report the
    Edinburgh laterality quotient in [-1, 1] instead (read with the usual +-0.4 cut-offs)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value in (0.0, 1.0, 2.0):
        return ("Left", "Right", "Ambidextrous")[int(value)]
    if -1.0 <= value <= 1.0:
        return "Left" if value <= -0.4 else "Right" if value >= 0.4 else "Ambidextrous"
    raise ValueError(
        f"unknown handedness value {text!r}; allowed: 0 (Left), 1 (Right), 2 (Ambidextrous) "
        "or a laterality quotient in [-1, 1]."
    )


ADHD_200 = PhenotypeMapping(
    name="ADHD-200",
    subject_id="ScanDir ID",
    site="Site",
    missing=(-999, "pending", *DEFAULT_MISSING),
    # The ADHD-200 phenotypic key's site codes; sites given by name keep their name.
    site_codes={1: "Peking", 2: "Brown", 3: "KKI", 4: "NeuroIMAGE", 5: "NYU", 6: "OHSU", 7: "Pittsburgh", 8: "WashU"},
    columns=(
        # 0 = typically developing; 1, 2, 3 = ADHD combined, hyperactive/impulsive, inattentive.
        ColumnMapping("DX", "adhd", codes={0: 0.0, 1: 1.0, 2: 1.0, 3: 1.0}),
        ColumnMapping("Gender", "sex", codes={0: "Female", 1: "Male"}),
        ColumnMapping("Age", "age"),
        ColumnMapping("Handedness", "handedness", transform=adhd200_handedness),
        ColumnMapping("ADHD Index", "adhd_index"),
        ColumnMapping("Full4 IQ", "fiq"),
        ColumnMapping("Verbal IQ", "viq"),
        ColumnMapping("Performance IQ", "piq"),
    ),
)

MAPPINGS: dict[str, PhenotypeMapping] = {"abide1": ABIDE_I, "adhd200": ADHD_200}


def load_mapping(mapping: PhenotypeMapping | Mapping[str, Any] | str | Path) -> PhenotypeMapping:
    """A mapping from an object, a dict, a ready name (``"abide1"``, ``"adhd200"``) or a JSON file."""
    if isinstance(mapping, PhenotypeMapping):
        return mapping
    if isinstance(mapping, Mapping):
        return PhenotypeMapping.from_dict(mapping)
    key = str(mapping).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = {"abidei": "abide1"}.get(key, key)
    if key in MAPPINGS:
        return MAPPINGS[key]
    path = Path(mapping)
    if path.suffix.lower() == ".json" and path.is_file():
        return PhenotypeMapping.from_dict(json.loads(path.read_text()))
    raise ValueError(f"Unknown phenotype mapping {str(mapping)!r}; ready mappings: {sorted(MAPPINGS)}, or a .json file.")


def read_phenotype_table(source: str | Path | pd.DataFrame | Sequence[str | Path | pd.DataFrame]) -> pd.DataFrame:
    """Read phenotype table(s) as text cells (ids keep their zero padding); several are stacked.

    `.tsv` / `.txt` files are tab separated, others comma separated.
    """
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    if isinstance(source, (list, tuple)):
        return pd.concat([read_phenotype_table(s) for s in source], ignore_index=True)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Phenotype table {str(path)!r} does not exist.")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


__all__ = [
    "ABIDE_I",
    "ADHD_200",
    "MAPPINGS",
    "ColumnMapping",
    "MappedPhenotypes",
    "PhenotypeMapping",
    "adhd200_handedness",
    "code_key",
    "load_mapping",
    "read_phenotype_table",
]
