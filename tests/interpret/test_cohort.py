"""Cohort maps and per-network-pair effect sizes."""

import numpy as np
import pytest

from interpret.attribution import GraphAttribution, summarise
from interpret.cohort import cohort_map, top_edges
from tests.conftest import NETWORKS


def _attr(edges, margin=0.0):
    return GraphAttribution(edges=edges, **summarise(edges, NETWORKS), roi_attention=np.full(12, 1 / 12),
                            margin=margin, reference_margin=None, subject_id="s")


def _sym(rng, shift=0.0):
    a = rng.normal(0, 0.1, (12, 12))
    a = a + a.T
    a[0, 5] += shift
    a[5, 0] += shift
    np.fill_diagonal(a, 0)
    return a


def test_contrast_and_effect_sizes_find_the_shifted_block():
    rng = np.random.default_rng(0)
    pos = [_attr(_sym(rng, 2.0)) for _ in range(10)]
    neg = [_attr(_sym(rng, -2.0)) for _ in range(10)]
    cmap = cohort_map(pos + neg, NETWORKS, labels=[1] * 10 + [0] * 10)
    assert cmap.num_subjects == 20 and cmap.mean.shape == (12, 12)
    assert abs(cmap.mean[0, 5]) < 0.5 and cmap.contrast[0, 5] == pytest.approx(4.0, abs=0.2)
    assert cmap.mean_abs[0, 5] > 1.5
    d = np.abs(cmap.network_contrast_effect)
    assert np.unravel_index(d.argmax(), d.shape) in {(0, 1), (1, 0)}
    assert cmap.roi_attention.shape == (12,)
    assert top_edges(cmap.contrast, [f"r{i}" for i in range(12)], 1)[0]["roi_a"] == "r0"


def test_without_labels_no_contrast_and_effect_against_zero():
    rng = np.random.default_rng(1)
    cmap = cohort_map([_attr(_sym(rng, 1.0)) for _ in range(8)], NETWORKS)
    assert cmap.contrast is None and cmap.network_contrast_effect is None
    assert cmap.network_effect[0, 1] > 1.0


def test_empty_cohort_is_an_error():
    with pytest.raises(ValueError, match="at least one subject"):
        cohort_map([], NETWORKS)
