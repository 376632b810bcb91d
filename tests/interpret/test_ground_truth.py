"""Ground truth rebuilt from the simulator's effects, and the map metrics."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from datasets_scripts.simulate import YEO7
from interpret.ground_truth import edge_auc, evaluate_map, ground_truth_table, planted_effect


def test_planted_edges_are_the_planted_network_blocks():
    truth = planted_effect("adhd", "schaefer100-7")
    net = truth.assignment
    i, j = np.triu_indices(100, 1)
    names = {(YEO7[a], YEO7[b]) for a, b in zip(net[i], net[j])}
    assert ("DorsAttn", "Default") in names
    expected = {frozenset(p[:2]) for p in truth.pairs}
    planted = truth.edge_mask[i, j]
    got = {frozenset((YEO7[net[a]], YEO7[net[b]])) for a, b in zip(i[planted], j[planted])}
    assert got == expected and truth.primary_pair == ("Default", "DorsAttn")
    assert not truth.edge_mask.diagonal().any() and (truth.edge_mask == truth.edge_mask.T).all()


def test_attribute_without_effect_has_no_planted_edges():
    truth = planted_effect("handedness", "schaefer100-7")
    assert not truth.has_effect and not truth.edge_mask.any()


def test_non_simulator_atlas_is_refused():
    with pytest.raises(ValueError, match="Schaefer"):
        planted_effect("adhd", "aal116")


def test_edge_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)
    labels = rng.random(300) < 0.3
    assert edge_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(edge_auc(scores, np.zeros(300, bool)))


def test_a_map_on_the_planted_blocks_scores_perfectly():
    truth = planted_effect("depression", "schaefer100-7")
    rng = np.random.default_rng(1)
    noise = np.abs(rng.normal(0, 0.1, (100, 100)))
    importance = noise + noise.T + 2.0 * np.abs(truth.edge_weight)
    row = evaluate_map(importance, truth)
    assert row["planted_edge_auc"] == pytest.approx(1.0)
    assert row["planted_pair_rank"] == 1 and row["primary_pair_rank"] == 1
    assert row["num_pairs"] == 28 and row["top_pair_z"] > 2
    random_row = evaluate_map(noise + noise.T, truth)
    assert 0.3 < random_row["planted_edge_auc"] < 0.7
    assert "| depression |" in ground_truth_table([row])


def test_pair_importance_given_as_a_network_matrix():
    truth = planted_effect("depression", "schaefer100-7")
    pair = np.zeros((7, 7))
    a, b = (truth.primary_pair[0], truth.primary_pair[1])
    from datasets_scripts.simulate import YEO7
    pair[YEO7.index(a), YEO7.index(b)] = pair[YEO7.index(b), YEO7.index(a)] = 1.0
    row = evaluate_map(np.ones((100, 100)), truth, pair_importance=pair)
    assert row["primary_pair_rank"] == 1 and row["planted_edge_auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"pair_importance must be \(7, 7\)"):
        evaluate_map(np.ones((100, 100)), truth, pair_importance=np.zeros((3, 3)))


def test_no_effect_attribute_reports_the_spread():
    row = evaluate_map(np.ones((100, 100)), planted_effect("ocd", "schaefer100-7"))
    assert not row["has_effect"] and "planted_edge_auc" not in row
    assert row["top_pair_z"] == 0.0 and row["coefficient_of_variation"] == 0.0


def test_table_shows_the_pattern_and_the_gradient_numbers():
    truth = planted_effect("depression", "schaefer100-7")
    pattern = evaluate_map(2.0 * np.abs(truth.edge_weight) + 0.01, truth)
    gradient = evaluate_map(np.ones((100, 100)), truth)
    row = {**pattern, "map": "activation pattern", "top_pair_p_fwe": 0.004975, "pattern_subjects": 200,
           "pair_rank_by_block_mean": 2, "gradient": {**gradient, "subjects": 24}}
    table = ground_truth_table([row])
    header, _, line = table.splitlines()
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")]))
    assert cells["edge AUC: pattern / gradient"] == "1.000 / 0.500"
    assert cells["top-pair p (FWE)"] == "0.005" and cells["subjects: pattern / gradient"] == "200 / 24"
    assert cells["planted-pair rank: pattern z / block mean"].startswith("1 / 2")


def test_no_effect_row_shows_the_family_wise_p():
    truth = planted_effect("ocd", "schaefer100-7")
    row = {**evaluate_map(np.ones((100, 100)), truth), "top_pair_p_fwe": 0.4, "gradient": evaluate_map(
        np.ones((100, 100)), truth)}
    assert "| ocd | none | - / - |" in ground_truth_table([row]) and "0.400" in ground_truth_table([row])
