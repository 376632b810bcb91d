"""Forward-model (Haufe) activation patterns of answer margins: synthetic readers and tiny random models."""

import numpy as np
import pandas as pd
import pytest
import torch

from fcn_llm.interpret.attribution import AnswerMargin, network_block_mean
from fcn_llm.interpret.ground_truth import edge_auc
from fcn_llm.interpret.pattern import (
    ConstantMarginsError, activation_pattern, answer_margins, correlation_pattern, model_pattern,
)
from fcn_llm.interpret.questions import check_attribute, make_question
from tests.conftest import NETWORKS, random_fcns

PLANTED = (0, 1)  # networks 0 (4 ROIs) and 1 (5 ROIs): 20 edges
SMALL = (2, 2)  # network 2's 3 within-network edges
PAIRS = [(a, b) for a in range(3) for b in range(a, 3)]


def _cohort(num_subjects: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """FCN-like maps `(S, 12, 12)`: edge noise, a global signal g_s on every edge, and a subject factor c_s on
    the planted block's edges; and the planted edges `(12, 12)`."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(num_subjects, 12, 12))
    x = (noise + noise.transpose(0, 2, 1)) / np.sqrt(2) + rng.normal(size=(num_subjects, 1, 1))
    net = np.asarray(NETWORKS)
    mask = ((net[:, None] == PLANTED[0]) & (net[None] == PLANTED[1])) | (
        (net[:, None] == PLANTED[1]) & (net[None] == PLANTED[0]))
    x = x + rng.normal(size=num_subjects)[:, None, None] * mask
    x[:, np.arange(12), np.arange(12)] = 0.0
    return x, mask


def _block_reader(x: torch.Tensor) -> torch.Tensor:
    """A model-like margin `(S,)` that reads network-level block means: the planted block's mean edge minus the
    average of the other five blocks' means (which cancels the global signal, as a decoder learns to)."""
    net = torch.tensor(NETWORKS)

    def block_mean(a, b):
        sel = ((net[:, None] == a) & (net[None] == b)) & ~torch.eye(12, dtype=torch.bool)
        return (x * sel).sum((-1, -2)) / sel.sum()

    return block_mean(*PLANTED) - sum(block_mean(*p) for p in PAIRS if p != PLANTED) / 5


def test_pattern_finds_the_planted_block_where_the_gradient_favours_a_small_one():
    x, mask = _cohort(200)
    xt = torch.tensor(x, requires_grad=True)
    margins = _block_reader(xt)
    (grad,) = torch.autograd.grad(margins.sum(), xt)
    gradient = (grad + grad.transpose(1, 2)).abs().mean(0).numpy()  # symmetrised per-edge |gradient|
    pattern = activation_pattern(x, margins.detach().numpy(), NETWORKS, permutations=200)
    iu = np.triu_indices(12, 1)
    pattern_auc, gradient_auc = edge_auc(np.abs(pattern.correlation)[iu], mask[iu]), edge_auc(gradient[iu], mask[iu])
    assert pattern_auc > 0.95 and gradient_auc < pattern_auc
    per_edge = network_block_mean(gradient, NETWORKS)  # a planted edge's gradient is 1/20, a small-block edge's 1/15
    assert max(PAIRS, key=lambda p: per_edge[p]) == SMALL
    top3 = np.argsort(-gradient[iu])[:3]
    assert all(NETWORKS[iu[0][e]] == NETWORKS[iu[1][e]] == 2 for e in top3)  # the gradient's top edges: the small block
    top20 = np.argsort(-np.abs(pattern.correlation)[iu])[:20]
    assert mask[iu][top20].all()  # the pattern's: the planted block
    assert pattern.top_pair == PLANTED and pattern.top_pair_p_fwe < 0.01
    assert pattern.network_z[PLANTED] == pattern.network_z.max() > 3
    assert pattern.network[PLANTED] == pytest.approx(network_block_mean(pattern.correlation, NETWORKS)[PLANTED])


def test_pattern_shapes_symmetry_and_covariance():
    x, _ = _cohort(30, seed=1)
    margins = np.random.default_rng(2).normal(size=30)
    pattern = activation_pattern(x, margins, NETWORKS, permutations=20, subject_ids=[f"s{i}" for i in range(30)])
    for name in ("correlation", "covariance"):
        value = getattr(pattern, name)
        assert value.shape == (12, 12) and np.allclose(value, value.T) and np.all(np.diag(value) == 0)
    assert pattern.network.shape == pattern.network_z.shape == pattern.network_p.shape == (3, 3)
    assert np.allclose(pattern.network_abs, np.abs(pattern.network))
    assert pattern.num_subjects == 30 and pattern.permutations == 20 and pattern.subject_ids[0] == "s0"
    i, j = 0, 7
    assert pattern.covariance[i, j] == pytest.approx(np.cov(x[:, i, j], margins)[0, 1])
    assert pattern.correlation[i, j] == pytest.approx(np.corrcoef(x[:, i, j], margins)[0, 1])
    assert 0 < pattern.top_pair_p_fwe <= 1 and np.all(pattern.network_p_fwe >= pattern.network_p - 1e-12)


def test_permutation_null_is_calibrated_for_margins_independent_of_the_fcns():
    rejections = 0
    for seed in range(40):
        x, _ = _cohort(60, seed=seed)
        margins = np.random.default_rng(1000 + seed).normal(size=60)
        pattern = activation_pattern(x, margins, NETWORKS, permutations=100, seed=seed)
        rejections += pattern.top_pair_p_fwe < 0.05
    assert rejections <= 6  # 5 % expected: 2 of 40


def test_too_few_subjects_names_the_count():
    x, _ = _cohort(2)
    with pytest.raises(ValueError, match=r"at least 3 subjects.*got 2"):
        correlation_pattern(x, np.array([0.1, 0.2]))


def test_constant_margins_are_refused_by_name():
    x, _ = _cohort(10)
    with pytest.raises(ConstantMarginsError, match=r"margins are constant over the 10 subjects"):
        correlation_pattern(x, np.full(10, 0.3))


def test_bad_shapes():
    x, _ = _cohort(10)
    with pytest.raises(ValueError, match=r"10 FCNs but 9 margins"):
        correlation_pattern(x, np.zeros(9))
    with pytest.raises(ValueError, match=r"\(S, N, N\)"):
        correlation_pattern(x[:, :, :5], np.arange(10.0))
    with pytest.raises(ValueError, match=r"assignment has 5 ROIs but the FCNs have 12"):
        activation_pattern(x, np.arange(10.0), [0] * 5)


def test_edges_constant_over_subjects_get_zero_correlation():
    x, _ = _cohort(10)
    x[:, 0, 1] = x[:, 1, 0] = 0.5
    corr, cov = correlation_pattern(x, np.arange(10.0))
    assert corr[0, 1] == 0.0 and cov[0, 1] == pytest.approx(0.0, abs=1e-12) and np.isfinite(corr).all()


@pytest.mark.parametrize("paradigm,answer", [("judgment", "first"), ("judgment", "full"), ("comparative", "full")])
def test_margins_equal_the_answer_margin_one_question_at_a_time(pair, paradigm, answer):
    model, processor = pair
    q = make_question(check_attribute("adhd"), paradigm)
    fcns = random_fcns(5 * q.num_graphs, seed=5)
    groups = [list(fcns[i * q.num_graphs:(i + 1) * q.num_graphs]) for i in range(5)]
    batched = answer_margins(model, processor, q, groups, answer=answer, batch_size=2)
    margin_fn = AnswerMargin(model, processor, q, answer)
    with torch.no_grad():
        single = [margin_fn(torch.from_numpy(np.stack(processor.prepare_fcns(g))).unsqueeze(0))[0].item()
                  for g in groups]
    assert batched.shape == (5,) and batched == pytest.approx(single, abs=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_model_pattern_gives_one_pattern_per_graph(pair):
    model, processor = pair
    q = make_question(check_attribute("adhd"), "comparative")
    fcns = random_fcns(16, seed=6)
    groups = [[fcns[2 * i], fcns[2 * i + 1]] for i in range(8)]
    patterns = model_pattern(model, processor, q, groups, permutations=10, subject_ids=[[f"a{i}", f"b{i}"]
                                                                                        for i in range(8)])
    assert [p.graph_index for p in patterns] == [0, 1]
    assert patterns[0].correlation.shape == (12, 12) and patterns[1].subject_ids[0] == "b0"
    assert np.allclose(patterns[0].margins, patterns[1].margins) and patterns[0].num_subjects == 8


def test_explain_says_why_there_is_no_pattern(pair, monkeypatch):
    import fcn_llm.interpret.runner as runner

    model, processor = pair
    subjects = pd.DataFrame({"subject_id": [f"s{i}" for i in range(8)], "split": ["zero_shot"] * 8,
                             "adhd": [0.0, 1.0] * 4})
    fcns = random_fcns(8, seed=7)
    kwargs = dict(num_subjects=2, allowed=["adhd"], permutations=5, log=lambda _: None)
    few = runner.explain_attribute(model, processor, subjects, fcns, "adhd", pattern_subjects=2, **kwargs)
    assert few.patterns is None and "2 question(s) from split 'zero_shot', need at least 3" in few.pattern_note

    def constant(*args, **kw):
        raise ConstantMarginsError("The margins are constant over the 8 subjects")

    monkeypatch.setattr(runner, "model_pattern", constant)
    flat = runner.explain_attribute(model, processor, subjects, fcns, "adhd", pattern_subjects=8, **kwargs)
    assert flat.patterns is None and "margins are constant" in flat.pattern_note
    assert runner.explain_attribute(model, processor, subjects, fcns, "adhd", pattern_subjects=0,
                                    **kwargs).pattern_note is None
