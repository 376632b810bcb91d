import pytest

from modeling_fcnllm import FCNEncoderConfig, FCNLLMConfig
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
