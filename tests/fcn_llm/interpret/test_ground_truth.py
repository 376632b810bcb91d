"""Ground truth read from the dataset folder, and the map metrics."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from datasets_scripts.effects import YEO7
from fcn_llm.interpret.ground_truth import MissingTruthError, edge_auc, evaluate_map, ground_truth_table, planted_effect

from .conftest import write_planted_truth


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_planted_truth(tmp_path_factory.mktemp("truth100"))


def test_block_edges_are_the_planted_network_blocks(folder):
    truth = planted_effect("adhd", folder)
    net = truth.assignment
    i, j = np.triu_indices(100, 1)
    block = truth.components["blocks"][i, j] != 0
    got = {frozenset((YEO7[net[a]], YEO7[net[b]])) for a, b in zip(i[block], j[block])}
    assert got == {frozenset(p[:2]) for p in truth.pairs} and truth.primary_pair == ("Default", "DorsAttn")
    assert not truth.edge_mask.diagonal().any() and (truth.edge_mask == truth.edge_mask.T).all()


def test_roi_edges_are_the_region_rows_to_its_target_networks(folder):
    truth = planted_effect("depression", folder)
    roi = truth.components["roi"] != 0
    region = next(r for r in truth.regions if r["region"] == "7Networks_LH_Limbic_OFC_1")
    row = roi[region["roi"]]
    targets = {YEO7.index(t) for t in region["targets"]}
    assert row.any() and set(truth.assignment[row]) == targets
    # a ROI-level effect lives on few edges: far fewer than a block's
    assert roi[np.triu_indices(100, 1)].sum() < 0.25 * (truth.components["blocks"] != 0)[np.triu_indices(100, 1)].sum()
    assert truth.edge_mask[roi].all()  # planted edges include the ROI level


def test_whole_brain_components_are_recorded_but_not_planted_edges(folder):
    truth = planted_effect("sex", folder)
    dist = truth.components["whole_brain"]
    assert (dist[np.triu_indices(100, 1)] != 0).mean() > 0.9  # the distributed pattern touches every edge
    assert not np.array_equal(truth.edge_mask, dist != 0)


def test_attribute_without_effect_has_no_planted_edges(folder):
    truth = planted_effect("handedness", folder)
    assert not truth.has_effect and not truth.edge_mask.any() and truth.components == {}


def test_folder_without_truth_is_a_clear_error(tmp_path):
    with pytest.raises(MissingTruthError, match=r"has no recorded planted effects"):
        planted_effect("adhd", tmp_path)


def test_edge_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=300), 1)
    labels = rng.random(300) < 0.3
    assert edge_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(edge_auc(scores, np.zeros(300, bool)))


def test_a_map_on_the_planted_edges_scores_perfectly(folder):
    truth = planted_effect("depression", folder)
    rng = np.random.default_rng(1)
    noise = np.abs(rng.normal(0, 0.001, (100, 100)))
    importance = noise + noise.T + 2.0 * truth.edge_mask
    row = evaluate_map(importance, truth)
    assert row["planted_edge_auc"] == pytest.approx(1.0) and row["roi_edge_auc"] > 0.9
    assert row["planted_regions"] == ["7Networks_LH_Limbic_OFC_1", "7Networks_RH_Default_PFCv_1"]
    assert row["num_pairs"] == 28 and row["top_pair_z"] > 2
    random_row = evaluate_map(noise + noise.T, truth)
    assert 0.3 < random_row["planted_edge_auc"] < 0.7
    assert "| depression |" in ground_truth_table([row])


def test_pair_importance_given_as_a_network_matrix(folder):
    truth = planted_effect("depression", folder)
    pair = np.zeros((7, 7))
    a, b = truth.primary_pair
    pair[YEO7.index(a), YEO7.index(b)] = pair[YEO7.index(b), YEO7.index(a)] = 1.0
    row = evaluate_map(np.ones((100, 100)), truth, pair_importance=pair)
    assert row["primary_pair_rank"] == 1 and row["planted_edge_auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"pair_importance must be \(7, 7\)"):
        evaluate_map(np.ones((100, 100)), truth, pair_importance=np.zeros((3, 3)))


def test_no_effect_attribute_reports_the_spread(folder):
    row = evaluate_map(np.ones((100, 100)), planted_effect("ocd", folder))
    assert not row["has_effect"] and "planted_edge_auc" not in row
    assert row["top_pair_z"] == 0.0 and row["coefficient_of_variation"] == 0.0


def test_table_shows_the_pattern_and_the_gradient_numbers(folder):
    truth = planted_effect("depression", folder)
    pattern = evaluate_map(2.0 * truth.edge_mask + 0.01, truth)
    gradient = evaluate_map(np.ones((100, 100)), truth)
    row = {**pattern, "map": "activation pattern", "top_pair_p_fwe": 0.004975, "pattern_subjects": 200,
           "pair_rank_by_block_mean": 2, "gradient": {**gradient, "subjects": 24}}
    table = ground_truth_table([row])
    header, _, line = table.splitlines()
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")]))
    assert cells["edge AUC: pattern / gradient"] == "1.000 / 0.500"
    assert cells["top-pair p (FWE)"] == "0.005" and cells["subjects: pattern / gradient"] == "200 / 24"
    assert cells["planted-pair rank: pattern z / block mean"].startswith("1 / 2")


def test_no_effect_row_shows_the_family_wise_p(folder):
    truth = planted_effect("ocd", folder)
    row = {**evaluate_map(np.ones((100, 100)), truth), "top_pair_p_fwe": 0.4, "gradient": evaluate_map(
        np.ones((100, 100)), truth)}
    assert "| ocd | none | - / - |" in ground_truth_table([row]) and "0.400" in ground_truth_table([row])
