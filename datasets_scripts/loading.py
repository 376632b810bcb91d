"""Load a config of an instruction-set folder (or Hub dataset) with `datasets.load_dataset`, safely.

datasets 5.2 names its cache of a local folder after the folder's basename, the config and the
data-file patterns, not the files' contents: two different folders called `data/` (the default of
every run) share one cache entry, and the second silently reads the first's rows (seen here: a
1,200-subject set read back as an 80-subject one). Local folders are therefore always re-read
(`download_mode="force_redownload"`, about a second for the default set) without checking split
sizes against the stale cached record; Hub ids cache as usual.
"""

from __future__ import annotations

from pathlib import Path

import datasets


def load_config(path_or_repo: str | Path, name: str) -> datasets.DatasetDict:
    """`datasets.load_dataset(path_or_repo, name)`, re-reading local folders instead of trusting the cache."""
    if not Path(path_or_repo).is_dir():
        return datasets.load_dataset(str(path_or_repo), name)
    return datasets.load_dataset(
        str(path_or_repo), name, download_mode=datasets.DownloadMode.FORCE_REDOWNLOAD,
        verification_mode=datasets.VerificationMode.NO_CHECKS,
    )
