import json

import pytest

from modeling_fcnllm import AttributeHeadConfig, FCNEncoderConfig, FCNLLMConfig
from tests.conftest import NETWORKS, NUM_ROIS, tiny_encoder_config, tiny_text_config


def test_default_config_builds_with_smollm2_text_config():
    config = FCNLLMConfig()
    assert config.text_config.model_type == "llama"
    assert config.text_config.hidden_size == 576
    assert config.graph_token_id < config.text_config.vocab_size
    # 8 ROI tokens + 1 network (no assignment) + 1 whole-brain token
    assert config.graph_seq_length == 10
    assert config.tie_word_embeddings


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_any_causal_lm_text_config_round_trips(family):
    config = FCNLLMConfig(
        text_config=tiny_text_config(family, 50).to_dict(), encoder_config=tiny_encoder_config(), graph_token_id=49
    )
    assert config.text_config.model_type == family
    reloaded = FCNLLMConfig(**config.to_dict())
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.encoder_config.network_assignment == NETWORKS


@pytest.mark.parametrize(
    "roi,network,glob,expected", [(True, True, True, 3 + 3 + 1), (True, False, False, 3), (False, True, False, 3), (False, False, True, 1)]
)
def test_graph_seq_length_follows_scales(roi, network, glob, expected):
    config = tiny_encoder_config(use_roi_tokens=roi, use_network_tokens=network, use_global_token=glob)
    assert config.graph_seq_length == expected


def test_bad_encoder_configs_name_the_problem():
    with pytest.raises(ValueError, match="network_assignment has 3 entries but num_rois=12"):
        FCNEncoderConfig(num_rois=NUM_ROIS, network_assignment=[0, 1, 2])
    with pytest.raises(ValueError, match="no gaps"):
        FCNEncoderConfig(num_rois=4, network_assignment=[0, 0, 2, 2])
    with pytest.raises(ValueError, match="All token scales are switched off"):
        tiny_encoder_config(use_roi_tokens=False, use_network_tokens=False, use_global_token=False)
    with pytest.raises(ValueError, match="gnn_type"):
        tiny_encoder_config(gnn_type="gatv2")
    with pytest.raises(ValueError, match="edge_density"):
        tiny_encoder_config(edge_density=0.0)


def test_graph_token_outside_vocabulary_is_an_error():
    with pytest.raises(ValueError, match="outside the text model's vocabulary"):
        FCNLLMConfig(text_config=tiny_text_config("llama", 50), encoder_config=tiny_encoder_config(), graph_token_id=50)


# --- attribute heads -------------------------------------------------------------------------------
@pytest.mark.parametrize("head, problem", [
    ({"key": "adhd", "kind": "ordinal", "num_outputs": 1}, "'adhd': unknown kind 'ordinal'"),
    ({"key": "adhd", "kind": "binary"}, "'adhd' lacks num_outputs"),
    ({"key": "adhd", "kind": "binary", "extra": 1}, "'adhd' lacks num_outputs"),  # not a proper subset of the keys
    ({"kind": "binary", "num_outputs": 1}, "None lacks key"),
    ({"key": "adhd", "kind": "binary", "num_outputs": 1, "class": ["a"]}, r"'adhd' has unknown fields \['class'\]"),
    ({"key": "adhd", "kind": "binary", "num_outputs": 2}, "'adhd': a binary head has num_outputs=1, got 2"),
    ({"key": "age", "kind": "continuous", "num_outputs": 3}, "'age': a continuous head has num_outputs=1, got 3"),
    ({"key": "sex", "kind": "categorical", "num_outputs": 1}, "'sex': a categorical head needs num_outputs >= 2"),
    ({"key": "sex", "kind": "categorical", "num_outputs": 2, "classes": ["F", "M", "X"]}, "'sex': 3 classes for num_outputs=2"),
    ({"key": "sex", "kind": "categorical", "num_outputs": 2, "classes": ["F", "F"]}, "'sex': classes must be distinct"),
    ({"key": "adhd", "kind": "binary", "num_outputs": 1, "classes": ["yes"]}, "'adhd': only categorical heads have classes"),
    ({"key": "adhd", "kind": "binary", "num_outputs": "1"}, "'adhd': num_outputs must be an int"),
    ({"key": "age", "kind": "continuous", "num_outputs": 1, "std": 0.0}, "'age': mean must be finite and std finite and > 0"),
    ({"key": "", "kind": "binary", "num_outputs": 1}, "key must be a non-empty string"),
    ({"key": "age", "kind": "continuous", "num_outputs": 1, "valid_range": [90, 5]}, r"'age': valid_range is .*lo < hi"),
    ({"key": "adhd", "kind": "binary", "num_outputs": 1, "valid_range": [0, 1]}, "'adhd': valid_range is a continuous head's"),
    ({"key": "age", "kind": "continuous", "num_outputs": 1, "decimals": 7}, r"'age': decimals must be an int in \[0, 3\]"),
    ("adhd", "is a mapping with key, kind and num_outputs"),
])
@pytest.mark.parametrize("config_class, field", [(FCNLLMConfig, "auxiliary_heads"), (FCNEncoderConfig, "attribute_heads")])
def test_bad_attribute_heads_name_the_head_and_the_problem(head, problem, config_class, field):
    heads = [{"key": "first", "kind": "binary", "num_outputs": 1}, head]
    with pytest.raises(ValueError, match=rf"{field}\[1\]: .*{problem}"):
        config_class(**{field: heads})


def test_attribute_head_keys_must_be_distinct():
    with pytest.raises(ValueError, match=r"auxiliary_heads keys must be distinct, got \['adhd', 'adhd'\]"):
        FCNLLMConfig(auxiliary_heads=[{"key": "adhd", "kind": "binary", "num_outputs": 1}] * 2)


def test_attribute_heads_are_typed_in_memory_and_plain_dicts_in_config_json(tmp_path):
    old = [{"key": "adhd", "kind": "binary", "num_outputs": 1},
           {"key": "sex", "kind": "categorical", "num_outputs": 2, "mean": 0.0, "std": 1.0, "classes": ["F", "M"]},
           {"key": "age", "kind": "continuous", "num_outputs": 1, "mean": 30.0, "std": 8.0}]
    config = FCNLLMConfig(auxiliary_heads=old, encoder_config=FCNEncoderConfig(attribute_heads=old[:1]))
    assert all(isinstance(h, AttributeHeadConfig) for h in config.auxiliary_heads)
    assert config.auxiliary_heads[2].std == 8.0 and config.auxiliary_heads[1].classes == ("F", "M")
    assert config.auxiliary_heads[2]["mean"] == 30.0 and config.auxiliary_heads[0].get("classes") == ()  # reads as a mapping
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auxiliary_heads"][1] == {"key": "sex", "kind": "categorical", "num_outputs": 2, "classes": ["F", "M"],
                                           "mean": 0.0, "std": 1.0, "valid_range": None, "decimals": 0}
    assert saved["encoder_config"]["attribute_heads"][0]["key"] == "adhd"
    loaded = FCNLLMConfig.from_pretrained(tmp_path)
    assert loaded.auxiliary_heads == config.auxiliary_heads
    assert loaded.encoder_config.attribute_heads == config.encoder_config.attribute_heads
