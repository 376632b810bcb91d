"""The suite's summary: flat keys with targets, `results.json` and the markdown table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Key:
    """One summary figure: where it comes from in the details, and its target if it has one."""

    name: str
    what: str
    get: Callable[[Mapping], object]
    target: str = ""
    met: Callable[[float], bool] | None = None
    fmt: str = "{:.3g}"


def _get(*path):
    def read(details: Mapping):
        node = details
        for step in path:
            node = node[step]
        return node

    return read


KEYS: list[Key] = [
    Key("overhead_ratio_stage1", "stage-1 step, FCN-LLM / bare SmolLM2-135M, same tokens",
        _get("overhead", "default", "stage1", "ratio")),
    Key("overhead_ratio_stage2", "stage-2 step, FCN-LLM / bare SmolLM2-135M, same tokens",
        _get("overhead", "default", "stage2", "ratio"), "<= 1.10", lambda v: v <= 1.10),
    Key("overhead_ratio_stage1_tiny", "stage-1 step, FCN-LLM / bare tiny Llama (width 64, 2 layers)",
        _get("overhead", "tiny", "stage1", "ratio")),
    Key("overhead_ratio_stage2_tiny", "stage-2 step, FCN-LLM / bare tiny Llama",
        _get("overhead", "tiny", "stage2", "ratio")),
    Key("step_ms_stage2", "stage-2 step ms, FCN-LLM (SmolLM2-135M, batch 8)",
        _get("overhead", "default", "stage2", "fcn_llm", "median_ms"), fmt="{:.0f}"),
    Key("encoder_share_stage2", "encoder + projector fwd+bwd / FCN-LLM stage-2 step",
        _get("overhead", "default", "stage2", "encoder_share")),
    Key("encoder_graphs_per_s_dense_100", "encoder fwd+bwd graphs/s, dense layers, N=100, batch 32",
        _get("encoder", "per_rois", 100, "dense_graphs_per_s"), fmt="{:.0f}"),
    Key("encoder_sparse_over_dense_100", "sparse GraphConv / dense DenseGraphConv encoder time, N=100",
        _get("encoder", "per_rois", 100, "sparse_over_dense"), "> 1 (dense default)", lambda v: v > 1),
    Key("encoder_sparse_over_dense_200", "the same, N=200", _get("encoder", "per_rois", 200, "sparse_over_dense")),
    Key("encoder_sparse_over_dense_400", "the same, N=400", _get("encoder", "per_rois", 400, "sparse_over_dense")),
    Key("encoder_exponent_dense", "fitted k of cost ~ N^k, dense", _get("encoder", "dense_exponent")),
    Key("encoder_exponent_sparse", "fitted k of cost ~ N^k, sparse", _get("encoder", "sparse_exponent")),
    Key("connectome_speedup_vs_nilearn", "Pearson, nilearn EmpiricalCovariance / project, 1,000 x T=200 x N=200",
        _get("connectome", "pearson", "speedup"), ">= 10", lambda v: v >= 10),
    Key("connectome_speedup_ledoit_wolf", "Ledoit-Wolf correlation, nilearn default / project",
        _get("connectome", "ledoit_wolf", "speedup"), ">= 3", lambda v: v >= 3),
    Key("connectome_speedup_partial", "partial correlation (Ledoit-Wolf), nilearn / project",
        _get("connectome", "partial", "speedup")),
    Key("connectome_speedup_tangent", "tangent (Ledoit-Wolf), nilearn / project",
        _get("connectome", "tangent", "speedup")),
    Key("connectome_max_abs_difference", "largest |project - nilearn| over all comparisons",
        lambda d: max(v["max_abs_difference"] for v in d["connectome"].values()
                      if isinstance(v, dict) and "max_abs_difference" in v),
        "<= 1e-5", lambda v: v <= 1e-5, fmt="{:.1e}"),
    Key("eval_efficiency_vs_forward", "bare LLM forward over the prompts / whole zero-shot scoring",
        _get("answering", "efficiency", "efficiency"), ">= 0.8", lambda v: v >= 0.8),
    Key("eval_questions_per_s", "subject x question pairs scored per second (batch 8)",
        _get("answering", "efficiency", "subject_questions_per_s")),
    Key("generate_over_scoring_batch1", "generate() / scoring time, judgment question, batch 1",
        _get("answering", "generate", "batch_1", "generate_over_scoring")),
    Key("generate_over_scoring_batch64", "generate() / scoring time, judgment questions, batch 64",
        _get("answering", "generate", "batch_64", "generate_over_scoring")),
    Key("scoring_generate_first_token_agreement", "scored (no end-of-turn) = generated Yes/No, batch 64",
        _get("answering", "generate", "batch_64", "first_token_agreement"), "= 1", lambda v: v == 1.0),
    Key("scoring_generate_agreement", "scored (with end-of-turn, as evaluated) = generated Yes/No, batch 64",
        _get("answering", "generate", "batch_64", "agreement")),
    Key("graph_tokens", "G per FCN, default config (Schaefer-100 / Yeo-7)", _get("tokens", "graph_tokens"),
        fmt="{:d}"),
    Key("llava_image_tokens", "LLaVA-1.5 tokens per image", _get("tokens", "llava_image_tokens"), fmt="{:d}"),
    Key("comparative_prompt_tokens", "tokens of a comparative prompt (2 FCNs)",
        _get("tokens", "comparative", "prompt_tokens"), fmt="{:d}"),
    Key("comparative_prompt_tokens_llava", "the same prompt with 576 tokens per FCN",
        _get("tokens", "comparative", "prompt_tokens_with_llava_576"), fmt="{:d}"),
    Key("step_ratio_g32", "stage-1 step time, G=32 / G=16", _get("tokens", "step_by_g", "32", "ratio_to_first")),
    Key("step_ratio_g64", "stage-1 step time, G=64 / G=16", _get("tokens", "step_by_g", "64", "ratio_to_first")),
    Key("step_ratio_g128", "stage-1 step time, G=128 / G=16", _get("tokens", "step_by_g", "128", "ratio_to_first")),
    Key("peak_rss_gib_stage1", "peak RSS GiB, stage-1 step, SmolLM2-135M, batch 8",
        _get("memory", "runs", "stage1", "peak_rss_gib")),
    Key("peak_rss_gib_stage2", "peak RSS GiB, stage-2 full step, batch 8",
        _get("memory", "runs", "stage2", "peak_rss_gib")),
    Key("peak_rss_gib_stage2_lora", "peak RSS GiB, stage-2 LoRA step, batch 8",
        _get("memory", "runs", "stage2_lora", "peak_rss_gib")),
    Key("max_batch_24gib_stage2", "largest stage-2 batch in 24 GiB (linear extrapolation)",
        _get("memory", "stage2_24gib", "max_batch"), fmt="{:d}"),
    Key("bf16_speedup_or_slowdown", "stage-1 step time fp32 / bf16 autocast, this machine (> 1: bf16 faster)",
        _get("speed", "bf16", "bf16_speedup_or_slowdown")),
    Key("contended_slowdown", "stage-1 step next to a busy process / alone, the main job's setting (threads at the free cores)",
        lambda d: d["speed"]["contention"][d["speed"]["main_job_setting"]]["slowdown"], "<= 1.5",
        lambda v: v <= 1.5),
    Key("contended_slowdown_spinning", "the same with OpenMP's default (spinning) policy and fixed threads",
        lambda d: d["speed"]["contention"][d["speed"]["main_job_setting"].replace("adaptive", "default")]["slowdown"]),
    Key("contended_slowdown_passive", "the same with OMP_WAIT_POLICY=PASSIVE and fixed threads",
        lambda d: d["speed"]["contention"][d["speed"]["main_job_setting"].replace("adaptive", "PASSIVE")]["slowdown"]),
    Key("contended_step_over_passive", "the main job's contended step time / PASSIVE's (< 1: faster when contended)",
        lambda d: (d["speed"]["contention"][d["speed"]["main_job_setting"]]["contended_s"]
                   / d["speed"]["contention"][d["speed"]["main_job_setting"].replace("adaptive", "PASSIVE")]["contended_s"])),
    Key("padding_fraction_train", "padding share of stage-1/2 batch tokens, train.py's default random batches",
        _get("padding", "train", "random"), "< 0.10", lambda v: v < 0.10),
    Key("padding_fraction_train_group_by_length", "the same with --train_sampling_strategy group_by_length",
        _get("padding", "train", "group_by_length")),
    Key("padding_fraction_eval", "padding share of zero-shot scoring batch tokens, length-sorted",
        _get("padding", "eval", "length_sorted"), "< 0.10", lambda v: v < 0.10),
    Key("padding_fraction_eval_in_order", "the same in question order", _get("padding", "eval", "in_order")),
    Key("demo_minutes", "the last `make demo`'s recipe time, minutes (its timings.json)",
        _get("speed", "demo", "minutes"), "<= 20", lambda v: v <= 20, fmt="{:.1f}"),
    Key("loader_to_step_ratio", "collator + FCN lookup samples/s / stage-2 step samples/s",
        _get("pipeline", "ratio"), ">= 5", lambda v: v >= 5),
    Key("loader_samples_per_s", "collator + FCN lookup samples/s", _get("pipeline", "loader_samples_per_s"),
        fmt="{:.0f}"),
]


def summarize(details: Mapping) -> dict:
    """Flat `{key: value}` of every KEY whose section ran (others are left out)."""
    out = {}
    for key in KEYS:
        try:
            value = key.get(details)
        except (KeyError, TypeError, IndexError):
            continue
        out[key.name] = value
    return out


def _format(key: Key, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    try:
        return key.fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def targets_met(summary: Mapping) -> dict[str, bool]:
    """key -> whether its target is met, for the keys that have a target and a value."""
    out = {}
    for key in KEYS:
        value = summary.get(key.name)
        if key.met is not None and isinstance(value, (int, float)) and not math.isnan(value):
            out[key.name] = bool(key.met(value))
    return out


def markdown_table(summary: Mapping) -> str:
    """| key | value | target | met | what | for the keys in `summary`."""
    met = targets_met(summary)
    lines = ["| key | value | target | met | what |", "| --- | --- | --- | --- | --- |"]
    for key in KEYS:
        if key.name not in summary:
            continue
        mark = {True: "yes", False: "**no**"}.get(met.get(key.name), "")
        lines.append(f"| `{key.name}` | {_format(key, summary[key.name])} | {key.target} | {mark} | {key.what} |")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def write_results(out_dir: str | Path, summary: Mapping, details: Mapping, machine: Mapping, notes: list[str]) -> dict:
    """Write `results.json` (summary, targets, machine, details) and `results.md`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    met = targets_met(summary)
    payload = {"summary": summary, "targets_met": met, "machine": machine, "notes": notes, "details": details}
    (out_dir / "results.json").write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    header = ["# FCN-LLM benchmarks", "",
              f"`make bench` on {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores, torch threads "
              f"{machine.get('torch_threads', '?')}, load average {machine.get('load_before', '?')} before, "
              f"{machine.get('load_after', '?')} after), {machine.get('seconds', 0):.0f} s. Every ratio is of two "
              "things measured side by side in this run (medians of interleaved repeats); `bench/results.json` "
              "holds the absolute times and every repeat.", ""]
    body = [markdown_table(summary), ""]
    if notes:
        body += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    (out_dir / "results.md").write_text("\n".join(header + body))
    return {"json": str(out_dir / "results.json"), "markdown": str(out_dir / "results.md")}
