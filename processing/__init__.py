"""Turning raw inputs (ROI time series, FCNs, prompts) into FCN-LLM inputs."""

from .atlases import Atlas, available_atlases, load_atlas, read_atlas_table
from .connectivity import compute_fcn, compute_fcns, validate_fcn, validate_time_series
from .processing_fcnllm import DEFAULT_CHAT_TEMPLATE, FCNProcessor, normalize_fcn, prepare_fcn_stack

FCNProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "Atlas",
    "DEFAULT_CHAT_TEMPLATE",
    "FCNProcessor",
    "available_atlases",
    "compute_fcn",
    "compute_fcns",
    "load_atlas",
    "normalize_fcn",
    "prepare_fcn_stack",
    "read_atlas_table",
    "validate_fcn",
    "validate_time_series",
]
