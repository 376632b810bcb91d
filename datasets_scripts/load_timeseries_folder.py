"""Loader (a): a folder of ROI time-series files plus a phenotype table -> `SubjectTable`.

Files (one subject each, `(T, N)`: timepoints in rows, ROIs in columns):
- ``.1D`` / ``.txt``: whitespace separated; ``#`` lines are comments (ABIDE preprocessed's header
  ``#2001 #2002 ...``); a first line of names is a header (ADHD-200 Athena ``*_TCs.1D``, whose
  ``File`` and ``Sub-brick`` columns are dropped);
- ``.csv`` / ``.tsv``: comma / tab separated, optional header line;
- ``.npy``: a plain `(T, N)` array (read without pickle).

Each file is matched to a phenotype row by the subject id in its name (zero-padding tolerant, see
`subject_ids.py`): ``Pitt_0050003_rois_cc200.1D`` is ABIDE subject 50003. Files without a phenotype
row and rows without a file are counted in ``info["unmatched"]``. A time series too short, with
constant ROIs or with NaN excludes its subject, counted per site in ``info["excluded"]``
(``{site: {reason: count}}``), logged, and a warning names any site that lost every subject.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from processing.connectivity import compute_fcns

from .fcn_checks import ExclusionLog, atlas_num_rois, time_series_problem
from .load_fcn_stack import MappingLike, fcn_stack_to_table
from .phenotype_mappings import PhenotypeMapping, load_mapping, read_phenotype_table
from .subject_ids import match_files
from .subjects import SubjectTable

logger = logging.getLogger("datasets_scripts.loaders")

TIME_SERIES_SUFFIXES = (".1d", ".csv", ".tsv", ".npy", ".txt")
NON_ROI_COLUMNS = ("file", "sub-brick")  # ADHD-200 Athena *_TCs.1D: source volume and volume index


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_time_series(path: str | Path, transpose: bool = False) -> np.ndarray:
    """One subject's ROI time series `(T, N)` float64 from a ``.1D/.txt/.csv/.tsv/.npy`` file.

    Args:
        transpose: the file stores `(N, T)` (ROIs in rows).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path.name}: not a plain numeric array ({err}).") from None
    elif suffix in TIME_SERIES_SUFFIXES:
        sep = {".csv": ",", ".tsv": "\t"}.get(suffix, r"\s+")
        first = _first_data_line(path)
        tokens = re.split(sep, first.strip()) if sep == r"\s+" else first.strip().split(sep)
        has_header = not all(_is_number(t.strip().strip('"')) for t in tokens)
        frame = pd.read_csv(path, sep=sep, header=0 if has_header else None, comment="#", skip_blank_lines=True)
        if has_header:
            frame = frame[[c for c in frame.columns if str(c).strip().casefold() not in NON_ROI_COLUMNS]]
        try:
            arr = frame.to_numpy(dtype=np.float64)
        except ValueError:
            bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
            raise ValueError(f"{path.name}: non-numeric values in column(s) {bad[:5]}.") from None
    else:
        raise ValueError(f"{path.name}: unsupported time-series file; suffixes: {', '.join(TIME_SERIES_SUFFIXES)}.")
    if arr.ndim != 2:
        raise ValueError(f"{path.name}: a time series must be 2-D (T, N), got shape {arr.shape}.")
    return np.ascontiguousarray(arr.T if transpose else arr, dtype=np.float64)


def _first_data_line(path: Path) -> str:
    with path.open() as handle:
        for line in handle:
            if line.strip() and not line.lstrip().startswith("#"):
                return line
    raise ValueError(f"{path.name}: no data rows.")


def list_time_series_files(folder: str | Path, pattern: str = "*", exclude: Sequence[Path] = ()) -> list[Path]:
    """Time-series files under `folder` matching the glob `pattern` (``"**/*.1D"`` recurses)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Time-series folder {str(folder)!r} does not exist.")
    skip = {p.resolve() for p in exclude}
    files = sorted(
        p for p in folder.glob(pattern)
        if p.is_file() and p.suffix.lower() in TIME_SERIES_SUFFIXES and p.resolve() not in skip
    )
    if not files:
        raise ValueError(
            f"No time-series files ({', '.join(TIME_SERIES_SUFFIXES)}) match {pattern!r} in {str(folder)!r}."
        )
    return files


# Atlas names -> the name the public releases give their ROI time-series files.
RELEASE_ATLAS_NAMES = {"aal116": "aal", "cc200": "cc200", "cc400": "cc400", "dosenbach160": "dosenbach160",
                       "ho": "ho", "tt": "tt", "ez": "ez"}
# File-name patterns of the public releases, tried in order ({atlas}: the release's atlas name).
RELEASE_PATTERNS = (
    ("ABIDE preprocessed (PCP)", "**/*_rois_{atlas}.1D"),  # Pitt_0050003_rois_cc200.1D
    ("ADHD-200 preprocessed (Athena), first rest run", "**/*_rest_1_{atlas}_TCs.1D"),  # ..._session_1_rest_1_aal_TCs.1D
)


def release_pattern(folder: str | Path, atlas: str) -> tuple[str, str]:
    """(release, glob) of the first public release layout with files for `atlas` under `folder`,
    else ``("any time-series file", "*")``."""
    key = atlas.lower().replace("_", "-")
    name = RELEASE_ATLAS_NAMES.get(key, key)
    for release, pattern in RELEASE_PATTERNS:
        glob = pattern.format(atlas=name)
        if any(p.is_file() for p in Path(folder).glob(glob)):
            return release, glob
    return "any time-series file", "*"


def load_timeseries_folder(
    folder: str | Path,
    phenotype: str | Path | pd.DataFrame | Sequence[str | Path] | None = None,
    mapping: MappingLike | None = None,
    *,
    atlas: str,
    num_rois: int | None = None,
    dataset: str | None = None,
    site: str = "unknown",
    pattern: str = "*",
    id_pattern: str | re.Pattern | None = None,
    kind: str = "correlation",
    fisher_z: bool = False,
    cov_estimator: str = "empirical",
    min_timepoints: int = 20,
    transpose: bool = False,
) -> SubjectTable:
    """Load a cohort of ROI time series, compute their FCNs `(S, N, N)` and attach attributes; the table keeps the
    series (`SubjectTable.timeseries`).

    Args:
        phenotype: phenotype table(s) (CSV/TSV paths or a DataFrame, e.g. nilearn's ABIDE
            ``phenotypic``); None keeps every file, its id being `id_pattern`'s match or the stem.
        mapping: `PhenotypeMapping`, dict, ``"abide1"`` / ``"adhd200"`` or a JSON path; None means
            the table is already in our conventions (`PhenotypeMapping.native`).
        atlas: atlas name stored with each subject; time series must have its ROI count (for an
            atlas `processing.atlases` does not know, give `num_rois` or all files must agree).
        site: the site of subjects whose phenotype gives none.
        pattern: glob of the files to read (e.g. ``"*rest_1*"`` for one run per subject).
        id_pattern: regex locating the id in a file name (group ``id``); default: any digit run.
        kind, fisher_z, cov_estimator: passed to `processing.connectivity.compute_fcns`.
        min_timepoints: shorter time series exclude their subject (never below what `kind` needs).
        transpose: files store `(N, T)`.
    Raises:
        ValueError: unknown phenotype column / code, a file with the wrong ROI count (naming both
            sizes), or no subject left.
    """
    folder = Path(folder)
    tables = phenotype if isinstance(phenotype, (list, tuple)) else [phenotype]
    exclude = [Path(t) for t in tables if isinstance(t, (str, Path))]  # a phenotype CSV inside the folder
    files = list_time_series_files(folder, pattern, exclude=exclude)
    info: dict[str, Any] = {
        "source": {
            "format": "timeseries_folder", "path": str(folder), "atlas": atlas, "kind": kind,
            "fisher_z": fisher_z, "cov_estimator": cov_estimator, "min_timepoints": min_timepoints,
        },
    }
    if phenotype is None:
        dataset = dataset or folder.name
        ids = [_id_from_name(p.name, id_pattern) for p in files]
        frame = pd.DataFrame({"subject_id": ids, "site": site})
        subject_files = dict(zip(ids, files))
        unmatched: dict[str, Any] = {}
        if len(set(ids)) != len(ids):
            raise ValueError("Several files give one subject id; pass `id_pattern` or a phenotype table.")
    else:
        table = read_phenotype_table(phenotype)
        if mapping is None:
            mapping = PhenotypeMapping.native(
                [str(c) for c in table.columns], name=dataset or folder.name,
                site="site" if "site" in table.columns else None,
            )
        mapping = load_mapping(mapping)
        dataset = dataset or mapping.name
        mapped = mapping.apply(table, default_site=site)
        match = match_files(files, mapped.frame["subject_id"].tolist(), id_pattern)
        if not match.files:
            raise ValueError(
                f"None of the {len(files)} time-series file(s) in {str(folder)!r} (pattern {pattern!r}) matches a "
                f"phenotype row: {len(mapped.frame)} phenotype row(s) with a subject id (column "
                f"{mapping.subject_id!r}, e.g. {mapped.frame['subject_id'].head(3).tolist()}), files e.g. "
                f"{[p.name for p in files[:3]]}. Check the mapping, the phenotype file and `id_pattern`."
            )
        frame = mapped.frame[mapped.frame["subject_id"].isin(list(match.files))].reset_index(drop=True)
        subject_files = match.files
        unmatched = {
            "files_without_phenotype": [p.name for p in match.files_without_subject],
            "phenotype_without_file": match.subjects_without_file,
            "phenotype_rows_without_id": mapped.rows_without_id,
        }
    info["unmatched"] = unmatched
    for what, items in unmatched.items():
        count = items if isinstance(items, int) else len(items)
        if count:
            logger.warning("%s: %d %s%s.", dataset, count, what.replace("_", " "),
                           "" if isinstance(items, int) else f", e.g. {items[:5]}")

    expected = atlas_num_rois(atlas, num_rois)
    first_file: Path | None = None
    exclusions = ExclusionLog()
    series, keep = [], []
    for row, (sid, site_name) in enumerate(zip(frame["subject_id"], frame["site"])):
        path = subject_files[sid]
        ts = read_time_series(path, transpose=transpose)
        if expected is None:
            expected, first_file = ts.shape[1], path
        if ts.shape[1] != expected:
            source = f"atlas {atlas!r}" if first_file is None else f"{first_file.name} (first file read)"
            hint = " The file looks transposed: pass transpose=True." if ts.shape[0] == expected else ""
            raise ValueError(
                f"{path.name}: time series has {ts.shape[1]} ROIs (columns) but {source} has {expected} ROIs.{hint}"
            )
        problem = time_series_problem(ts, kind, min_timepoints, cov_estimator)
        if problem is not None:
            exclusions.add(sid, site_name, problem[0], f"{path.name}: {problem[1]}")
            continue
        series.append(ts)
        keep.append(row)

    kept = frame.iloc[keep].reset_index(drop=True)
    info["excluded"] = exclusions.counts()
    info["excluded_subjects"] = exclusions.records
    info["counts"] = {
        "files": len(files), "matched": len(frame), "excluded": len(exclusions.records), "loaded": len(kept)
    }
    if phenotype is not None:
        info["counts"]["phenotype_rows"] = int(len(table))
    exclusions.report(kept["site"].tolist(), source=dataset)
    if not series:
        raise ValueError(
            f"{dataset}: no subject left in {str(folder)!r}: {len(frame)} matched, all excluded "
            f"({info['excluded']}); {len(unmatched.get('files_without_phenotype', []))} file(s) had no phenotype row."
        )
    fcns = compute_fcns(series, kind=kind, fisher_z=fisher_z, cov_estimator=cov_estimator)
    table = fcn_stack_to_table(
        fcns,
        kept["subject_id"].tolist(),
        atlas=atlas,
        dataset=kept["dataset"].tolist() if "dataset" in kept.columns else dataset,
        sites=kept["site"].tolist(),
        attributes=kept.drop(columns=[c for c in ("subject_id", "site", "dataset") if c in kept.columns]),
        num_rois=expected,
        info=info,
    )
    table.timeseries = series  # row i's series, for sliding-window FCNs (build_instructions --keep-timeseries)
    return table


def _id_from_name(name: str, id_pattern: str | re.Pattern | None) -> str:
    if id_pattern is None:
        return Path(name).stem
    match = re.search(id_pattern, name)
    if match is None:
        raise ValueError(f"id_pattern {getattr(id_pattern, 'pattern', id_pattern)!r} finds no id in {name!r}.")
    return match.group("id") if "id" in match.re.groupindex else match.group(1 if match.re.groups else 0)

