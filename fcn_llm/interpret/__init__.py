"""Biomarker maps of FCN-LLM answers: which FCN edges, ROIs and subnetworks drive an answer.

- `questions`: the question explained and the answer whose log-likelihood margin is attributed;
- `attribution`: gradient x input / integrated gradients w.r.t. the FCN edges, ROI and network-pair
  summaries, the encoder's ROI attention (one map per graph of a comparative question);
- `cohort`: maps averaged over subjects with per-network-pair effect sizes;
- `pattern`: the forward-model activation pattern of the answers over a cohort (edge-margin
  correlation, Haufe et al. 2014) with a margin-shuffle permutation null per network pair;
- `ground_truth`: planted-edge AUC and planted-pair rank against the simulator's effects;
- `plots` / `report`: PNG figures and a self-contained HTML report;
- `runner` / `__main__`: ``python -m fcn_llm.interpret explain|ground-truth``.
"""

from .attribution import (
    AnswerMargin,
    AtlasMismatchError,
    GraphAttribution,
    attribute_question,
    network_block_mean,
    network_block_total,
    reference_fcn,
    summarise,
)
from .cohort import CohortMap, cohort_map, top_edges
from .ground_truth import edge_auc, evaluate_map, planted_effect
from .pattern import ActivationPattern, activation_pattern, model_pattern
from .questions import AttributeNotAllowedError, AttributionQuestion, check_attribute, make_question

__all__ = [
    "ActivationPattern", "activation_pattern", "model_pattern", "AnswerMargin", "AtlasMismatchError", "AttributeNotAllowedError", "AttributionQuestion", "CohortMap",
    "GraphAttribution", "attribute_question", "check_attribute", "cohort_map", "edge_auc", "evaluate_map",
    "make_question", "network_block_mean", "network_block_total", "planted_effect", "reference_fcn", "summarise", "top_edges",
]
