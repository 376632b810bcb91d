"""Cohort maps and per-network-pair effect sizes."""

import numpy as np
import pytest

from fcn_llm.interpret.attribution import GraphAttribution, network_block_total, summarise
from fcn_llm.interpret.cohort import cohort_map, permutation_z, top_edges
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


def test_block_total_sums_each_distinct_edge_once():
    edges = np.zeros((12, 12))
    edges[0, 1] = edges[1, 0] = 1.0  # an edge within network 0
    edges[0, 5] = edges[5, 0] = 2.0  # an edge between networks 0 and 1
    total = network_block_total(edges, NETWORKS)
    assert total[0, 0] == pytest.approx(1.0) and total[0, 1] == total[1, 0] == pytest.approx(2.0)
    assert total.sum() - np.trace(total) == pytest.approx(4.0)  # off-diagonal blocks appear twice


def test_block_totals_do_not_favour_small_networks():
    """A model reading block means gives each edge 1/(pairs) of the block's gradient: per-edge means
    favour the smallest network, block totals of the signed attributions do not."""
    rng = np.random.default_rng(0)
    assignment = np.array([0] * 3 + [1] * 9)  # network 0: 3 pairs, network 1: 36 pairs
    one_hot = np.eye(2)[assignment]
    pairs = one_hot.T @ (1 - np.eye(12)) @ one_hot
    attributions = []
    for _ in range(20):
        delta = rng.normal(size=(12, 12))
        delta = delta + delta.T
        grad = np.array([[0.0, 0.0], [0.0, 3.0]]) / pairs  # only network 1's block mean matters
        edges = (one_hot @ grad @ one_hot.T) * delta
        np.fill_diagonal(edges, 0.0)
        attributions.append(GraphAttribution(edges=edges, **summarise(edges, assignment), roi_attention=None,
                                             margin=0.0, reference_margin=None, subject_id="s"))
    cmap = cohort_map(attributions, assignment)
    assert cmap.network_abs_total[1, 1] > cmap.network_abs_total[0, 0]


def test_permutation_z_is_size_neutral():
    """Noise everywhere (more edges, larger totals, in the big network) and a real shift in one small
    block: raw totals rank the big network first, the permutation z the shifted block."""
    rng = np.random.default_rng(0)
    assignment = np.array([0] * 3 + [1] * 3 + [2] * 30)  # blocks of 3, 3 and 435 edges
    maps = []
    for _ in range(16):
        edges = rng.normal(size=(36, 36))
        edges = edges + edges.T
        edges[np.ix_(assignment == 0, assignment == 1)] += 1.5
        edges[np.ix_(assignment == 1, assignment == 0)] += 1.5
        np.fill_diagonal(edges, 0.0)
        maps.append(edges)
    maps = np.stack(maps)
    z = permutation_z(maps, assignment, permutations=200, seed=0)
    totals = np.abs(np.stack([network_block_total(e, assignment) for e in maps])).mean(0)
    assert np.unravel_index(totals.argmax(), totals.shape) == (2, 2)
    assert np.unravel_index(z.argmax(), z.shape) in {(0, 1), (1, 0)} and z[0, 1] > 3
    noise = rng.normal(size=maps.shape)
    null = permutation_z(noise + noise.transpose(0, 2, 1), assignment, permutations=100, seed=1)
    assert np.abs(null).max() < 4  # no block stands out in noise
