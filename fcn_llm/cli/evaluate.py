"""Zero-shot evaluation of FCN-LLM on unseen cohorts, next to supervised baselines and the oracle.

    python evaluate_zero_shot.py --model DIR --data DIR --out DIR [--max_subjects N] [--batch_size B]
        [--parsability_questions N] [--consistency_subjects N] [--no_real_data]

Writes results.json, results.md and PNG plots (ROC per binary attribute, predicted vs true per
continuous attribute) into --out and prints the table; results.json/results.md also report whether
FCN-LLM's greedy answers are in the asked form, whether its answers to one subject agree across
paradigms, and its answers on the real HCP FCNs of its atlas, and name attributes it was never trained
on. See `evaluation/runner.py` for how subjects are split between the in-domain baseline and the evaluation.
"""

from __future__ import annotations

import argparse
import sys

from fcn_llm.evaluation.data import DatasetFormatError
from fcn_llm.evaluation.known_attributes import untrained_note
from fcn_llm.evaluation.model_io import ModelFormatError
from fcn_llm.evaluation.report import METHODS
from fcn_llm.evaluation.runner import run_zero_shot_evaluation
from fcn_llm.threads import enable_adaptive_threads

__all__ = ["run_zero_shot_evaluation", "main"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="FCN-LLM folder (save_pretrained / train.py output)")
    parser.add_argument("--data", required=True, help="instruction-set folder (build_instructions.py output)")
    parser.add_argument("--out", required=True, help="output folder for results.json, results.md and plots")
    parser.add_argument("--max_subjects", type=int, default=None, help="cap on evaluated zero-shot subjects")
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per forward pass")
    parser.add_argument("--max_new_tokens", type=int, default=8, help="generation length for numeric answers")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--in_domain_fraction", type=float, default=0.2)
    parser.add_argument("--encoder_epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere")
    parser.add_argument("--no_plots", action="store_true")
    parser.add_argument("--parsability_questions", type=int, default=200,
                        help="scored-choice zero-shot questions also answered by greedy generation for the "
                             "parsability report (the generated numbers always count); 0: numbers only")
    parser.add_argument("--consistency_subjects", type=int, default=8,
                        help="evaluated subjects asked the consistency report's questions; 0: no report")
    parser.add_argument("--no_real_data", action="store_true",
                        help="skip the sanity report on brainspace's real HCP FCNs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    enable_adaptive_threads()
    if args.precision == "auto":
        from fcn_llm.training.precision import choose_precision, probe_capabilities

        bf16 = choose_precision(probe_capabilities()).bf16
    else:
        bf16 = args.precision == "bf16"
    try:
        report = run_zero_shot_evaluation(
            args.model, args.data, args.out, max_subjects=args.max_subjects, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, methods=args.methods, in_domain_fraction=args.in_domain_fraction,
            encoder_epochs=args.encoder_epochs, seed=args.seed, bf16=bf16, plots=not args.no_plots,
            parsability_questions=args.parsability_questions, consistency_subjects=args.consistency_subjects,
            real_data=not args.no_real_data)
    except (DatasetFormatError, ModelFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if report.get("untrained_attributes"):
        print(f"warning: {untrained_note(report['untrained_attributes'], report['known_attributes'])}", file=sys.stderr)
    print(report["table"])
    print(f"wrote {', '.join(report['files'][:2])} and {len(report['files']) - 2} plot(s); "
          f"{report['timings']['total']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
