import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, PreTrainedModel

from modeling_fcnllm import FCNEncoderForAttributePrediction, FCNEncoderModel, FCNLLMConfig, FCNLLMForCausalLM
from processing import FCNProcessor
from tests.conftest import NUM_ROIS, TINY_HEADS, make_number_reading_model, make_tiny_model, random_fcns, tiny_encoder_config

QUESTION = "<graph>\nDoes this subject have ADHD? Answer yes or no."
OLDER = "<graph>\nIs this subject older than 30 years? Answer yes or no."
COMPARE = "Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two subjects is older, the first or the second?"


def _batch(processor, texts, num_graphs, seed=0):
    return processor(text=texts, fcns=random_fcns(num_graphs, seed=seed))


# --- encoder -----------------------------------------------------------------------------------
@pytest.mark.parametrize("gnn_type", ["graph", "gin", "gcn", "gat"])
def test_encoder_token_shapes(gnn_type):
    config = tiny_encoder_config(gnn_type=gnn_type)
    out = FCNEncoderModel(config)(torch.from_numpy(random_fcns(5)))
    assert out.graph_tokens.shape == (5, config.graph_seq_length, config.hidden_size)
    assert out.node_embeddings.shape == (5, NUM_ROIS, config.hidden_size)
    assert out.roi_attention.shape == (5, config.num_roi_tokens, NUM_ROIS)
    torch.testing.assert_close(out.roi_attention.sum(-1), torch.ones(5, config.num_roi_tokens))


@pytest.mark.parametrize("scales", [(True, False, False), (False, True, False), (False, False, True), (False, True, True)])
def test_encoder_scales_can_be_switched_off(scales):
    roi, network, glob = scales
    config = tiny_encoder_config(use_roi_tokens=roi, use_network_tokens=network, use_global_token=glob)
    out = FCNEncoderModel(config)(torch.from_numpy(random_fcns(2)))
    assert out.graph_tokens.shape[1] == config.graph_seq_length
    assert (out.roi_attention is None) == (not roi)


def test_encoder_tokens_depend_on_the_fcn():
    encoder = FCNEncoderModel(tiny_encoder_config()).eval()
    tokens = encoder(torch.from_numpy(random_fcns(2))).graph_tokens
    assert (tokens[0] - tokens[1]).abs().max() > 1e-3


def test_network_connectivity_is_the_mean_edge_within_and_between_subnetworks():
    import numpy as np

    config = tiny_encoder_config()
    encoder = FCNEncoderModel(config)
    fcns = torch.from_numpy(random_fcns(2))
    profiles = fcns.clone()
    profiles[:, range(NUM_ROIS), range(NUM_ROIS)] = 0
    blocks = encoder.network_connectivity_matrix(profiles)
    assignment = np.array(config.network_assignment)
    for k in range(config.num_networks):
        for j in range(config.num_networks):
            block = fcns[1].numpy()[np.ix_(assignment == k, assignment == j)]
            expected = block[~np.eye(len(block), dtype=bool)].mean() if k == j else block.mean()
            assert blocks[1, k, j].item() == pytest.approx(expected, abs=1e-5)


def test_subnetwork_tokens_see_a_shift_of_one_network_block():
    config = tiny_encoder_config(use_roi_tokens=False, use_global_token=False)
    encoder = FCNEncoderModel(config).eval()
    fcns = torch.from_numpy(random_fcns(1))
    members = torch.tensor(config.network_assignment) == 0
    shifted = fcns.clone()
    shifted[0][members[:, None] & members[None, :]] += 0.2
    change = (encoder(shifted).graph_tokens - encoder(fcns).graph_tokens).abs().sum(-1)[0]
    assert change[0] > 0


def test_auto_model_builds_the_encoder_and_the_composite_uses_it(model):
    encoder = AutoModel.from_config(tiny_encoder_config())
    assert type(encoder) is FCNEncoderModel and isinstance(encoder, PreTrainedModel)
    assert type(model.graph_encoder) is FCNEncoderModel
    # the composite's parameter names are those of the plain module it replaces
    assert {"model.graph_encoder.roi_embedding", "model.graph_encoder.layers.0.conv.lin_rel.weight"} <= set(model.state_dict())


def test_encoder_rejects_bad_graph_values():
    encoder = FCNEncoderModel(tiny_encoder_config())
    with pytest.raises(ValueError, match="encoder expects num_rois=12"):
        encoder(torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match=r"shape \(num_graphs, N, N\)"):
        encoder(torch.zeros(12, 12))


def test_attribute_prediction_model_needs_heads():
    with pytest.raises(ValueError, match="needs config.attribute_heads"):
        FCNEncoderForAttributePrediction(tiny_encoder_config())


def test_attribute_prediction_model_loss_and_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = FCNEncoderForAttributePrediction(tiny_encoder_config(attribute_heads=TINY_HEADS)).eval()
    fcns = torch.from_numpy(random_fcns(4))
    labels = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, float("nan")], [1.0, 1.0, -0.2], [0.0, 0.0, 1.0]])
    out = model(fcns, labels=labels)
    assert out.attribute_outputs.shape == (4, 4) and out.graph_tokens.shape == (4, 7, 16)
    torch.testing.assert_close(out.loss, model.attribute_heads.loss(out.attribute_outputs, labels))
    assert model(fcns).loss is None
    model.save_pretrained(tmp_path)
    loaded = FCNEncoderForAttributePrediction.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(fcns).attribute_outputs, out.attribute_outputs)
    # the encoder alone loads from the same folder (base_model_prefix "encoder"), its pooling buffer rebuilt
    encoder = FCNEncoderModel.from_pretrained(tmp_path)
    torch.testing.assert_close(encoder(fcns).graph_tokens, out.graph_tokens)


def test_encoder_gradient_reaches_every_fcn_edge_used():
    encoder = FCNEncoderModel(tiny_encoder_config())
    fcn = torch.from_numpy(random_fcns(1)).requires_grad_(True)
    encoder(fcn).graph_tokens.sum().backward()
    assert fcn.grad is not None and fcn.grad.abs().sum() > 0


# --- forward -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_forward_without_and_with_labels(processor, family):
    model = make_tiny_model(processor.tokenizer, family=family)
    batch = _batch(processor, [QUESTION, COMPARE], num_graphs=3)
    out = model(**batch)
    assert out.loss is None
    assert out.logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
    assert out.graph_hidden_states.shape == (3, model.config.graph_seq_length, model.config.text_config.hidden_size)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert torch.isfinite(model(**batch, labels=labels).loss)


def test_graph_positions_never_get_loss(processor, model):
    batch = _batch(processor, [QUESTION], num_graphs=1)
    labels = batch["input_ids"].clone()
    manual = labels.masked_fill(labels == model.config.graph_token_id, -100)
    torch.testing.assert_close(model(**batch, labels=labels).loss, model(**batch, labels=manual).loss)


def test_only_the_answer_counts_when_the_prompt_is_masked(processor, model):
    batch = _batch(processor, [QUESTION + " Yes"], num_graphs=1)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, -1] = batch["input_ids"][0, -1]
    logits = model(**batch).logits
    expected = torch.nn.functional.cross_entropy(logits[0, -2:-1], batch["input_ids"][0, -1:])
    torch.testing.assert_close(model(**batch, labels=labels).loss, expected)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_training_computes_logits_only_where_labels_are_predicted(processor, family):
    model = make_tiny_model(processor.tokenizer, family=family).train()  # no dropout in these configs
    batch = _batch(processor, [QUESTION + " Yes", COMPARE + " The first"], num_graphs=3)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, -2:] = batch["input_ids"][:, -2:]  # the answers' tokens (right after the prompt)
    labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
    full = model(**batch).logits  # (B, L, V): every position
    shifted = labels[:, 1:]
    expected = torch.nn.functional.cross_entropy(full[:, :-1][shifted != -100].float(), shifted[shifted != -100])
    out = model(**batch, labels=labels)
    assert out.logits.shape == (int((labels[:, 1:] != -100).sum()), model.config.text_config.vocab_size)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.lm_head.weight.grad is not None and model.model.graph_projector is not None


def test_comparative_order_matters(processor, model):
    fcns = random_fcns(2)
    a = model(**processor(text=COMPARE, fcns=fcns)).logits
    b = model(**processor(text=COMPARE, fcns=fcns[::-1].copy())).logits
    assert (a - b).abs().max() > 1e-4


def test_logits_to_keep(processor, model):
    batch = _batch(processor, [QUESTION], num_graphs=1)
    full = model(**batch).logits
    torch.testing.assert_close(model(**batch, logits_to_keep=1).logits, full[:, -1:])


# --- generation --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_cached_and_uncached_greedy_generation_agree(processor, family):
    model = make_tiny_model(processor.tokenizer, family=family, seed=1)
    batch = processor(text=[QUESTION, COMPARE], fcns=random_fcns(3), padding_side="left")
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    cached = model.generate(**batch, use_cache=True, **kwargs)
    uncached = model.generate(**batch, use_cache=False, **kwargs)
    torch.testing.assert_close(cached, uncached)
    assert cached.shape[1] == batch["input_ids"].shape[1] + 6


# --- training behaviour ------------------------------------------------------------------------
def test_tiny_model_overfits_graph_dependent_answers(processor):
    """Answers depend only on the FCN: the model must read the graph tokens to fit them."""
    torch.manual_seed(0)
    model = make_tiny_model(processor.tokenizer).train()
    fcns = random_fcns(4, seed=3)
    texts = [QUESTION + (" Yes" if i % 2 else " No") for i in range(4)]
    batch = processor(text=texts, fcns=fcns)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, -1] = batch["input_ids"][:, -1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])


def test_stage1_freezing_trains_encoder_and_projector_only(processor, model):
    for p in model.language_model.parameters():
        p.requires_grad_(False)
    model.lm_head.requires_grad_(False)
    batch = _batch(processor, [QUESTION], num_graphs=1)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert all(p.grad is None for p in model.language_model.parameters())
    assert model.lm_head.weight.grad is None
    for module in (model.graph_encoder, model.graph_projector):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_lora_wraps_only_llm_projections_and_trains(processor, model):
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        modules_to_save=["graph_encoder", "graph_projector"],
    )
    peft_model = get_peft_model(model, config)
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names and all("language_model" in n for n in lora_names)
    assert not any("graph_encoder" in n and "lora_" in n for n in lora_names)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("graph_encoder.modules_to_save" in n for n in trainable)
    assert any("graph_projector.modules_to_save" in n for n in trainable)
    assert not any("embed_tokens" in n or "lm_head" in n or "mlp" in n for n in trainable)

    batch = _batch(processor, [QUESTION + " Yes"], num_graphs=1)
    lora_b = next(p for n, p in peft_model.named_parameters() if "lora_B" in n)
    before = lora_b.detach().clone()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    assert not torch.equal(before, lora_b.detach())


# --- wrapping a pretrained LM ------------------------------------------------------------------
def test_from_text_model_keeps_weights_and_adds_graph_token(tokenizer):
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_text_config

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_text_config("llama", len(tokenizer))).eval()
    ids = tokenizer("Does this subject have ADHD?", return_tensors="pt")["input_ids"]
    expected = lm(input_ids=ids).logits
    model = FCNLLMForCausalLM.from_text_model(lm, tiny_encoder_config(), tokenizer=tokenizer)
    assert not model.training  # like from_pretrained: scoring right after wrapping is deterministic
    assert tokenizer.convert_tokens_to_ids("<graph>") == model.config.graph_token_id == len(tokenizer) - 1
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    torch.testing.assert_close(model(input_ids=ids).logits[..., : expected.shape[-1]], expected)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    processor = FCNProcessor.from_model_config(tokenizer, model.config)
    assert model(**processor(text=QUESTION, fcns=random_fcns(1))).logits.isfinite().all()


# --- bad input ---------------------------------------------------------------------------------
def test_placeholder_and_graph_count_mismatch_names_both_counts(processor, model):
    batch = _batch(processor, [QUESTION], num_graphs=1)
    with pytest.raises(ValueError, match=r"hold 7 <graph> tokens .* but 2 graph\(s\) were given \(14 tokens\)"):
        model(input_ids=batch["input_ids"], graph_values=torch.from_numpy(random_fcns(2)))


def test_placeholders_without_graph_values(processor, model):
    batch = _batch(processor, [QUESTION], num_graphs=1)
    with pytest.raises(ValueError, match="7 <graph> tokens but no graph_values"):
        model(input_ids=batch["input_ids"])


@pytest.mark.parametrize(
    "graph_values,message",
    [
        (torch.zeros(1, NUM_ROIS + 1, NUM_ROIS + 1), "N=13 ROIs but the encoder expects num_rois=12"),
        (torch.zeros(NUM_ROIS, NUM_ROIS), r"shape \(num_graphs, N, N\)"),
        (torch.zeros(1, NUM_ROIS, NUM_ROIS - 1), r"shape \(num_graphs, N, N\)"),
        (torch.zeros(1, NUM_ROIS, NUM_ROIS, dtype=torch.long), "float tensor"),
        (torch.full((1, NUM_ROIS, NUM_ROIS), float("nan")), "NaN or inf"),
    ],
)
def test_bad_graph_values(processor, model, graph_values, message):
    batch = _batch(processor, [QUESTION], num_graphs=1)
    with pytest.raises(ValueError, match=message):
        model(input_ids=batch["input_ids"], graph_values=graph_values)


# --- auxiliary attribute heads -------------------------------------------------------------------
def _model_with_heads(processor, weight=0.5):
    from modeling_fcnllm import FCNLLMConfig

    base = make_tiny_model(processor.tokenizer)
    config = FCNLLMConfig(**{**base.config.to_dict(), "auxiliary_heads": TINY_HEADS, "auxiliary_loss_weight": weight})
    torch.manual_seed(0)
    return FCNLLMForCausalLM(config).eval()


def test_auxiliary_loss_is_added_and_skips_unknown_labels(processor):
    model = _model_with_heads(processor)
    batch = _batch(processor, [QUESTION, COMPARE], num_graphs=3)
    lm_loss = model(**batch, labels=batch["input_ids"]).loss
    labels = torch.tensor([[1.0, 0.0, 0.3], [0.0, float("nan"), -1.2], [float("nan"), 1.0, float("nan")]])
    total = model(**batch, labels=batch["input_ids"], graph_attribute_labels=labels).loss
    heads = model.graph_attribute_heads
    with torch.no_grad():
        outputs = model(**batch).graph_attribute_outputs
        aux = heads.loss(outputs, labels)
    assert outputs.shape == (3, 4)  # 1 + 2 + 1 outputs side by side
    torch.testing.assert_close(total, lm_loss + 0.5 * aux)
    assert torch.isfinite(total)
    only_aux = model(**batch, graph_attribute_labels=torch.full((3, 3), float("nan"))).loss
    assert only_aux.item() == 0.0


def test_heads_add_a_network_level_linear_path(processor):
    """A new model's network path is silent (zero, identity standardisation); once set, the outputs move with the
    network-level FCN the encoder reports."""
    model = _model_with_heads(processor)
    heads = model.graph_attribute_heads
    k = model.config.encoder_config.num_networks
    assert heads.num_network_features == k * (k + 1) // 2
    assert all((h.weight == 0).all() and (h.bias == 0).all() for h in heads.network_heads.values())
    assert (heads.network_mean == 0).all() and (heads.network_std == 1).all()
    encoded = model.model.get_graph_features(_batch(processor, [QUESTION], num_graphs=1)["graph_values"])[1]
    assert encoded.network_connectivity.shape == (1, k, k)
    before = heads(encoded)
    with torch.no_grad():
        heads.network_heads["adhd"].weight[0, 0] = 1.0
    shifted = heads(encoded) - before
    torch.testing.assert_close(shifted[:, 0], encoded.network_connectivity[:, 0, 0])
    assert (shifted[:, 1:] == 0).all()


def test_heads_need_a_matching_network_level_fcn(processor):
    model = _model_with_heads(processor)
    encoded = model.model.get_graph_features(_batch(processor, [QUESTION], num_graphs=1)["graph_values"])[1]
    with pytest.raises(ValueError, match="network_connectivity"):
        model.graph_attribute_heads(type(encoded)(graph_tokens=encoded.graph_tokens))
    wrong = type(encoded)(graph_tokens=encoded.graph_tokens, network_connectivity=torch.zeros(1, 9, 9))
    with pytest.raises(ValueError, match="disagree on the number of subnetworks"):
        model.graph_attribute_heads(wrong)


def test_auxiliary_labels_bad_shape_or_no_heads(processor, model):
    batch = _batch(processor, [QUESTION], num_graphs=1)
    with pytest.raises(ValueError, match="no auxiliary_heads"):
        model(**batch, graph_attribute_labels=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \(num_graphs, 3\)"):
        _model_with_heads(processor)(**batch, graph_attribute_labels=torch.zeros(1, 2))


def test_projector_batchnorm_keeps_what_differs_between_subjects():
    from modeling_fcnllm import FCNProjector
    from tests.conftest import make_tokenizer

    model = make_tiny_model(FCNProcessor(make_tokenizer()).tokenizer)
    projector = FCNProjector(model.config)
    shared = torch.randn(model.config.graph_seq_length, 16) * 5
    tokens = shared + 0.05 * torch.randn(32, model.config.graph_seq_length, 16)
    projector.calibrate(tokens)
    projector.eval()
    standardised = projector.input_norm(tokens.flatten(1))
    assert standardised.std(0).mean() > 0.9  # the shared part (scale 5) is gone, the differences are unit-scaled
    single = projector.train()(tokens[:1])  # one graph in training mode falls back to running statistics
    torch.testing.assert_close(single, projector.eval()(tokens[:1]))


# --- instruction conditioning ------------------------------------------------------------------
@pytest.mark.parametrize("attribute_evidence", [False, True])
def test_instruction_conditioning_starts_as_the_plain_splice(processor, attribute_evidence):
    """Both evidence kinds start silent (transformers skips initialising a remote-code module without
    parameters or buffers of its own, so the attribute evidence's `out` once kept a random init)."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=attribute_evidence)
    out = model.model.instruction_conditioning.out
    assert (out.weight == 0).all() and (out.bias == 0).all()
    plain_config = model.config.to_dict() | {"instruction_conditioning": False}
    plain = FCNLLMForCausalLM(type(model.config)(**plain_config)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    batch = _batch(processor, [QUESTION], num_graphs=1)
    torch.testing.assert_close(model(**batch).logits, plain(**batch).logits)


def test_instruction_conditioning_reads_the_question_but_never_the_answer(processor):
    model = make_tiny_model(processor.tokenizer, live_conditioning=True)
    fcns = random_fcns(1)
    ask_adhd = processor(text="<graph>\nDoes this subject have ADHD?", fcns=fcns)
    ask_age = processor(text="<graph>\nIs this subject older than 30?", fcns=fcns)
    adhd_graph, _ = model.model.get_graph_features(ask_adhd["graph_values"])
    with torch.no_grad():
        embeds = model.get_input_embeddings()
        a, b = (
            model.model.condition_on_instruction(adhd_graph, embeds(x["input_ids"]), x["input_ids"] == model.config.graph_token_id, x["attention_mask"], None)["graph_features"]
            for x in (ask_adhd, ask_age)
        )
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-4  # the question changes the evidence token
    torch.testing.assert_close(a[:, :-1], b[:, :-1])  # and nothing else
    # with labels on the answer, the prompt's logits do not depend on which answer follows
    yes, no = (processor(text=f"<graph>\nDoes this subject have ADHD? {w}", fcns=fcns) for w in ("Yes", "No"))
    prompt_len = yes["input_ids"].shape[1] - 1
    logits = []
    for batch in (yes, no):
        labels = torch.full_like(batch["input_ids"], -100)
        labels[0, -1] = batch["input_ids"][0, -1]
        logits.append(model(**batch, labels=labels).logits[0, :prompt_len])
    torch.testing.assert_close(logits[0], logits[1])


def test_instruction_conditioning_is_trained_through_a_frozen_llm(processor):
    """Stage 1: the answer's loss reaches the conditioning's query and both gates through the frozen LLM."""
    model = make_tiny_model(processor.tokenizer, live_conditioning=True).train()
    model.language_model.requires_grad_(False)
    batch = _batch(processor, [QUESTION + " Yes"], num_graphs=1)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, -1] = batch["input_ids"][0, -1]
    model(**batch, labels=labels).loss.backward()
    conditioning = model.model.instruction_conditioning
    for param in (conditioning.query, conditioning.instruction_proj.weight, conditioning.graph_proj.weight, conditioning.out.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


# --- the evidence token reads the attribute heads ---------------------------------------------------
def test_attribute_evidence_config_needs_heads():
    with pytest.raises(ValueError, match="auxiliary_heads is empty"):
        FCNLLMConfig(instruction_evidence="attributes")
    with pytest.raises(ValueError, match="'tokens' or 'attributes'"):
        FCNLLMConfig(instruction_evidence="logits")


def test_attribute_evidence_follows_the_heads_on_every_graph_token(processor):
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    assert (conditioning.router.out_features, conditioning.out.in_features) == (3, 4)  # 3 heads, 1 + 2 + 1 outputs
    batch = _batch(processor, [QUESTION], num_graphs=1)
    before = model(**batch)
    assert before.instruction_routing_logits.shape == (1, 3)
    with torch.no_grad():  # a head that says "more ADHD" for everyone moves every graph token alike
        model.graph_attribute_heads.heads["adhd"].bias += 3.0
    after = model(**batch)
    shift = after.graph_hidden_states - before.graph_hidden_states
    assert shift.abs().max() > 1e-4
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
    # the heads read the encoder's tokens (as in stage 0)
    encoded = model.model.get_graph_features(batch["graph_values"])[1]
    torch.testing.assert_close(after.graph_attribute_outputs, model.graph_attribute_heads(encoded))


def test_routed_evidence_is_the_asked_heads_output(processor):
    """With the router sure of the attribute, the evidence is `out` applied to that head's outputs only."""
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    with torch.no_grad():
        conditioning.router.weight.zero_()
        conditioning.router.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))  # always "sex" (outputs 1 and 2)
    batch = _batch(processor, [QUESTION, OLDER], num_graphs=2)
    out = model(**batch)
    plain, _ = model.model.get_graph_features(batch["graph_values"])
    z = out.graph_attribute_outputs
    log_p = z[:, 1:3].log_softmax(-1)  # the sex head's class logits enter as the classes' log-odds
    odds = log_p - torch.log1p(-log_p.exp())
    expected = conditioning.out(torch.cat([torch.zeros_like(z[:, :1]), odds, torch.zeros_like(z[:, 3:])], -1))
    torch.testing.assert_close(out.graph_hidden_states[:, -1] - plain[:, -1], expected, atol=1e-5, rtol=1e-4)
    # calibrated on these subjects, the log-odds are scaled, not centred (the class prior stays in the evidence) ...
    conditioning.calibrate(z)
    assert (conditioning.evidence_norm.running_mean[1:3] == 0).all()
    torch.testing.assert_close(conditioning.evidence_norm.running_var[1:3], odds.var(0))
    # ... while a binary head's output is centred: routed to ADHD, the evidence's mean over them is out's bias
    with torch.no_grad():
        conditioning.router.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
    evidence = model(**batch).graph_hidden_states[:, -1] - plain[:, -1]
    torch.testing.assert_close(evidence.mean(0), conditioning.out.bias, atol=1e-5, rtol=1e-4)


def test_evidence_subtracts_the_thresholds_the_instruction_names(processor):
    """A threshold judgment ("older than 30?") hands the LLM the head's output minus the threshold read from
    the instruction: `out(w * (z - threshold(features)))`, zero thresholds in a new model."""
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    assert (conditioning.threshold_weight == 0).all() and (conditioning.threshold_bias == 0).all()
    assert "threshold_weight" not in dict(conditioning.named_parameters())  # fitted, never trained
    batch = _batch(processor, [QUESTION, OLDER], num_graphs=2)
    before = model(**batch)
    conditioning.threshold_weight.normal_(std=0.1)
    conditioning.threshold_bias.copy_(torch.tensor([0.5, -1.0, 2.0, 1.5]))
    after = model(**batch)
    rows = torch.tensor([0, 1])
    mask = (batch["input_ids"] != processor.graph_token_id) & batch["attention_mask"].bool()
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"], mask)
    weights = before.instruction_routing_logits.softmax(-1)[rows].repeat_interleave(torch.tensor([1, 2, 1]), dim=-1)
    read = torch.nn.functional.linear(features, conditioning.threshold_weight, conditioning.threshold_bias)
    expected = conditioning.out.weight @ (weights * read[rows]).T
    shift = before.graph_hidden_states[:, -1] - after.graph_hidden_states[:, -1]
    torch.testing.assert_close(shift, expected.T, atol=1e-5, rtol=1e-4)


def test_each_paradigm_reads_the_heads_through_its_own_columns(processor):
    """With `evidence_paradigms`, `out` has one block of A columns per paradigm, and a question reads the block
    of its paradigm (the paradigm classifier's softmax): a judgment's "Yes"/"No" columns never move a predictive
    question's answer."""
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True,
                            evidence_paradigms=["predictive", "judgment"])
    conditioning = model.model.instruction_conditioning
    assert conditioning.out.in_features == 2 * 4  # 2 paradigms x (1 + 2 + 1) head outputs
    assert "paradigm_weight" in dict(conditioning.named_parameters())  # fitted, then trained by paradigm_labels
    assert (conditioning.evidence_column(2, "predictive"), conditioning.evidence_column(2, "judgment")) == (2, 6)
    batch = _batch(processor, [QUESTION, COMPARE], num_graphs=3)

    def graph_tokens(**zeroed_blocks):
        with torch.no_grad():
            saved = conditioning.out.weight.clone()
            for block in zeroed_blocks.values():
                conditioning.out.weight[:, block * 4 : (block + 1) * 4] = 0
            tokens = model(**batch).graph_hidden_states
            conditioning.out.weight.copy_(saved)
        return tokens

    for asked, other in ((0, 1), (1, 0)):
        with torch.no_grad():
            conditioning.paradigm_bias.copy_(torch.tensor([50.0, 0.0] if asked == 0 else [0.0, 50.0]))
        torch.testing.assert_close(graph_tokens(other=other), graph_tokens())  # the other block is not read
        assert (graph_tokens(asked=asked) - graph_tokens()).abs().max() > 1e-4  # its own block is


def test_evidence_paradigms_bad_input(processor):
    with pytest.raises(ValueError, match="distinct paradigm names"):
        FCNLLMConfig(evidence_paradigms=["judgment", "judgment"])
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True, evidence_paradigms=["predictive", "judgment"])
    with pytest.raises(ValueError, match=r"No evidence readout for paradigm 'comparative'.*\['predictive', 'judgment'\]"):
        model.model.instruction_conditioning.evidence_column(0, "comparative")
    shared = make_tiny_model(processor.tokenizer, attribute_evidence=True).model.instruction_conditioning
    assert shared.out.in_features == 4 and shared.evidence_column(3, "comparative") == 3


def test_class_judgments_read_the_asked_class_through_the_signs(processor):
    """`out(w * s * (z - t))`: the signs `s` (a linear map of the bag of words, +1 everywhere in a new model)
    turn the sex head's two outputs towards the class a question asks about ("female?": Female up, Male down)."""
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    assert (conditioning.sign_weight == 0).all() and (conditioning.sign_bias == 1).all()
    assert "sign_weight" in dict(conditioning.named_parameters())  # fitted, then trained by sign_labels
    batch = _batch(processor, [QUESTION, OLDER], num_graphs=2)
    before = model(**batch)
    with torch.no_grad():
        conditioning.sign_bias.copy_(torch.tensor([1.0, -1.0, 1.0, 1.0]))  # every question asks the sex head's 2nd class
    after = model(**batch)
    rows = torch.tensor([0, 1])
    z = conditioning.evidence_norm(conditioning.read_outputs(before.graph_attribute_outputs))  # running statistics
    weights = before.instruction_routing_logits.softmax(-1)[rows].repeat_interleave(torch.tensor([1, 2, 1]), dim=-1)
    flipped = torch.zeros_like(z)
    flipped[:, 1] = -2 * z[:, 1]  # only the first sex output changes sign
    shift = after.graph_hidden_states[:, -1] - before.graph_hidden_states[:, -1]
    torch.testing.assert_close(shift, (weights * flipped) @ conditioning.out.weight.T, atol=1e-5, rtol=1e-4)


def test_only_judgments_and_comparisons_are_turned(processor):
    """A predictive question has no direction: whatever the turn classifier says about it (it is never trained on
    one), its signs stay the class signs; a question read as a judgment or comparison is turned."""
    model = make_tiny_model(processor.tokenizer, attribute_evidence=True,
                            evidence_paradigms=["predictive", "judgment", "comparative"])
    conditioning = model.model.instruction_conditioning
    features = torch.randn(3, conditioning.turn_weight.shape[0])
    with torch.no_grad():
        conditioning.turn_bias.fill_(20.0)  # every question read as asked the other way round
        conditioning.paradigm_weight.zero_()
        for paradigm, expected in (("predictive", 1.0), ("judgment", -1.0), ("comparative", -1.0)):
            conditioning.paradigm_bias.copy_(torch.tensor([20.0 if p == paradigm else 0.0 for p in conditioning.paradigms]))
            torch.testing.assert_close(conditioning.signs(features), expected * conditioning.class_signs(features),
                                       atol=1e-6, rtol=1e-6)


def test_routing_loss_and_its_bad_input(processor):
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True)
    batch = _batch(processor, [QUESTION, COMPARE], num_graphs=3)
    lm = model(**batch, labels=batch["input_ids"])
    routed = model(**batch, labels=batch["input_ids"], routing_labels=torch.tensor([0, -100]))
    expected = torch.nn.functional.cross_entropy(lm.instruction_routing_logits[:1], torch.tensor([0]))
    torch.testing.assert_close(routed.loss, lm.loss + 0.5 * expected)
    unknown = model(**batch, labels=batch["input_ids"], routing_labels=torch.tensor([-100, -100]))
    torch.testing.assert_close(unknown.loss, lm.loss)
    with pytest.raises(ValueError, match=r"routing_labels must have shape \(batch_size,\) = \(2,\)"):
        model(**batch, routing_labels=torch.tensor([0, 1, 2]))
    plain = make_tiny_model(processor.tokenizer)
    with pytest.raises(ValueError, match="routing_labels need instruction_conditioning with"):
        plain(**batch, routing_labels=torch.tensor([0, 1]))


def test_attribute_evidence_is_trained_through_a_frozen_llm(processor):
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True).train()
    model.language_model.requires_grad_(False)
    batch = _batch(processor, [QUESTION + " Yes"], num_graphs=1)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[0, -1] = batch["input_ids"][0, -1]
    model(**batch, labels=labels).loss.backward()  # the LM loss alone, no auxiliary labels
    conditioning = model.model.instruction_conditioning
    for param in (conditioning.out.weight, model.graph_attribute_heads.heads["adhd"].weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    # the router and the question maps learn what is asked from their own losses, never from the answer
    readers = (conditioning.router.weight, conditioning.sign_weight, conditioning.turn_weight)
    for param in readers:
        assert param.grad is None or not param.grad.any()
    model.zero_grad()
    model(**batch, labels=labels, routing_labels=torch.tensor([0]), turn_labels=torch.tensor([1]),
          sign_labels=torch.tensor([[float("nan"), -1.0, 1.0, float("nan")]])).loss.backward()
    for param in readers:
        assert param.grad.abs().sum() > 0


def test_question_losses_and_their_bad_input(processor):
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True,
                            evidence_paradigms=["predictive", "judgment", "comparative"])
    batch = _batch(processor, [QUESTION, COMPARE], num_graphs=3)
    lm = model(**batch, labels=batch["input_ids"])
    signs = torch.tensor([[float("nan"), -1.0, 1.0, float("nan")], [float("nan")] * 4])
    read = model(**batch, labels=batch["input_ids"], paradigm_labels=torch.tensor([1, 2]),
                 turn_labels=torch.tensor([-100, 1]), sign_labels=signs)
    F = torch.nn.functional
    expected = (F.cross_entropy(lm.paradigm_logits, torch.tensor([1, 2]))
                + F.binary_cross_entropy_with_logits(lm.turn_logits[1:], torch.tensor([1.0]))
                + F.mse_loss(lm.class_signs[0, 1:3], torch.tensor([-1.0, 1.0])))
    torch.testing.assert_close(read.loss, lm.loss + 0.5 * expected)
    unknown = model(**batch, labels=batch["input_ids"], turn_labels=torch.tensor([-100, -100]),
                    sign_labels=torch.full((2, 4), float("nan")))
    torch.testing.assert_close(unknown.loss, lm.loss)
    with pytest.raises(ValueError, match=r"turn_labels must have shape \(2,\), got \(3,\)"):
        model(**batch, turn_labels=torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"sign_labels must have shape \(2, 4\)"):
        model(**batch, sign_labels=torch.zeros(2, 3))
    shared = make_tiny_model(processor.tokenizer, attribute_evidence=True)
    with pytest.raises(ValueError, match="paradigm_labels need instruction conditioning with evidence_paradigms"):
        shared(**batch, paradigm_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="turn_labels need instruction conditioning with instruction_evidence"):
        make_tiny_model(processor.tokenizer)(**batch, turn_labels=torch.tensor([0, 1]))


def test_a_checkpoint_without_the_threshold_weights_loads_with_zero_thresholds(processor, tmp_path):
    """Weights missing from a checkpoint (one saved before thresholds existed) start silent, as in a new model."""
    from safetensors.torch import load_file, save_file

    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".threshold_" not in k and ".sign_" not in k},
              tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = FCNLLMForCausalLM.from_pretrained(tmp_path).model.instruction_conditioning
    assert (loaded.threshold_weight == 0).all() and (loaded.threshold_bias == 0).all()
    assert (loaded.sign_weight == 0).all() and (loaded.sign_bias == 1).all()  # +1: every output read as it is
    torch.testing.assert_close(loaded.out.weight, model.model.instruction_conditioning.out.weight)  # loaded, kept


def test_attribute_evidence_runs_in_bfloat16(processor):
    """A model loaded in bf16 (`dtype=torch.bfloat16`) routes and standardises the evidence without dtype errors."""
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True).to(torch.bfloat16)
    out = model(**_batch(processor, [QUESTION], num_graphs=1))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()
    assert out.instruction_routing_logits.dtype == torch.float32


# --- thresholds read as numbers ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, number",
    [
        ("<graph>\nIs this subject older than 37 years?", 37.0),
        ("<graph>\nIs this subject older than 73 years? Answer yes or no.", 73.0),
        ("<graph>\nIs the BMI of this subject above 27.5?", 27.5),
        ("Is this subject older than 40? <graph>", 40.0),  # a single graph after the question
        ("<graph>\nDoes this subject have ADHD?", float("nan")),
        ("Subject 1: <graph>\nSubject 2: <graph>\nWhich of the two is older?", float("nan")),  # labels, not thresholds
        ("Subject 1: <graph>\nSubject 2: <graph>\nIs the first older than the second by 5 years?", 5.0),
    ],
)
def test_question_numbers_are_read_from_the_question(processor, text, number):
    model = make_number_reading_model(processor)
    batch = processor(text=[text], fcns=random_fcns(text.count("<graph>")))
    placeholders = batch["input_ids"] == processor.graph_token_id
    read = model.model.instruction_conditioning.question_numbers(batch["input_ids"], ~placeholders, placeholders)
    torch.testing.assert_close(read, torch.tensor([number]), equal_nan=True)


def test_thresholds_read_as_numbers_compare_any_number_exactly(processor):
    """"older than 37" and "older than 73" (the same words, the digits swapped) get thresholds 36 years apart in
    the age head's units: `((v - mean) / std - output mean) / output sd`, set by `calibrate`."""
    model = make_number_reading_model(processor)
    conditioning = model.model.instruction_conditioning
    questions = ["<graph>\nIs this subject older than 37 years?", "<graph>\nIs this subject older than 73 years?"]
    batch = processor(text=questions, fcns=random_fcns(1).repeat(2, axis=0))
    out = model(**batch)
    norm = conditioning.evidence_norm
    age = 3  # TINY_HEADS: adhd (1 output), sex (2), age (1)
    spread = (norm.running_var[age] + norm.eps).sqrt()
    numbers = torch.tensor([37.0, 73.0])
    expected = ((numbers - 40.0) / 20.0 - norm.running_mean[age]) / spread
    features = model.model.routing_features(batch["input_ids"], batch["attention_mask"])
    thresholds = conditioning.threshold_features(features, numbers)
    torch.testing.assert_close(thresholds[:, age], expected)
    assert (thresholds[:, :age] == 0).all()  # other heads name no threshold
    # the whole path: the two graphs (the same FCN) differ by out(w_age * (t73 - t37)) on every graph token
    w_age = out.instruction_routing_logits.softmax(-1)[:, 2]
    shift = out.graph_hidden_states[0] - out.graph_hidden_states[1]
    column = conditioning.out.weight[:, age]
    moved = column * (w_age[1] * expected[1] - w_age[0] * expected[0])
    torch.testing.assert_close(shift, moved.expand_as(shift), atol=1e-5, rtol=1e-4)
    assert "threshold_scale" not in dict(conditioning.named_parameters())  # arithmetic, never trained
    assert "model.instruction_conditioning.threshold_scale" in model.state_dict()  # saved with the model


def test_numeral_tokens_bad_input():
    with pytest.raises(ValueError, match="numeral_tokens maps token ids"):
        FCNLLMConfig(auxiliary_heads=[{"key": "age", "kind": "continuous", "num_outputs": 1}],
                     instruction_evidence="attributes", numeral_tokens={"12": "twelve"})


def test_from_text_model_reads_numbers_only_for_attribute_evidence(tokenizer):
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_text_config

    lm = AutoModelForCausalLM.from_config(tiny_text_config("llama", len(tokenizer) + 1))
    plain = FCNLLMForCausalLM.from_text_model(lm, tiny_encoder_config(), tokenizer=tokenizer)
    assert plain.config.numeral_tokens is None
    model = FCNLLMForCausalLM.from_text_model(lm, tiny_encoder_config(), tokenizer=tokenizer, auxiliary_heads=TINY_HEADS,
                                              instruction_evidence="attributes")
    digits = {text.strip() for text in model.config.numeral_tokens.values()}
    assert set("0123456789") <= digits and "." in digits
    assert all(tokenizer.decode([int(t)]) == text for t, text in model.config.numeral_tokens.items())
    ablation = FCNLLMForCausalLM.from_text_model(lm, tiny_encoder_config(), tokenizer=tokenizer,
                                                 auxiliary_heads=TINY_HEADS, instruction_evidence="attributes",
                                                 numeral_tokens=None)
    assert ablation.config.numeral_tokens is None


def test_a_comparison_reads_the_difference_between_its_two_graphs(processor):
    """A row with two graphs hands both the same evidence, `out(w * (z_first - z_second) / 2)`: swapping the
    subjects flips it, and a single-graph row next to it keeps `out(w * (z - t))`."""
    model = make_tiny_model(processor.tokenizer, live_conditioning=True, attribute_evidence=True)
    conditioning = model.model.instruction_conditioning
    fcns = random_fcns(3)
    forward, swapped = (model(**processor(text=[QUESTION, COMPARE], fcns=fcns[order])) for order in ([0, 1, 2], [0, 2, 1]))
    plain, _ = model.model.get_graph_features(torch.from_numpy(np.stack(processor.prepare_fcns(fcns))))
    evidence = forward.graph_hidden_states[:, -1] - plain[:, -1]
    torch.testing.assert_close(evidence[1], evidence[2])  # both subjects carry "the first scores higher" alike
    z = conditioning.evidence_norm(conditioning.read_outputs(forward.graph_attribute_outputs))
    weights = forward.instruction_routing_logits.softmax(-1)[1].repeat_interleave(torch.tensor([1, 2, 1]))
    expected = conditioning.out(weights * (z[1] - z[2]) / 2)
    torch.testing.assert_close(evidence[1], expected, atol=1e-5, rtol=1e-4)
    flipped = swapped.graph_hidden_states[:, -1] - plain[[0, 2, 1], -1]
    bias = conditioning.out.bias
    torch.testing.assert_close(flipped[1] - bias, -(evidence[1] - bias), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(flipped[0], evidence[0])  # the single-graph row is untouched


@pytest.mark.parametrize("training", [False, True])
def test_pre_shifted_labels_give_the_same_loss(processor, model, training):
    """`shift_labels` (position i predicts token i + 1, as sequence-parallel training passes them) and `labels`
    give one loss, in evaluation and in training mode (logits only where a label is predicted)."""
    batch = _batch(processor, [QUESTION + " Yes", COMPARE + " The first"], num_graphs=3)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :-3] = -100
    shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    model.train(training)
    torch.manual_seed(0)
    expected = model(**batch, labels=labels).loss
    torch.manual_seed(0)
    torch.testing.assert_close(model(**batch, shift_labels=shifted).loss, expected)
    model.eval()
