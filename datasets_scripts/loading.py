"""Load a config of an instruction-set folder (or Hub dataset) with `datasets.load_dataset`, safely.

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

import datasets


def load_config(path_or_repo: str | Path, name: str) -> datasets.DatasetDict:
    """`datasets.load_dataset(path_or_repo, name)`, never reading a local folder from a stale cache."""
    if not Path(path_or_repo).is_dir():
        return datasets.load_dataset(str(path_or_repo), name)
    with tempfile.TemporaryDirectory(prefix="fcn-llm-datasets-") as cache_dir:
        return datasets.load_dataset(str(path_or_repo), name, cache_dir=cache_dir, keep_in_memory=True)
