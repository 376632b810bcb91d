"""Attribution of answer margins to FCN edges (tiny random models, milliseconds each)."""

import numpy as np
import pytest
import torch

from fcn_llm.scoring import choice_log_likelihoods
from fcn_llm.interpret.attribution import (
    AnswerMargin, AtlasMismatchError, attribute_question, completeness_gap, network_block_mean, reference_fcn,
)
from fcn_llm.interpret.questions import check_attribute, make_question
from tests.conftest import NETWORKS, random_fcns

from .conftest import tiny_pair


def _prompt(processor, question):
    return processor.apply_chat_template(list(question.messages), add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("attribute_evidence", [False, True])
@pytest.mark.parametrize("paradigm", ["judgment", "predictive", "comparative"])
def test_margin_matches_the_evaluation_scoring(paradigm, attribute_evidence):
    model, processor = tiny_pair(attribute_evidence=attribute_evidence)
    q = make_question(check_attribute("adhd"), paradigm)
    fcns = list(random_fcns(q.num_graphs, seed=3))
    margin_fn = AnswerMargin(model, processor, q, "full")
    x = torch.from_numpy(np.stack(processor.prepare_fcns(fcns)))
    with torch.no_grad():
        margin, attention = margin_fn(x.unsqueeze(0))
    ll = choice_log_likelihoods(model, processor, [_prompt(processor, q)], [fcns], list(q.choices))[0]
    assert margin.item() == pytest.approx(ll[0] - ll[1], abs=1e-4)
    assert attention.shape == (1, q.num_graphs, model.config.encoder_config.num_roi_tokens, 12)


def test_first_token_mode_scores_one_token(pair):
    model, processor = pair
    q = make_question(check_attribute("adhd"))
    fcns = list(random_fcns(1, seed=4))
    x = torch.from_numpy(np.stack(processor.prepare_fcns(fcns))).unsqueeze(0)
    with torch.no_grad():
        first = AnswerMargin(model, processor, q, "first")(x)[0].item()
    ll = choice_log_likelihoods(model, processor, [_prompt(processor, q)], [fcns], list(q.choices),
                                append_end_of_turn=False)[0]
    assert first == pytest.approx(ll[0] - ll[1], abs=1e-4)  # "Yes"/"No" are single tokens here


def test_map_shapes_symmetry_and_summaries(pair):
    model, processor = pair
    q = make_question(check_attribute("adhd"))
    fcns = random_fcns(5)
    (res,) = attribute_question(model, processor, q, [fcns[0]], reference=reference_fcn(processor, fcns))
    assert res.edges.shape == (12, 12) and np.allclose(res.edges, res.edges.T)
    assert np.all(np.diag(res.edges) == 0) and np.abs(res.edges).sum() > 0
    assert res.roi.sum() == pytest.approx(res.total)
    assert res.network.shape == (3, 3) and res.roi_attention.shape == (12,)
    assert res.roi_attention.sum() == pytest.approx(1.0, abs=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_comparative_question_gives_one_map_per_graph(pair):
    model, processor = pair
    q = make_question(check_attribute("adhd"), "comparative")
    fcns = random_fcns(4, seed=1)
    maps = attribute_question(model, processor, q, [fcns[0], fcns[1]], reference=reference_fcn(processor, fcns),
                              subject_ids=["s1", "s2"])
    assert [m.graph_index for m in maps] == [0, 1] and [m.subject_id for m in maps] == ["s1", "s2"]
    assert not np.allclose(maps[0].edges, maps[1].edges)
    with pytest.raises(ValueError, match="takes 2 FCN"):
        attribute_question(model, processor, q, [fcns[0]])


def test_subject_of_another_atlas_names_both_sizes(pair):
    model, processor = pair
    q = make_question(check_attribute("adhd"))
    with pytest.raises(AtlasMismatchError, match=r"subject 'x1' has an FCN of N=10 ROIs .* expects N=12 ROIs"):
        attribute_question(model, processor, q, [random_fcns(1, num_rois=10)[0]], subject_ids=["x1"])


def test_unknown_method(pair):
    model, processor = pair
    with pytest.raises(ValueError, match="grad_x_input"):
        attribute_question(model, processor, make_question(check_attribute("adhd")), [random_fcns(1)[0]], method="lrp")


def test_integrated_gradients_completeness_without_edge_selection():
    # edge_density=1 keeps every edge, so f is smooth along the path and IG must add up to f(x) - f(x').
    model, processor = tiny_pair(edge_density=1.0)
    q = make_question(check_attribute("adhd"))
    fcns = random_fcns(6, seed=2)
    res = attribute_question(model, processor, q, [fcns[0]], reference=reference_fcn(processor, fcns[1:]),
                             method="integrated_gradients", steps=64, batch_size=32)
    change = res[0].margin - res[0].reference_margin
    assert abs(change) > 1e-5
    assert abs(completeness_gap(res)) < 0.05 * abs(change) + 1e-6


def test_network_block_mean_averages_distinct_edges():
    edges = np.zeros((12, 12))
    edges[0, 1] = edges[1, 0] = 6.0  # within network 0 (4 ROIs: 6 distinct edges)
    edges[0, 5] = edges[5, 0] = 20.0  # between networks 0 and 1 (4 x 5 = 20 edges)
    block = network_block_mean(edges, NETWORKS)
    assert block[0, 0] == pytest.approx(1.0) and block[0, 1] == block[1, 0] == pytest.approx(1.0)
    assert block[2, 2] == 0.0
