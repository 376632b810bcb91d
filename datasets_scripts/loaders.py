"""Real-cohort loaders, one import away. Each returns a `SubjectTable` (FCNs `(S, N, N)` + metadata).

- (a) `load_timeseries_folder`: ROI time-series files (``.1D/.csv/.tsv/.npy/.txt``) + a phenotype
  table, with the ready mappings ``"abide1"`` (ABIDE I preprocessed) and ``"adhd200"`` (ADHD-200) or
  your own `PhenotypeMapping` / dict / JSON file;
- (b) `load_braingb`: BrainGB / Brain Network Transformer ``.npy`` dicts (pickled: trusted files
  only, ``allow_pickle=True``) or the same keys in a ``.npz``;
- (c) `load_fcn_stack`: an ``(S, N, N)`` ``.npy`` or an ``.npz`` (``fcns``, ``subject_ids``) + a CSV;
  `load_hcp_individuals` runs the 24 real HCP FCNs brainspace ships through it.

Every loader records what it skipped in ``table.info``: ``excluded`` (``{site: {reason: count}}``),
``excluded_subjects``, ``unmatched`` (files / FCNs without phenotype rows and rows without data) and
``counts``. Example (nilearn's ABIDE download)::

    from datasets_scripts.loaders import load_timeseries_folder
    table = load_timeseries_folder("ABIDE_pcp/cpac/filt_noglobal/rois_cc200",
                                   "ABIDE_pcp/Phenotypic_V1_0b_preprocessed1.csv", "abide1",
                                   atlas="cc200", num_rois=200, pattern="*_rois_cc200.1D")
"""

from .load_braingb import load_braingb, read_braingb
from .load_fcn_stack import fcn_stack_to_table, load_fcn_stack, load_hcp_individuals, read_fcn_stack
from .load_timeseries_folder import load_timeseries_folder, read_time_series
from .phenotype_mappings import ABIDE_I, ADHD_200, MAPPINGS, ColumnMapping, PhenotypeMapping, load_mapping

__all__ = [
    "ABIDE_I",
    "ADHD_200",
    "MAPPINGS",
    "ColumnMapping",
    "PhenotypeMapping",
    "fcn_stack_to_table",
    "load_braingb",
    "load_fcn_stack",
    "load_hcp_individuals",
    "load_mapping",
    "load_timeseries_folder",
    "read_braingb",
    "read_fcn_stack",
    "read_time_series",
]
