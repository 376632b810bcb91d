"""Each section of the suite returns well-formed results on tiny configs (seconds; no timing asserted)."""

import math

import pytest
import torch

from bench.answering import parse_yes_no, scoring_efficiency, scoring_vs_generate
from bench.connectome import connectome_speed
from bench.encoder import SparseGraphLayer, encoder_throughput
from bench.memory import largest_batch, peak_rss_gib
from bench.overhead import step_overhead, training_step
from bench.pipeline import loader_throughput, loader_to_step_ratio
from bench.setup import bare_batch, collate, sample_rows
from bench.tokens import default_graph_tokens, prompt_lengths, step_time_vs_graph_tokens
from fcn_llm.questions import Question
from modeling_fcnllm import FCNEncoderModel
from tests.conftest import tiny_encoder_config


def test_bare_batch_has_the_same_tokens_without_graphs(setup, data):
    batch = collate(setup, data, data.rows["train"][:4])
    plain = bare_batch(setup, batch)
    graph_id = setup.model.config.graph_token_id
    assert plain["input_ids"].shape == batch["input_ids"].shape and not (plain["input_ids"] == graph_id).any()
    assert torch.equal(plain["labels"], batch["labels"]) and "graph_values" not in plain


def test_step_overhead_reports_both_stages_and_restores_the_model(setup, data):
    batch = collate(setup, data, sample_rows(data.rows["train"], 4))
    out = step_overhead(setup, batch, repeats=1, warmup=0)
    g = setup.model.config.graph_seq_length
    assert out["batch"]["graph_tokens"] == g * out["batch"]["graphs"]
    for stage in ("stage1", "stage2"):
        assert out[stage]["ratio"] > 0 and 0 < out[stage]["encoder_share"]
        assert set(out[stage]) >= {"fcn_llm", "bare_llm", "encoder"}
    assert all(p.requires_grad for p in setup.model.parameters()) and not setup.model.training


def test_sparse_layer_equals_the_dense_one():
    config = tiny_encoder_config()
    dense = FCNEncoderModel(config).eval()
    layer = SparseGraphLayer(dense.layers[0])
    hidden = torch.randn(3, config.num_rois, config.hidden_size)
    shape = (3, config.num_rois, config.num_rois)
    adjacency = torch.randn(shape) * (torch.rand(shape) < 0.3)  # signed, sparse, not symmetric
    expected = dense.layers[0](hidden, adjacency)
    torch.testing.assert_close(layer.eval()(hidden, adjacency), expected, atol=1e-5, rtol=1e-5)


def test_encoder_throughput_and_exponent():
    out = encoder_throughput({12: tiny_encoder_config(), 24: tiny_encoder_config(num_rois=24, network_assignment=None)},
                             batch=4, repeats=1, warmup=0)
    for row in out["per_rois"].values():
        assert row["dense_graphs_per_s"] > 0 and row["sparse_graphs_per_s"] > 0
        assert row["max_token_difference"] < 1e-4  # same weights, same maths
    assert math.isfinite(out["dense_exponent"]) and math.isfinite(out["sparse_exponent"])


def test_connectome_matches_nilearn_on_every_path():
    pytest.importorskip("nilearn")
    out = connectome_speed(subjects=10, timepoints=30, rois=8, repeats=1)
    for name in ("pearson", "ledoit_wolf", "partial", "tangent", "pearson_store_precision"):
        assert out[name]["equal_1e-5"], name
        assert out[name]["speedup"] > 0
    assert out["gemm_floor"]["speedup_ceiling"] > 0


def _questions(data, paradigm, choices):
    rows = [r for r in data.rows["zero_shot"] if r["paradigm"] == paradigm]
    return [Question(id=r["id"], group=(r["attribute"], paradigm), target="binary", messages=r["messages"][:1],
                     subject_ids=tuple(r["subject_ids"]), choices=choices, reference=0.0) for r in rows]


def _fcns_of(data):
    return lambda ids: [data.lookup[s].numpy() for s in ids]


def test_scoring_efficiency(setup, data):
    questions = _questions(data, "judgment", ("Yes", "No"))[:4] + _questions(data, "predictive", ("Female", "Male"))[:3]
    out = scoring_efficiency(setup, questions, _fcns_of(data), batch_size=2, repeats=1, warmup=0)
    assert out["questions"] == 7 and out["efficiency"] > 0 and out["questions_per_s"] > 0
    assert out["prompt_tokens"] > 7 * setup.model.config.graph_seq_length


def test_scoring_gives_the_answers_generate_gives(setup, data):
    """Teach the tiny model the answer format (Yes/No, then end of turn); then greedy generation and
    likelihood scoring must pick the same answer for every question, at batch 1 and in a batch."""
    rows = [r for r in data.rows["train"] if r["paradigm"] == "judgment"]
    setup.model.train()
    steps = [training_step(setup.model, collate(setup, data, rows[i : i + 8]), lr=1e-2) for i in (0, 8)]
    for k in range(40):
        steps[k % 2]()
    out = scoring_vs_generate(setup, _questions(data, "judgment", ("Yes", "No")), _fcns_of(data),
                              batch_sizes={1: 4, 16: 16}, max_new_tokens=3)
    for key in ("batch_1", "batch_16"):
        assert out[key]["generated_yes_no"] == 1.0
        assert out[key]["agreement"] == 1.0 and out[key]["first_token_agreement"] == 1.0
        assert out[key]["generate_over_scoring"] > 0


@pytest.mark.parametrize("text,answer", [("Yes.", "Yes"), (" no, it is not", "No"), ("Not sure", None), ("", None)])
def test_parse_yes_no(text, answer):
    assert parse_yes_no(text) == answer


def test_graph_tokens_and_prompt_lengths(setup, data):
    assert default_graph_tokens() == 16  # Schaefer-100 / Yeo-7: 8 ROI + 7 network + 1 whole-brain tokens
    out = prompt_lengths(setup, data)
    g = setup.model.config.graph_seq_length
    assert out["graph_tokens"] == 2 * g and out["prompt_tokens"] == out["text_tokens"] + 2 * g
    assert out["prompt_tokens_with_llava_576"] == out["text_tokens"] + 2 * 576


def test_step_time_vs_graph_tokens(setup, data):
    g = setup.model.config.graph_seq_length
    out = step_time_vs_graph_tokens(setup, data, data.rows["train"][:4], lengths=(g, g + 4), repeats=1, warmup=0)
    assert out[str(g)]["ratio_to_first"] == 1.0
    assert out[str(g + 4)]["padded_length"] > out[str(g)]["padded_length"]


def test_loader_throughput(setup, data):
    loader = loader_throughput(setup, data, batch_size=4, batches=3)
    assert loader["batches"] == 3 and loader["samples_per_s"] > 0
    ratio = loader_to_step_ratio({"samples_per_s": 80.0}, step_ms=1000.0, batch_size=8)
    assert ratio["step_samples_per_s"] == 8.0 and ratio["ratio"] == 10.0


def test_largest_batch_extrapolation():
    fit = largest_batch([4, 8, 16], [4.0, 6.0, 10.0], budget_gib=24.0)
    assert fit["gib_per_sample"] == pytest.approx(0.5) and fit["max_batch"] == 44
    assert peak_rss_gib() > 0
