"""Stage-1 learning curve: zero-shot AUC of condition judgments vs instructions seen, with and without stage 0.

    python bench/learning_curve.py --data outputs/demo/data --stage0 outputs/demo/stage0 \
        [--seeds 0 1 2] [--checkpoints 200 400 800 1600] [--attributes autism,adhd,depression,anxiety] \
        [--variants stage0,random] [--evidence_positions answer,graph] [--answer_priors removed,llm]
        [--window_lengths 0,100] [--forms held_out]
        [--out outputs/learning_curve]

Each run is `train.py --stage align` (SmolLM2 frozen) on the questions about `--attributes` (all three
paradigms, as the recipe, or the `--train_paradigms` given); a callback pauses training at each
checkpoint (instructions seen = steps x batch) and scores the same zero-shot questions ("Does this
subject have ...? Yes/No", likelihood of each answer) on the unseen cohorts. Variants: `stage0` starts from the stage-0 encoder (frozen, as the recipe does),
`random` from a random encoder (trained); each with the evidence at each of `--evidence_positions` (train.py
`--evidence_position`), at the answer either deciding it (`--answer_priors removed`: the LLM's own margin between
the answer words removed, train.py `--evidence_decides_answer true`) or added to the LLM's margin (`llm`), and on
whole-scan FCNs or sliding windows (`--window_lengths`, train.py `--window_length`).
`--forms held_out` scores only questions in wording held out from training (whole frames
and terms of the question bank), `training` only the training wording, `all` both. Writes `learning_curve.json` and `learning_curve.md`
(mean +- s.d. over seeds of the mean AUC over attributes, and per attribute).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from transformers import TrainerCallback

from fcn_llm.cli import train
from datasets_scripts.attributes import load_registry
from fcn_llm.evaluation.data import ZERO_SHOT_SPLIT, load_evaluation_data
from fcn_llm.questions import NO, YES, Question, build_question
from fcn_llm.scoring import choice_log_likelihoods
from fcn_llm.training.precision import choose_precision, probe_capabilities

VARIANTS = ("stage0", "random")
NATIVE_BF16 = choose_precision(probe_capabilities()).bf16  # bf16 only where the hardware computes it


FORMS = ("all", "training", "held_out")
ANSWER_PRIORS = ("removed", "llm")


def judgment_questions(data, attributes: list[str], max_subjects: int, seed: int, forms: str = "all") -> list[Question]:
    """Zero-shot judgment questions about `attributes` in `forms` wording ("all", "training", "held_out": the
    rows' `held_out` column), at most `max_subjects` per attribute (seeded)."""
    if forms not in FORMS:
        raise ValueError(f"Unknown forms {forms!r}; choose from {FORMS}.")
    registry = load_registry()
    zero_shot = set(data.subjects["subject_id"].iloc[data.split_rows(ZERO_SHOT_SPLIT)])
    rows = data.instructions[(data.instructions["paradigm"] == "judgment") & data.instructions["attribute"].isin(attributes)]
    if forms != "all":
        if "held_out" not in rows.columns:
            raise ValueError(f"--forms {forms} needs instructions that record their form (a `held_out` column); "
                             "rebuild the set with build_instructions.py.")
        rows = rows[rows["held_out"].fillna(False).astype(bool) == (forms == "held_out")]
    questions = []
    rng = np.random.default_rng(seed)
    for key, group in rows.groupby("attribute"):
        group = group[[set(s) <= zero_shot for s in group["subject_ids"]]]
        group = group.iloc[rng.permutation(len(group))[:max_subjects]]
        questions += [build_question(row, registry[key]) for _, row in group.iterrows()]
    return questions


class ZeroShotAUCCallback(TrainerCallback):
    """Score `questions` when `instructions seen` reaches each checkpoint; `history` collects the AUCs."""

    def __init__(self, questions: list[Question], data, checkpoints: list[int]):
        self.questions, self.data, self.checkpoints = questions, data, sorted(checkpoints)
        self.history: list[dict] = []

    def evaluate(self, model, processor, seen: int) -> None:
        was_training = model.training
        model.eval()
        prompts = [processor.apply_chat_template(q.messages, add_generation_prompt=True, tokenize=False)
                   for q in self.questions]
        fcns = [[self.data.fcns[i] for i in self.data.rows(q.subject_ids)] for q in self.questions]
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=NATIVE_BF16):
            ll = choice_log_likelihoods(model, processor, prompts, fcns, [YES, NO], batch_size=16)
        model.train(was_training)
        scores = ll[:, 0] - ll[:, 1]
        aucs = {}
        for key in sorted({q.group[0] for q in self.questions}):
            idx = [i for i, q in enumerate(self.questions) if q.group[0] == key]
            y = np.array([self.questions[i].reference for i in idx])
            if 0 < y.sum() < len(y):
                aucs[key] = float(roc_auc_score(y, scores[idx]))
        entry = {"seen": seen, "mean_auc": float(np.mean(list(aucs.values()))), "auc": aucs,
                 "yes_rate": float((scores > 0).mean())}
        self.history.append(entry)
        print(f"[curve] {seen} instructions: mean AUC {entry['mean_auc']:.3f} {aucs} yes-rate {entry['yes_rate']:.2f}",
              flush=True)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.evaluate(model, processing_class, 0)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        seen = state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
        while self.checkpoints and seen >= self.checkpoints[0]:
            self.checkpoints.pop(0)
            self.evaluate(model, processing_class, seen)


def train_argv(args, variant: str, seed: int, out: Path, position: str = "answer", window_length: int = 0,
               prior: str = "removed") -> list[str]:
    """The `train.py` options of one curve run: `variant`'s encoder, the evidence at `position` (at the answer:
    with the LLM's answer `prior` removed or kept), and with `window_length` sliding-window FCNs
    (`args.window_stride` apart) for training."""
    windows = f"_window{window_length}" if window_length else ""
    kept = "_llmprior" if prior == "llm" else ""
    return [
        "--stage", args.stage, "--data_dir", args.data,
        "--output_dir", str(out / f"{variant}_{position}{kept}{windows}_seed{seed}"),
        "--evidence_position", position, "--evidence_decides_answer", str(prior == "removed").lower(),
        "--seed", str(seed), "--paradigms", args.train_paradigms, "--attributes", args.attributes, "--report_to", "none",
        "--per_device_train_batch_size", str(args.batch_size), "--max_steps", str(max(args.checkpoints) // args.batch_size),
        "--learning_rate", str(args.learning_rate), "--warmup_steps", "10", "--lr_scheduler_type", "constant_with_warmup",
        "--logging_steps", "25", "--save_strategy", "no", "--dataloader_num_workers", "0",
        "--auxiliary_loss_weight", str(args.auxiliary_loss_weight), "--balance_answers", str(args.balance_answers).lower(), "--disable_tqdm", "true",
        *(["--bf16", "true"] if NATIVE_BF16 else []),
        *([] if torch.cuda.is_available() else ["--use_cpu", "true"]),
        *(["--encoder_checkpoint", args.stage0] if variant == "stage0" else []),
        *(["--freeze_encoder", "true"] if variant == "stage0" and args.stage == "align" else []),
        *(["--lora", "true"] if args.lora else []),
        *(["--freeze_projector", "true"] if args.freeze_projector else []),
        "--evidence_lr_multiplier", str(args.evidence_lr_multiplier),
        "--fit_readout", args.fit_readout, "--evidence_per_paradigm", str(not args.shared_readout).lower(),
        *(["--window_length", str(window_length), "--window_stride", str(args.window_stride)] if window_length else []),
        *(["--backbone", args.backbone] if args.backbone else []),
    ]


def run_name(variant: str, position: str, window_length: int, positions: list[str], windows: list[int],
             prior: str = "removed", priors: tuple[str, ...] = ("removed",)) -> str:
    """The curve's row name: the variant, then the evidence position, the answer prior and the windows where
    those vary."""
    name = variant if positions == ["answer"] else f"{variant}, evidence at the {position}"
    if list(priors) != ["removed"] and position == "answer":
        name += ", the evidence decides the answer" if prior == "removed" else ", added to the LLM's answer margin"
    if windows != [0]:
        name += f", {window_length}-point windows" if window_length else ", whole scans"
    return name


def markdown(results: dict, checkpoints: list[int]) -> str:
    lines = ["| variant | " + " | ".join(f"{c}" for c in [0, *checkpoints]) + " |",
             "|---|" + "---|" * (len(checkpoints) + 1)]
    for variant, runs in results.items():
        cells = []
        for i in range(len(checkpoints) + 1):
            values = [run[i]["mean_auc"] for run in runs.values() if i < len(run)]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "–")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="outputs/demo/data")
    parser.add_argument("--stage0", default="outputs/demo/stage0")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--out", default="outputs/learning_curve")
    parser.add_argument("--attributes", default="autism,adhd,depression,anxiety")
    parser.add_argument("--variants", default="stage0,random")
    parser.add_argument("--evidence_positions", default="answer",
                        help="where the evidence enters, comma-separated: answer, graph (train.py --evidence_position)")
    parser.add_argument("--answer_priors", default="removed",
                        help="with the evidence at the answer, comma-separated: removed (the evidence decides the "
                             "answer, train.py --evidence_decides_answer true), llm (added to the LLM's margin)")
    parser.add_argument("--window_lengths", default="0",
                        help="comma-separated: 0 trains on whole-scan FCNs, L on L-point sliding windows (train.py "
                             "--window_length; the data must keep its time series)")
    parser.add_argument("--window_stride", type=int, default=20)
    parser.add_argument("--forms", choices=FORMS, default="all", help="which wording of the questions is scored")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[200, 400, 800, 1600])
    parser.add_argument("--eval_subjects", type=int, default=60, help="zero-shot questions per attribute")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--auxiliary_loss_weight", type=float, default=0.5)
    parser.add_argument("--stage", choices=("align", "joint"), default="align",
                        help="align: LLM frozen (stage 1); joint: LLM trained too (stage 2 without stage 1)")
    parser.add_argument("--lora", action="store_true", help="joint stage with LoRA")
    parser.add_argument("--balance_answers", action="store_true", help="train on Yes/No-balanced judgments")
    parser.add_argument("--freeze_projector", action="store_true", help="stage 1 with the projector fixed")
    parser.add_argument("--evidence_lr_multiplier", type=float, default=10.0)
    parser.add_argument("--train_paradigms", default="predictive,judgment,comparative",
                        help="paradigms trained on (comma-separated; default all three, as the recipe; the curve "
                             "always scores judgments)")
    parser.add_argument("--shared_readout", action="store_true",
                        help="one evidence readout for all paradigms (train.py --evidence_per_paradigm false)")
    parser.add_argument("--fit_readout", default="all",
                        help="which heads' evidence columns are written before training (train.py --fit_readout)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"Unknown variant(s) {sorted(unknown)}; choose from {VARIANTS}.")
    priors = tuple(p.strip() for p in args.answer_priors.split(","))
    if set(priors) - set(ANSWER_PRIORS):
        raise ValueError(f"Unknown answer prior(s) {sorted(set(priors) - set(ANSWER_PRIORS))}; choose from {ANSWER_PRIORS}.")
    if "stage0" in variants and not (Path(args.stage0) / "model.safetensors").exists():
        raise FileNotFoundError(f"{args.stage0} has no stage-0 encoder; run `train.py --stage encoder` first.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_evaluation_data(args.data)
    attributes = [a.strip() for a in args.attributes.split(",")]
    questions = judgment_questions(data, attributes, args.eval_subjects, seed=0, forms=args.forms)
    positions = [p.strip() for p in args.evidence_positions.split(",")]
    print(f"[curve] {len(questions)} zero-shot judgment questions about {attributes}", flush=True)
    results: dict[str, dict[int, list]] = {}
    start = time.perf_counter()
    windows = [int(w) for w in args.window_lengths.split(",")]
    for variant, position, prior, window_length in itertools.product(variants, positions, priors, windows):
        if position != "answer" and prior != priors[0]:
            continue  # the answer prior exists only where the evidence enters at the answer
        name = run_name(variant, position, window_length, positions, windows, prior, priors)
        for seed in args.seeds:
            curve = ZeroShotAUCCallback(questions, data, args.checkpoints)
            train.main(train_argv(args, variant, seed, out, position, window_length, prior), callbacks=[curve])
            results.setdefault(name, {})[seed] = curve.history
        (out / "learning_curve.json").write_text(json.dumps(
            {"settings": vars(args), "questions": len(questions), "results": results}, indent=2))
    table = markdown(results, args.checkpoints)
    (out / "learning_curve.md").write_text(
        f"# Stage-1 learning curve (zero-shot mean AUC over {attributes}, {args.forms} wording; columns: instructions "
        f"seen)\n\n{table}\n")
    print(table)
    print(f"[curve] {time.perf_counter() - start:.0f}s")
    return results


if __name__ == "__main__":
    main()
