"""transformers' own conformance tests (`ModelTesterMixin`, `ConfigTester`) on `FCNLLMModel` and `FCNLLMForCausalLM`.

Built as `tests/models/llava/test_modeling_llava.py` builds LLaVA's: a model tester makes a tiny config (a
2-layer Llama text model, a 6-ROI encoder) and inputs (`input_ids` with G `<graph>` tokens per row,
`graph_values` `(batch, N, N)`), and every mixin test that cannot apply is skipped with its reason. The mixin
is loaded from the installed transformers' sdist at test time (`tests/hf_test_suite.py`); without network the
module is skipped.
"""

from __future__ import annotations

import tempfile
import unittest
from unittest import mock

import pytest
import torch
from transformers.modeling_utils import AttentionInterface
from transformers.models.auto import modeling_auto

from modeling_fcnllm import FCNLLMConfig, FCNLLMForCausalLM, FCNLLMModel
from tests.hf_test_suite import SuiteUnavailable, load

try:
    _suite = load()
except SuiteUnavailable as error:
    pytest.skip(f"transformers' conformance tests are unavailable: {error}", allow_module_level=True)

from parameterized import parameterized  # noqa: E402  (a dev requirement; `load` says when it is missing)

ModelTesterMixin = _suite.modeling.ModelTesterMixin
ConfigTester = _suite.configuration.ConfigTester
ids_tensor = _suite.modeling.ids_tensor

GRAPH_TOKEN_ID = 3
NUM_ROIS = 6


def random_fcns(num: int, num_rois: int = NUM_ROIS) -> torch.Tensor:
    """`(num, N, N)` correlation matrices of random time series."""
    series = torch.randn(num, 3 * num_rois, num_rois)
    series = series - series.mean(1, keepdim=True)
    cov = series.transpose(1, 2) @ series
    std = cov.diagonal(dim1=1, dim2=2).sqrt()
    return cov / (std[:, :, None] * std[:, None, :])


class FCNLLMModelTester:
    # 7 rows: `test_eager_matches_sdpa_inference` pads a smaller batch to 7 rows of random ids, which breaks
    # the one-FCN-per-G-placeholders pairing
    def __init__(self, parent, batch_size=7, text_seq_length=7, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = is_training
        self.text_config = {
            "model_type": "llama",
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "initializer_range": 0.02,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "tie_word_embeddings": True,
        }
        self.encoder_config = {
            "num_rois": NUM_ROIS,
            "network_assignment": [0, 0, 1, 1, 2, 2],
            "hidden_size": 16,
            "num_layers": 2,
            "num_attention_heads": 2,
            "num_roi_tokens": 2,
            "edge_density": 0.4,
            "dropout": 0.0,
        }
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.hidden_size = self.text_config["hidden_size"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.vocab_size = self.text_config["vocab_size"]
        self.pad_token_id = self.text_config["pad_token_id"]
        self.graph_seq_length = self.get_config().graph_seq_length  # 2 ROI + 3 network + 1 global tokens
        self.seq_length = text_seq_length + self.graph_seq_length
        self.encoder_seq_length = self.seq_length

    def get_config(self) -> FCNLLMConfig:
        return FCNLLMConfig(
            text_config=self.text_config,
            encoder_config=self.encoder_config,
            graph_token_id=GRAPH_TOKEN_ID,
            instruction_rank=8,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - GRAPH_TOKEN_ID - 1)
        input_ids = input_ids + GRAPH_TOKEN_ID + 1  # never a <graph> id in the text
        input_ids[:, 1 : 1 + self.graph_seq_length] = GRAPH_TOKEN_ID  # one FCN per row, after a first token
        inputs_dict = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "graph_values": random_fcns(self.batch_size),
        }
        return config, inputs_dict


class FCNLLMModelTest(ModelTesterMixin, unittest.TestCase):
    """`ModelTesterMixin` for `FCNLLMModel` and `FCNLLMForCausalLM`."""

    all_model_classes = (FCNLLMModel, FCNLLMForCausalLM)
    additional_model_inputs = ["graph_values"]  # `<graph>` tokens in input_ids need their FCNs
    _is_composite = True
    # `_init_weights` must initialise every parameter and buffer; the mixin runs this check only for models it
    # dates to 2023 or later by a copyright line, which modeling_fcnllm.py does not carry
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = FCNLLMModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=FCNLLMConfig,
            has_text_modality=False,
            common_properties=["graph_token_id", "graph_seq_length"],
        )

    @classmethod
    def setUpClass(cls):
        # The mixin decides what a class is by its name in transformers' model mappings (a base model gets no
        # `labels` and no training tests, a causal LM gets `labels` and the shift-labels test); `AutoModel.register`
        # does not add to those name tables, so they are extended here, for this class's tests only.
        cls._mappings = [
            mock.patch.dict(modeling_auto.MODEL_MAPPING_NAMES, {FCNLLMConfig.model_type: FCNLLMModel.__name__}),
            mock.patch.dict(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                            {FCNLLMConfig.model_type: FCNLLMForCausalLM.__name__}),
        ]
        for mapping in cls._mappings:
            mapping.start()

    @classmethod
    def tearDownClass(cls):
        for mapping in cls._mappings:
            mapping.stop()

    def test_config(self):
        self.config_tester.run_common_tests()

    # --- mixin tests that do not apply, each with its reason ---------------------------------------------
    @unittest.skip(
        "The transformers sdist ships no tests/generation/test_utils.py, so GenerationTesterMixin cannot be loaded "
        "(tests/hf_test_suite.py stands in an empty class); generate is tested in test_modeling_fcnllm.py"
    )
    def test_generation_tester_mixin_inheritance(self):
        pass

    @unittest.skip(
        "FCNLLMModel.forward finds the <graph> placeholders in input_ids only and raises for graph_values with "
        "inputs_embeds (LLaVA compares inputs_embeds with the placeholder's embedding); a change to the forward"
    )
    def test_inputs_embeds(self):
        pass

    @unittest.skip(
        "As test_inputs_embeds: graph_values with inputs_embeds and no input_ids raise in FCNLLMModel.forward"
    )
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @parameterized.expand([("linear",), ("dynamic",), ("yarn",)])
    @unittest.skip(
        "Calls FCNLLMModel(input_ids) with random ids over the whole vocabulary, so <graph> ids without "
        "graph_values, which the model rejects; RoPE scaling is the text model's own (transformers' Llama tests)"
    )
    def test_model_rope_scaling_from_config(self, scaling_type):
        pass

    # --- the flags the model claims, exercised -----------------------------------------------------------
    @parameterized.expand([("non_reentrant", False), ("reentrant", True)])
    def test_gradient_checkpointing_gives_the_same_loss_and_gradients(self, _, use_reentrant):
        """`supports_gradient_checkpointing`: a training step with checkpointing recomputes each decoder layer in the
        backward pass and gives the loss and every gradient (FCN encoder, projector and conditioning included) of
        a step without it."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        torch.manual_seed(0)
        model = FCNLLMForCausalLM(config).train()
        with torch.no_grad():  # conditioning weights as after training, so that its parameters get gradients too
            conditioning = model.model.instruction_conditioning
            conditioning.query.normal_()
            conditioning.out.weight.normal_(std=0.5)
        labels = inputs["input_ids"].masked_fill(torch.arange(self.model_tester.seq_length) < 4, -100)

        def step():
            model.zero_grad(set_to_none=True)
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

        plain_loss, plain_grads = step()
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
        self.assertTrue(model.is_activation_checkpointing)
        layer_calls = []
        hook = model.language_model.layers[0].self_attn.register_forward_pre_hook(lambda *args: layer_calls.append(1))
        checkpointed_loss, checkpointed_grads = step()
        hook.remove()

        self.assertEqual(len(layer_calls), 2, "with checkpointing a decoder layer runs again in the backward pass")
        torch.testing.assert_close(checkpointed_loss, plain_loss)
        self.assertEqual(checkpointed_grads.keys(), plain_grads.keys())
        for name, grad in plain_grads.items():
            torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)
        for prefix in ("model.graph_encoder.", "model.graph_projector.", "model.instruction_conditioning."):
            self.assertTrue(any(plain_grads[n].abs().sum() > 0 for n in plain_grads if n.startswith(prefix)), prefix)

    def _check_attention_implementation(self, implementation: str) -> None:
        """Load with `attn_implementation=implementation`: the config and every decoder layer say so, each layer
        calls that attention function once per forward, and the logits are the eager model's."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        torch.manual_seed(0)
        model = FCNLLMForCausalLM(config).eval()
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            eager = FCNLLMForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
            loaded = FCNLLMForCausalLM.from_pretrained(folder, attn_implementation=implementation).eval()
        self.assertEqual(loaded.config._attn_implementation, implementation)
        self.assertEqual(loaded.language_model.config._attn_implementation, implementation)
        calls = []
        attention = AttentionInterface._global_mapping[implementation]

        def counted(*args, **kwargs):
            calls.append(implementation)
            return attention(*args, **kwargs)

        with torch.no_grad(), mock.patch.dict(AttentionInterface._global_mapping, {implementation: counted}):
            logits = loaded(**inputs).logits
        self.assertEqual(len(calls), self.model_tester.num_hidden_layers)
        with torch.no_grad():
            torch.testing.assert_close(logits, eager(**inputs).logits, atol=1e-5, rtol=1e-4)

    def test_sdpa_is_honoured(self):
        """`_supports_sdpa`: the mixin's composite dispatch test looks for a vision/audio tower and skips."""
        self._check_attention_implementation("sdpa")

    @pytest.mark.slow
    def test_flex_attention_is_honoured(self):
        """`_supports_flex_attn` (inference: torch's flex attention has no CPU backward; the mixin's own flex test
        needs an accelerator). Compiling the flex kernel for the CPU takes about a quarter of a minute."""
        self._check_attention_implementation("flex_attention")
