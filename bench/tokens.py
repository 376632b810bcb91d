"""Item 5: graph tokens. G per FCN for the default config next to LLaVA's 576 image tokens, the prompt
length of a comparative question, and the training-step time at G = 16, 32, 64, 128.

G = R ROI tokens + K subnetwork tokens + 1 whole-brain token (Schaefer-100 / Yeo-7: 8 + 7 + 1 = 16);
longer G comes from more ROI tokens (R = G - K - 1). The step is stage 1 (frozen LLM, encoder and
projector trained), every G timed in the same rounds on the same instructions. (Zero-shot AUC per G
needs trained models: `bench/learning_curve.py` and the recipe's ablations.)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from modeling_fcnllm import FCNLLMConfig
from fcn_llm.cli.train import freeze_for_stage

from .overhead import batch_stats, training_step
from .setup import DEFAULT_ATLAS, LLAVA_IMAGE_TOKENS, BenchData, Setup, collate, encoder_config, wrap
from .timing import interleaved


def default_graph_tokens(atlas: str = DEFAULT_ATLAS) -> int:
    """G of the default `FCNLLMConfig` with the default encoder on `atlas`."""
    return FCNLLMConfig(encoder_config=encoder_config(atlas)).graph_seq_length


def prompt_lengths(setup: Setup, data: BenchData) -> dict:
    """Tokens of a zero-shot comparative prompt (two FCNs), of which graph tokens, and with LLaVA's 576 per graph."""
    row = next(r for r in data.rows["zero_shot"] if r["paradigm"] == "comparative")
    messages = [m for m in row["messages"] if m["role"] != "assistant"]
    prompt = setup.processor.apply_chat_template(messages, add_generation_prompt=True)
    fcns = [data.lookup[s] for s in row["subject_ids"]]
    tokens = int(setup.processor(text=prompt, fcns=fcns)["input_ids"].shape[1])
    graph = len(fcns) * setup.processor.num_graph_tokens
    return {"question": messages[-1]["content"], "prompt_tokens": tokens, "graph_tokens": graph,
            "text_tokens": tokens - graph,
            "prompt_tokens_with_llava_576": tokens - graph + len(fcns) * LLAVA_IMAGE_TOKENS}


def step_time_vs_graph_tokens(base: Setup, data: BenchData, rows: Sequence[dict],
                              lengths: Sequence[int] = (16, 32, 64, 128), repeats: int = 3, warmup: int = 1) -> dict:
    """Stage-1 step ms per G (same rows, same LLM weights), and each one's ratio to the first G.

    The encoder is `base`'s with R = G - K - 1 ROI tokens.
    """
    fns, stats = {}, {}
    for g in lengths:
        config = copy.deepcopy(base.model.config.encoder_config)
        config.num_roi_tokens = g - config.num_networks * config.use_network_tokens - int(config.use_global_token)
        setup = wrap(f"G={g}", base.bare, base.processor.tokenizer, config)
        freeze_for_stage(setup.model, "align", freeze_encoder=False)
        setup.model.train()
        batch = collate(setup, data, rows)
        fns[g] = training_step(setup.model, batch)
        stats[g] = batch_stats(setup, batch)
    times = interleaved({str(g): fn for g, fn in fns.items()}, repeats=repeats, warmup=warmup)
    first = times[str(lengths[0])].median
    return {str(g): {**stats[g], "step": times[str(g)].as_dict(), "ratio_to_first": times[str(g)].median / first}
            for g in lengths}
