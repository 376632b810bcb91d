"""Reading an instruction-set folder for zero-shot evaluation, with clear errors on bad input.

The folder (written by `datasets_scripts/build_instructions.py`) has two configs that
`datasets.load_dataset(folder, name)` reads:
- ``subjects``: one row per subject (subject_id, dataset, site, the FCN, attribute columns, and the
  simulator's oracle scores where it stored them), splits train / validation / zero_shot;
- ``instructions``: id, messages, subject_ids, paradigm, attribute, answer, dataset, site; the
  ``zero_shot`` split is what FCN-LLM is evaluated on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from datasets_scripts.loading import INSTRUCTIONS_CONFIG, SUBJECTS_CONFIG, DatasetFormatError, load_instruction_set
from datasets_scripts.triangles import triangle_to_matrices

TRAIN_SPLIT, ZERO_SHOT_SPLIT = "train", "zero_shot"
SUBJECT_COLUMNS = ("subject_id", "dataset", "site")
INSTRUCTION_COLUMNS = ("id", "messages", "subject_ids", "paradigm", "attribute", "answer", "dataset", "site")
ORACLE_PREFIX = "oracle_"


@dataclass
class EvaluationData:
    """Subjects of all splits and the zero-shot instructions.

    Attributes:
        subjects: one row per subject, with a ``split`` column; row i owns ``fcns[i]``.
        fcns: `(S, N, N)` float32 FCNs.
        instructions: zero-shot instruction rows (``subject_ids`` as lists of strings).
        oracle: attribute key -> per-subject oracle scores aligned with `subjects` (binary: log-odds
            `(S,)`, categorical: class posteriors `(S, C)`, continuous: posterior mean `(S,)`); NaN where absent.
        notes: what was skipped or unavailable, for the report.
        seen_thresholds: attribute key -> the thresholds the `train` split's judgments name (empty without a
            `threshold` column), so the evaluation can tell thresholds seen in training from new ones.
    """

    subjects: pd.DataFrame
    fcns: np.ndarray
    instructions: pd.DataFrame
    oracle: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seen_thresholds: dict[str, set[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._row = {sid: i for i, sid in enumerate(self.subjects["subject_id"])}

    def rows(self, subject_ids) -> np.ndarray:
        """Row indices `(k,)` of `subject_ids`; KeyError naming the first unknown id."""
        try:
            return np.array([self._row[s] for s in subject_ids], dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"Subject {err.args[0]!r} of an instruction is not in the subjects config.") from None

    def split_rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.subjects["split"].to_numpy() == split)


def _require_columns(frame: pd.DataFrame, columns, where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{where} is missing column(s) {missing}; found {list(frame.columns)}.")


def _decode_fcns(subjects: pd.DataFrame, where: str) -> np.ndarray:
    """FCNs `(S, N, N)` float32 from the subjects frame (see `fcn_column`)."""
    column = fcn_column(subjects)
    if column is None:
        raise DatasetFormatError(f"{where} has no FCN column (looked for {list(_FCN_COLUMNS)}); "
                                 f"found {list(subjects.columns)}.")
    vectors = [np.asarray(v, dtype=np.float32) for v in subjects[column]]
    sizes = {len(v) for v in vectors}
    if len(sizes) != 1:
        raise DatasetFormatError(f"{where}: FCN vectors have different lengths {sorted(sizes)}.")
    size_column = next((c for c in _SIZE_COLUMNS if c in subjects.columns), None)
    num_rois = None
    if size_column is not None:
        sizes = set(pd.to_numeric(subjects[size_column]).astype(int))
        if len(sizes) != 1:
            raise DatasetFormatError(f"{where}: subjects have different ROI counts {sorted(sizes)} "
                                     f"(column {size_column!r}); evaluate one atlas at a time.")
        num_rois = sizes.pop()
    return triangle_to_matrices(np.stack(vectors), where, num_rois)


_FCN_COLUMNS = ("fcn_triu", "fcn", "fcn_upper", "connectivity")
_SIZE_COLUMNS = ("num_rois", "N", "n_rois")


def fcn_column(subjects: pd.DataFrame) -> str | None:
    return next((c for c in _FCN_COLUMNS if c in subjects.columns), None)


def _decode_oracle(subjects: pd.DataFrame) -> dict[str, np.ndarray]:
    """``oracle_<key>`` columns -> arrays (scalar columns `(S,)`, list columns `(S, C)` with NaN rows where missing)."""
    oracle = {}
    for column in subjects.columns:
        if not column.startswith(ORACLE_PREFIX):
            continue
        values = subjects[column].tolist()
        width = next((len(v) for v in values if isinstance(v, (list, tuple, np.ndarray))), None)
        if width is None:
            oracle[column[len(ORACLE_PREFIX):]] = pd.to_numeric(subjects[column], errors="coerce").to_numpy(float)
        else:
            oracle[column[len(ORACLE_PREFIX):]] = np.stack([
                np.asarray(v, dtype=float) if isinstance(v, (list, tuple, np.ndarray)) else np.full(width, np.nan)
                for v in values])
    return oracle


def _as_list(value) -> list:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return [value]
        return parsed if isinstance(parsed, list) else [parsed]
    return list(value)


def load_evaluation_data(data_dir: str | Path) -> EvaluationData:
    """Read the subjects (all splits) and the zero-shot instructions of an instruction-set folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetFormatError(f"{data_dir} is not a folder; give the folder build_instructions.py wrote.")
    subject_configs, instruction_configs = load_instruction_set(data_dir)
    subject_splits = {split: ds.to_pandas() for split, ds in subject_configs.items()}
    for split in (TRAIN_SPLIT, ZERO_SHOT_SPLIT):
        if split not in subject_splits:
            raise DatasetFormatError(f"{data_dir}: config {SUBJECTS_CONFIG!r} has no {split!r} split "
                                     f"(found {sorted(subject_splits)}).")
    frames = []
    for split, frame in subject_splits.items():
        _require_columns(frame, SUBJECT_COLUMNS, f"{data_dir}: config {SUBJECTS_CONFIG!r}, split {split!r},")
        frames.append(frame.assign(split=split))
    subjects = pd.concat(frames, ignore_index=True)
    repeated = subjects["subject_id"][subjects["subject_id"].duplicated()].tolist()
    if repeated:
        raise DatasetFormatError(f"{data_dir}: subject id(s) {repeated[:5]} appear in more than one row/split.")
    fcns = _decode_fcns(subjects, f"{data_dir}: config {SUBJECTS_CONFIG!r}")

    instruction_splits = {split: ds.to_pandas() for split, ds in instruction_configs.items()}
    if ZERO_SHOT_SPLIT not in instruction_splits:
        raise DatasetFormatError(f"{data_dir}: config {INSTRUCTIONS_CONFIG!r} has no {ZERO_SHOT_SPLIT!r} split "
                                 f"(found {sorted(instruction_splits)}).")
    instructions = instruction_splits[ZERO_SHOT_SPLIT].reset_index(drop=True)
    _require_columns(instructions, INSTRUCTION_COLUMNS,
                     f"{data_dir}: config {INSTRUCTIONS_CONFIG!r}, split {ZERO_SHOT_SPLIT!r},")
    instructions["subject_ids"] = [[str(s) for s in _as_list(v)] for v in instructions["subject_ids"]]
    instructions["messages"] = [_as_list(m) for m in instructions["messages"]]
    oracle = _decode_oracle(subjects)
    subjects = subjects.drop(columns=[c for c in subjects.columns if c.startswith(ORACLE_PREFIX)])
    return EvaluationData(subjects=subjects, fcns=fcns, instructions=instructions, oracle=oracle,
                          seen_thresholds=named_thresholds(instruction_splits.get(TRAIN_SPLIT)))


def named_thresholds(instructions: pd.DataFrame | None) -> dict[str, set[float]]:
    """attribute key -> the distinct thresholds its judgments in `instructions` name (none without the column)."""
    if instructions is None or "threshold" not in instructions.columns:
        return {}
    named = instructions[(instructions["paradigm"] == "judgment") & instructions["threshold"].notna()]
    return {key: set(group["threshold"].astype(float)) for key, group in named.groupby("attribute")}


def in_domain_split(data: EvaluationData, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot subject rows split into (in-domain training `fraction`, evaluation rest), per dataset."""
    rng = np.random.default_rng(seed)
    train, rest = [], []
    zs = data.subjects.iloc[data.split_rows(ZERO_SHOT_SPLIT)]
    for _, group in zs.groupby("dataset", sort=True):
        rows = rng.permutation(group.index.to_numpy())
        k = int(round(fraction * len(rows)))
        train.append(rows[:k])
        rest.append(rows[k:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(rest)).astype(np.int64)
