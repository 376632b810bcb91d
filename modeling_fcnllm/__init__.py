"""FCN-LLM model package: configs, the multi-scale FCN encoder (alone or with attribute heads) and the LLaVA-style causal LM.

Importing it registers the classes with the Auto classes, in-process (`AutoConfig.register`, ...)
and for remote code (`register_for_auto_class`, so `save_pretrained` writes `auto_map` and copies
`configuration_fcnllm.py` and `modeling_fcnllm.py`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_fcnllm import AttributeHeadConfig, FCNEncoderConfig, FCNLLMConfig
from .modeling_fcnllm import (
    FCNAttributePredictionOutput,
    FCNEncoderForAttributePrediction,
    FCNEncoderModel,
    FCNEncoderOutput,
    FCNEncoderPreTrainedModel,
    FCNLLMCausalLMOutputWithPast,
    FCNLLMForCausalLM,
    FCNLLMModel,
    FCNLLMModelOutputWithPast,
    FCNLLMPreTrainedModel,
    FCNProjector,
    GraphAttributeHeads,
)

AutoConfig.register(FCNEncoderConfig.model_type, FCNEncoderConfig, exist_ok=True)
AutoModel.register(FCNEncoderConfig, FCNEncoderModel, exist_ok=True)
AutoConfig.register(FCNLLMConfig.model_type, FCNLLMConfig, exist_ok=True)
AutoModel.register(FCNLLMConfig, FCNLLMModel, exist_ok=True)
AutoModelForCausalLM.register(FCNLLMConfig, FCNLLMForCausalLM, exist_ok=True)
FCNLLMConfig.register_for_auto_class("AutoConfig")
FCNLLMModel.register_for_auto_class("AutoModel")
FCNLLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "AttributeHeadConfig",
    "FCNAttributePredictionOutput",
    "FCNEncoderConfig",
    "FCNEncoderForAttributePrediction",
    "FCNEncoderModel",
    "FCNEncoderOutput",
    "FCNEncoderPreTrainedModel",
    "FCNLLMCausalLMOutputWithPast",
    "FCNLLMConfig",
    "FCNLLMForCausalLM",
    "FCNLLMModel",
    "FCNLLMModelOutputWithPast",
    "FCNLLMPreTrainedModel",
    "FCNProjector",
    "GraphAttributeHeads",
]
