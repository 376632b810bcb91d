"""Command line: biomarker maps of an FCN-LLM's answers, and their check against the simulator's ground truth.

    python -m fcn_llm.interpret explain --model DIR --data DIR --attribute adhd --out DIR [--subjects N] [--pattern-subjects M]
    python -m fcn_llm.interpret ground-truth --model DIR --data DIR --out DIR [--subjects N] [--attributes a,b]

`explain` writes `OUT/<attribute>/`: report.html (self-contained), matrix/networks/network_effects/
glass_brain/rois PNGs of the gradient maps, pattern/pattern_networks PNGs of the activation pattern
(`--pattern-subjects`), summary.json and maps.npz. `ground-truth` does this for every attribute the
model was trained on and writes `OUT/ground_truth.json` (per attribute: planted-edge AUC and rank of the
planted network pair of the activation pattern, the gradient maps' under "gradient", the top pair's
family-wise permutation p and spread) and `OUT/ground_truth.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="FCN-LLM folder (save_pretrained / train.py output)")
    parser.add_argument("--data", required=True, help="instruction-set folder (datasets_scripts/build_instructions.py)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--subjects", type=int, default=16, help="questions per attribute (balanced sides)")
    parser.add_argument("--split", default="zero_shot", help="subjects' split: train, validation or zero_shot")
    parser.add_argument("--method", default="grad_x_input", choices=("grad_x_input", "integrated_gradients"))
    parser.add_argument("--steps", type=int, default=16, help="integrated-gradients steps")
    parser.add_argument("--paradigm", default="judgment", choices=("judgment", "predictive", "comparative"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pattern-subjects", type=int, default=200,
                        help="subjects of the split for the activation pattern of the answers (forward passes "
                             "only, no labels; 0: none)")
    parser.add_argument("--permutations", type=int, default=200,
                        help="margin shuffles of the activation pattern's network-pair permutation null")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared machine; raise on a free one)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fcn_llm.interpret", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    explain = sub.add_parser("explain", help="cohort attribution maps of one attribute's answers")
    _common(explain)
    explain.add_argument("--attribute", required=True)
    explain.add_argument("--answer", default="full", choices=("full", "first"),
                         help="score the full answer<|im_end|> (as evaluation does) or its first token only")
    explain.add_argument("--target-class", default=None, help="categorical attributes: the class explained")
    explain.add_argument("--threshold", type=float, default=None, help="continuous attributes: judgment cut-off")
    truth = sub.add_parser("ground-truth", help="maps of every trained attribute vs the simulator's planted effects")
    _common(truth)
    truth.add_argument("--attributes", default=None, help="comma-separated subset (default: all trained attributes)")
    truth.add_argument("--answer", default="first", choices=("full", "first"))
    truth.add_argument("--no-plots", action="store_true", help="only the JSON/markdown tables")
    return parser.parse_args(argv)


def _load(args):
    import torch

    from fcn_llm.evaluation.data import load_evaluation_data
    from fcn_llm.evaluation.model_io import load_model_and_processor

    torch.set_num_threads(max(1, args.threads))
    model, processor = load_model_and_processor(args.model)
    model = model.float()
    data = load_evaluation_data(args.data)
    return model, processor, data


def run_explain(args) -> dict:
    from .questions import check_attribute
    from .runner import explain_attribute, score_against_truth, trained_attributes, write_explain_outputs

    model, processor, data = _load(args)
    check_attribute(args.attribute, trained_attributes(model, data.subjects))  # fail before any work
    result = explain_attribute(
        model, processor, data.subjects, data.fcns, args.attribute, num_subjects=args.subjects, split=args.split,
        paradigm=args.paradigm, method=args.method, steps=args.steps, answer=args.answer,
        target_class=args.target_class, threshold=args.threshold, seed=args.seed,
        pattern_subjects=args.pattern_subjects, permutations=args.permutations)
    truth = score_against_truth(result, args.data) if result.question.num_graphs == 1 else None
    payload = write_explain_outputs(result, args.out, method=args.method, truth_row=truth)
    print(f"wrote {Path(args.out) / args.attribute}/report.html ({payload['subjects']} subjects, {result.seconds:.0f}s)")
    return payload


def run_ground_truth(args) -> dict:
    from .ground_truth import ground_truth_table, load_truth
    from .questions import check_attribute
    from .runner import explain_attribute, score_against_truth, trained_attributes, write_explain_outputs

    model, processor, data = _load(args)
    allowed = trained_attributes(model, data.subjects)
    keys = allowed if not args.attributes else [a.strip() for a in args.attributes.split(",") if a.strip()]
    for key in keys:
        check_attribute(key, allowed)
    load_truth(args.data)  # a folder without recorded planted effects: MissingTruthError, before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for key in keys:
        try:
            result = explain_attribute(model, processor, data.subjects, data.fcns, key, num_subjects=args.subjects,
                                       split=args.split, paradigm=args.paradigm if args.paradigm != "comparative"
                                       else "judgment", method=args.method, steps=args.steps, answer=args.answer,
                                       seed=args.seed, allowed=allowed, pattern_subjects=args.pattern_subjects,
                                       permutations=args.permutations)
        except ValueError as err:
            results[key] = {"attribute": key, "skipped": str(err)}
            print(f"  {key}: skipped ({err})")
            continue
        row = score_against_truth(result, args.data)
        row.update(question=result.question.text, seconds=round(result.seconds, 1),
                   mean_margin=float(result.maps[0].margins.mean()))
        ceiling = _data_ceiling(processor, data, key, result, args.data)
        if ceiling is not None:
            row["data_ceiling"] = ceiling
        results[key] = row
        if not args.no_plots:
            write_explain_outputs(result, out, method=args.method, truth_row=row)
        print(f"  {key} ({row['map']}): AUC {row.get('planted_edge_auc', float('nan')):.3f} rank "
              f"{row.get('planted_pair_rank')} top {'-'.join(row['top_pair'])} z {row['top_pair_z']:.2f} p(FWE) "
              f"{row.get('top_pair_p_fwe', float('nan')):.3f}; gradient AUC "
              f"{row['gradient'].get('planted_edge_auc', float('nan')):.3f} rank "
              f"{row['gradient'].get('planted_pair_rank')} ({result.seconds:.0f}s)")
    scored = [r for r in results.values() if "skipped" not in r]
    payload = {"model": str(args.model), "data": str(args.data), "split": args.split, "method": args.method,
               "answer": args.answer, "subjects_per_attribute": args.subjects, "pattern_subjects": args.pattern_subjects,
               "permutations": args.permutations,
               "map": "|activation pattern| (edge-margin correlation over subjects); gradient: mean |attribution|",
               "seconds": round(time.perf_counter() - start, 1), "attributes": results}
    (out / "ground_truth.json").write_text(json.dumps(payload, indent=2, default=float))
    table = ground_truth_table(scored)
    (out / "ground_truth.md").write_text(table + "\n")
    print(table)
    return payload


def _data_ceiling(processor, data, key: str, result, data_dir) -> dict | None:
    """The data's own class-difference map (train split, all subjects) scored like the attribution map."""
    import numpy as np

    from processing.processing_fcnllm import normalize_fcn

    from .ground_truth import class_difference_map, evaluate_map, planted_effect
    from .questions import check_attribute
    from .runner import side_labels

    subjects = data.subjects
    rows = np.flatnonzero(((subjects["split"] == "train") & subjects[key].notna()).to_numpy())
    if len(rows) < 4:
        return None
    attr = check_attribute(key)
    values = subjects[key].iloc[rows]
    cut = float(np.median(values.astype(float))) if attr.kind == "continuous" else None
    if attr.kind == "continuous" and result.question.paradigm == "judgment":
        cut = float(next((t for t in attr.thresholds if attr.format_threshold(t) in result.question.text), cut))
    labels = side_labels(attr, values, result.question, cut)
    try:
        importance = class_difference_map(normalize_fcn(data.fcns[rows].copy(), processor.normalization), labels)
        full = evaluate_map(importance, planted_effect(key, data_dir))
    except ValueError:
        return None
    return {k: full[k] for k in ("planted_edge_auc", "planted_pair_rank", "primary_pair_rank", "top_pair",
                                 "top_pair_z") if k in full} | {"subjects": int(len(rows))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    return run_explain(args) if args.command == "explain" else run_ground_truth(args)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
