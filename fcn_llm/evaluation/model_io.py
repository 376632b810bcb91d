"""Loading an FCN-LLM checkpoint folder (model + processor) with clear errors for other folders."""

from __future__ import annotations

import json
from pathlib import Path

from modeling_fcnllm import FCNLLMConfig, FCNLLMForCausalLM
from processing import FCNProcessor


class ModelFormatError(ValueError):
    """The folder is not a saved FCN-LLM."""


def check_model_dir(model_dir: str | Path) -> dict:
    """The folder's config.json as a dict; ModelFormatError if it is not an FCN-LLM checkpoint."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise ModelFormatError(f"{model_dir} is not a folder; give a folder saved by FCNLLMForCausalLM.save_pretrained.")
    if not config_path.is_file():
        raise ModelFormatError(f"{model_dir} has no config.json, so it is not a saved model folder.")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelFormatError(f"{config_path} is not valid JSON: {err}.") from None
    found = config.get("model_type")
    if found != FCNLLMConfig.model_type:
        raise ModelFormatError(f"{model_dir} holds a model of type {found!r}, not an FCN-LLM (model_type "
                               f"{FCNLLMConfig.model_type!r}); give a folder written by train.py or save_pretrained.")
    return config


def load_model_and_processor(model_dir: str | Path, dtype=None) -> tuple[FCNLLMForCausalLM, FCNProcessor]:
    """The model (eval mode) and its processor (saved one, else built from the folder's tokenizer)."""
    check_model_dir(model_dir)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = FCNLLMForCausalLM.from_pretrained(str(model_dir), **kwargs).eval()
    if (Path(model_dir) / "processor_config.json").is_file():
        processor = FCNProcessor.from_pretrained(str(model_dir))
    else:
        from transformers import AutoTokenizer

        processor = FCNProcessor.from_model_config(AutoTokenizer.from_pretrained(str(model_dir)), model.config)
    if processor.graph_token_id != model.config.graph_token_id:
        raise ModelFormatError(f"{model_dir}: the processor maps <graph> to id {processor.graph_token_id} but the "
                               f"model expects {model.config.graph_token_id}.")
    return model, processor
