"""Which scales of the FCN encoder carry which attributes: the stage-0 encoder alone, trained on the training
split with some token scales switched off, scored on every zero-shot subject.

    python -m bench.scale_ablation --data outputs/demo/data --model outputs/demo/model [--seeds 0,1] [--out DIR]

Variants: all three scales, each one left out, each one alone; each with the stage-0 heads as shipped (the
closed-form linear stack of the network-level FCN and the token heads) and with the token heads alone (the
stack reads the 28 network-level values whatever tokens are on, so only the token heads answer the scale
question). Binary attributes: AUC; continuous: Pearson r; the oracle beside. Writes
`scale_ablation.json` and `scale_ablation.md` to `--out`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from datasets_scripts.attributes import load_registry
from fcn_llm.evaluation import baselines
from fcn_llm.evaluation.data import TRAIN_SPLIT, ZERO_SHOT_SPLIT, load_evaluation_data
from modeling_fcnllm import FCNLLMConfig

SCALES = ("roi", "network", "global")
VARIANTS = {
    "all scales": SCALES,
    "no ROI tokens": ("network", "global"),
    "no network tokens": ("roi", "global"),
    "no global token": ("roi", "network"),
    "ROI tokens only": ("roi",),
    "network tokens only": ("network",),
    "global token only": ("global",),
}


def with_scales(encoder_config, scales) -> object:
    """A copy of `encoder_config` with only `scales` ("roi", "network", "global") switched on."""
    unknown = set(scales) - set(SCALES)
    if unknown or not scales:
        raise ValueError(f"scales must be a non-empty subset of {SCALES}, got {tuple(scales)}.")
    config = copy.deepcopy(encoder_config)
    config.use_roi_tokens = "roi" in scales
    config.use_network_tokens = "network" in scales
    config.use_global_token = "global" in scales
    return config


def score(predictions: dict[str, np.ndarray], meta, attributes) -> dict[str, float]:
    """AUC (binary) or Pearson r (continuous) per attribute with labels in `meta`; NaN where one class is absent."""
    out = {}
    for attribute in attributes:
        if attribute.key not in predictions or attribute.kind not in ("binary", "continuous"):
            continue
        mask, y = baselines.known_targets(meta, attribute)
        p = np.asarray(predictions[attribute.key], dtype=float)[mask]
        if attribute.kind == "binary":
            out[attribute.key] = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
        else:
            out[attribute.key] = float(pearsonr(p, y)[0]) if len(y) > 2 and np.std(p) > 0 else float("nan")
    return out


def run(data_dir: str, model_dir: str, seeds=(0,), epochs: int = 40, log=print) -> dict:
    data = load_evaluation_data(data_dir)
    encoder_config = FCNLLMConfig.from_pretrained(model_dir).encoder_config
    registry = load_registry()
    train_rows, eval_rows = data.split_rows(TRAIN_SPLIT), data.split_rows(ZERO_SHOT_SPLIT)
    train_meta = data.subjects.iloc[train_rows].reset_index(drop=True)
    eval_meta = data.subjects.iloc[eval_rows].reset_index(drop=True)
    attributes = [a for a in registry.values() if a.key in data.subjects.columns]
    results = {"subjects": {"train": int(len(train_rows)), "zero_shot": int(len(eval_rows))}, "seeds": list(seeds),
               "variants": {}}
    oracle, _ = baselines.oracle(data.oracle, eval_rows, attributes)
    results["oracle"] = score(oracle, eval_meta, attributes)
    for name, scales in VARIANTS.items():
        config = with_scales(encoder_config, scales)
        for stack in (True, False):
            label = f"{name}, {'heads as shipped' if stack else 'token heads alone'}"
            per_seed = []
            for seed in seeds:
                start = time.perf_counter()
                preds, _ = baselines.encoder_supervised(config, data.fcns[train_rows], train_meta,
                                                        data.fcns[eval_rows], attributes, epochs=epochs, seed=seed,
                                                        linear_network_heads=stack)
                per_seed.append(score(preds, eval_meta, attributes))
                log(f"[scale ablation] {label}, seed {seed}: {time.perf_counter() - start:.1f}s")
            keys = per_seed[0]
            results["variants"][label] = {k: float(np.nanmean([s[k] for s in per_seed])) for k in keys}
    return results


def markdown(results: dict, registry=None) -> str:
    registry = registry or load_registry()
    keys = list(results["oracle"]) or sorted({k for v in results["variants"].values() for k in v})
    binary = [k for k in keys if registry[k].kind == "binary"]
    continuous = [k for k in keys if registry[k].kind == "continuous"]
    lines = [f"Zero-shot subjects: {results['subjects']['zero_shot']}; training subjects: "
             f"{results['subjects']['train']}; seeds {results['seeds']} (mean). Binary: AUC; continuous: Pearson r.", ""]
    header = ["variant", *binary, "mean AUC", *continuous, "mean r"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [*results["variants"].items(), ("oracle", results["oracle"])]
    for label, values in rows:
        cells = [label, *(f"{values.get(k, float('nan')):.3f}" for k in binary),
                 f"{np.nanmean([values.get(k, np.nan) for k in binary]):.3f}",
                 *(f"{values.get(k, float('nan')):.3f}" for k in continuous),
                 f"{np.nanmean([values.get(k, np.nan) for k in continuous]):.3f}" if continuous else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an instruction-set folder (build_instructions.py)")
    parser.add_argument("--model", required=True, help="a saved FCN-LLM (its encoder configuration is ablated)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows their mean")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", default="bench")
    args = parser.parse_args(argv)
    results = run(args.data, args.model, seeds=[int(s) for s in args.seeds.split(",")], epochs=args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_ablation.json").write_text(json.dumps(results, indent=2))
    (out / "scale_ablation.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
