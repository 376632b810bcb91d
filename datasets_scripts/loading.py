"""Load an instruction set (a folder written by `build_instructions.py`, or a Hub dataset) with `datasets.load_dataset`, safely.

datasets 5.2 names its cache of a local folder after the folder's basename, the config and the
data-file patterns, not the files' contents: two different folders called `data/` (the default of
every run) share one cache entry, and the second silently reads the first's rows (seen here: a
1,200-subject set read back as an 80-subject one); even `download_mode="force_redownload"` then
casts to the stale cached schema. Local folders are therefore read into memory through a fresh,
throw-away cache (about a second for the default set); Hub ids cache as usual.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

SUBJECTS_CONFIG, INSTRUCTIONS_CONFIG = "subjects", "instructions"


class DatasetFormatError(ValueError):
    """The dataset folder lacks a config, split or column the code needs, or stores an FCN of no N x N shape."""


def load_config(path_or_repo: str | Path, name: str) -> datasets.DatasetDict:
    """`datasets.load_dataset(path_or_repo, name)`, never reading a local folder from a stale cache."""
    import datasets

    if not Path(path_or_repo).is_dir():
        return datasets.load_dataset(str(path_or_repo), name)
    with tempfile.TemporaryDirectory(prefix="fcn-llm-datasets-") as cache_dir:
        return datasets.load_dataset(str(path_or_repo), name, cache_dir=cache_dir, keep_in_memory=True)


def _folder_configs(folder: Path) -> list[str]:
    import datasets

    try:
        return list(datasets.get_dataset_config_names(str(folder)))
    except Exception:  # noqa: BLE001 - any failure means: no readable configs
        return []


def load_instruction_set(path_or_repo: str | Path) -> tuple[datasets.DatasetDict, datasets.DatasetDict]:
    """The `subjects` and `instructions` configs of an instruction set (all splits of each).

    A local folder without one of them raises DatasetFormatError naming the missing config and those found.
    """
    if Path(path_or_repo).is_dir():
        configs = _folder_configs(Path(path_or_repo))
        for name in (SUBJECTS_CONFIG, INSTRUCTIONS_CONFIG):
            if name not in configs:
                raise DatasetFormatError(
                    f"{path_or_repo}: the dataset has no {name!r} config (found: {configs or 'none'}); expected the "
                    f"configs {[SUBJECTS_CONFIG, INSTRUCTIONS_CONFIG]} written by datasets_scripts/build_instructions.py."
                )
    return load_config(path_or_repo, SUBJECTS_CONFIG), load_config(path_or_repo, INSTRUCTIONS_CONFIG)
