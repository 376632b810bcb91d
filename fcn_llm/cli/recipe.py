"""The main job: the whole FCN-LLM recipe on the bundled default data and model.

    python recipe.py [--preset demo|full] [--out outputs/demo] [--skip_stage0] [--skip_stage1] [...]

1. build the default instruction set (simulated multi-site cohorts on real HCP connectivity);
2. stage 0: pre-train the FCN encoder on the seen cohorts' attributes;
3. stage 1: align (SmolLM2-135M-Instruct frozen; encoder + projector + auxiliary heads trained);
4. stage 2: joint fine-tuning, one epoch (full, or --lora);
5. zero-shot evaluation on unseen cohorts and sites, next to supervised baselines and the oracle;
6. `OUT/model/`: the final model + processor with remote code and a model card holding the real table.

`demo` is sized for a 2-core CPU (about 18-20 minutes with the install); `full` is the GPU configuration (more
subjects, longer alignment, bf16 on CUDA). Each stage is `train.py` on its settings file (`configs/stages/`)
with this run's folders, seed, backbone, preset sizes and precision, and the settings of the flags given
(`FLAG_SETTINGS`). Ablations: `--skip_stage0`, `--skip_stage1`,
`--no_aux_loss`, `--no_linear_heads`, `--no_comparative`, `--no_balance`, `--no_instruction_conditioning`, `--token_evidence`, `--graph_evidence`, `--llm_answer_prior`, `--shared_readout`, `--no_roi_tokens`, `--no_network_tokens`, `--no_global_token`.
`--window_length 100 [--window_stride 20]`: stage 1 on sliding-window FCNs (the data then keeps the training time series).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from fcn_llm.cli import train
from fcn_llm.evaluation.runner import run_zero_shot_evaluation
from modeling_fcnllm import FCNLLMForCausalLM
from processing import FCNProcessor
from fcn_llm.training.model_card import DEFAULT_BACKBONE_NOTE, base_model_id, write_model_card
from fcn_llm.threads import enable_adaptive_threads
from fcn_llm.training.precision import choose_precision, probe_capabilities

PRESETS = {
    # subjects to simulate, stage-1 steps, stage-2 instruction cap, evaluated zero-shot subjects, R ROI-level graph
    # tokens (the demo's 4: the encoder's heads read nothing from the ROI tokens beyond the network tokens,
    # docs/experiments.md, and each prompt is 4 tokens per FCN shorter than with the default 8)
    "demo": dict(subjects=1200, align_steps=400, joint_samples=800, batch_size=8, eval_subjects=90, eval_batch_size=16,
                 roi_tokens=4, bf16=True),
    "full": dict(subjects=6000, align_steps=3000, joint_samples=None, batch_size=16, eval_subjects=None, eval_batch_size=32,
                 roi_tokens=8, bf16=True),
}


STAGE_SETTINGS = Path(__file__).resolve().parents[2] / "configs" / "stages"  # encoder.yaml, align.yaml, joint.yaml
STAGE_FOLDERS = {"encoder": "stage0", "align": "stage1", "joint": "stage2"}
# The train.py settings each recipe flag changes, once: flag -> (the runs it applies to, {option: value}).
# Runs: "encoder" (stage 0), "align" (stage 1), "joint" (stage 2), "llm" (stages 1 and 2) and "new model"
# (every stage that builds a model: stages 0 and 1, and stage 2 without stage 1).
FLAG_SETTINGS = {
    "lora": ("joint", {"lora": True, "learning_rate": 2e-4}),
    "skip_stage0": ("align", {"freeze_encoder": False}),
    "no_aux_loss": ("align", {"auxiliary_loss_weight": 0.0}),
    "no_linear_heads": ("encoder", {"linear_network_heads": False}),
    "no_comparative": ("llm", {"paradigms": "predictive,judgment"}),
    "no_balance": ("llm", {"balance_answers": False}),
    "no_instruction_conditioning": ("new model", {"instruction_conditioning": False}),
    "token_evidence": ("new model", {"instruction_evidence": "tokens"}),
    "shared_readout": ("new model", {"evidence_per_paradigm": False}),
    "graph_evidence": ("new model", {"evidence_position": "graph"}),
    "llm_answer_prior": ("new model", {"evidence_decides_answer": False}),
    "no_roi_tokens": ("new model", {"use_roi_tokens": False}),
    "no_network_tokens": ("new model", {"use_network_tokens": False}),
    "no_global_token": ("new model", {"use_global_token": False}),
}


def build_parser() -> argparse.ArgumentParser:
    """recipe.py's options: the run's folders, seed, preset and backbone, and one flag per `FLAG_SETTINGS` row."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--atlas", default="schaefer100-7")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default=None, help="causal LM folder or Hub id (default: SmolLM2-135M)")
    parser.add_argument("--lora", action="store_true", help="stage 2 with LoRA instead of full fine-tuning")
    parser.add_argument("--skip_stage0", action="store_true", help="ablation: align from a random encoder")
    parser.add_argument("--skip_stage1", action="store_true", help="ablation: no alignment stage")
    parser.add_argument("--no_aux_loss", action="store_true", help="ablation: no auxiliary attribute loss")
    parser.add_argument("--no_linear_heads", action="store_true",
                        help="ablation: stage-0 heads without the closed-form linear stack (network-level FCN + token outputs)")
    parser.add_argument("--no_comparative", action="store_true", help="ablation: train without comparative questions")
    parser.add_argument("--no_instruction_conditioning", action="store_true",
                        help="ablation: no question-aware evidence token (the plain LLaVA splice)")
    parser.add_argument("--no_balance", action="store_true", help="ablation: Yes/No answers at their prevalence")
    parser.add_argument("--token_evidence", action="store_true",
                        help="ablation: the evidence token gates the pooled graph tokens instead of reading the attribute heads")
    parser.add_argument("--graph_evidence", action="store_true",
                        help="ablation: the evidence added to the graph tokens instead of where the answer starts")
    parser.add_argument("--llm_answer_prior", action="store_true",
                        help="ablation: the evidence added to the LLM's own answer margin instead of deciding it")
    parser.add_argument("--shared_readout", action="store_true",
                        help="ablation: one evidence readout for all paradigms instead of one per paradigm")
    parser.add_argument("--no_roi_tokens", action="store_true")
    parser.add_argument("--no_network_tokens", action="store_true")
    parser.add_argument("--no_global_token", action="store_true")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 autocast where the hardware computes bf16 natively (CUDA with bf16, CPUs "
                             "with AVX512_BF16 or AMX), fp32 elsewhere")
    parser.add_argument("--window_length", type=int, default=0,
                        help="stage 1 on sliding-window FCNs of this many time points, one window per instruction "
                             "(the paper's augmentation; stage 2 and evaluation read whole scans); 0: whole scans")
    parser.add_argument("--window_stride", type=int, default=20, help="time points between window starts")
    parser.add_argument("--rebuild_data", action="store_true", help="rebuild the instruction set even if present")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def phase(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def main(argv=None) -> dict:
    args = parse_args(argv)
    enable_adaptive_threads()
    preset = PRESETS[args.preset]
    out = Path(args.out)
    data_dir, stage2 = out / "data", out / STAGE_FOLDERS["joint"]
    timings: dict[str, float] = {}
    precision = pick_precision(args.precision, preset)
    print(f"precision: {'bf16 autocast' if precision['bf16'] else 'fp32'} ({precision['reason']})", flush=True)
    bf16 = precision["bf16"]

    start = phase(f"1/6 instruction set ({preset['subjects']} subjects, {args.atlas})")
    # windows need the training subjects' series; the seed's draws are the same with or without them
    needs_series = args.window_length and not (data_dir / "timeseries").is_dir()
    if args.rebuild_data or needs_series or not (data_dir / "README.md").exists():
        subprocess.run(
            [sys.executable, "-m", "datasets_scripts.build_instructions", "--out", str(data_dir),
             "--subjects", str(preset["subjects"]), "--atlas", args.atlas, "--seed", str(args.seed),
             *(["--keep-timeseries"] if args.window_length else [])],
            check=True,
        )
    timings["data"] = time.perf_counter() - start

    titles = {
        "encoder": "2/6 stage 0: FCN encoder pre-training",
        "align": f"3/6 stage 1: alignment ({preset['align_steps']} steps, LLM frozen)",
        "joint": "4/6 stage 2: joint fine-tuning (one epoch)" + (" with LoRA" if args.lora else ""),
    }
    for stage, argv in stage_runs(args, preset, out, bf16=bf16, cuda=torch.cuda.is_available()):
        start = phase(titles[stage])
        folder = train.main(argv)
        drop_checkpoints(folder)
        timings[STAGE_FOLDERS[stage]] = time.perf_counter() - start

    start = phase("5/6 zero-shot evaluation on unseen cohorts")
    report = run_zero_shot_evaluation(stage2, data_dir, out, max_subjects=preset["eval_subjects"], seed=args.seed,
                                      batch_size=preset["eval_batch_size"], bf16=bf16)
    timings["evaluation"] = time.perf_counter() - start

    start = phase("6/6 final model")
    final = out / "model"
    shutil.rmtree(final, ignore_errors=True)
    model = FCNLLMForCausalLM.from_pretrained(stage2)
    processor = FCNProcessor.from_pretrained(stage2)
    model.save_pretrained(final)
    processor.save_pretrained(final)
    summary = training_summary(out, args, preset, timings, precision)
    write_model_card(
        final, model.config, results_json=out / "results.json", results_table=report["table"],
        base_model=base_model_id(args.backbone), backbone_note="" if args.backbone else DEFAULT_BACKBONE_NOTE,
        atlas=args.atlas, training_summary=summary,
        hyperparameters=card_hyperparameters(args, preset, precision, timings),
    )
    (out / "timings.json").write_text(json.dumps({**timings, "precision": precision}, indent=2))
    print(report["table"])
    print(f"\nall under {out}/: results.json, results.md, plots, model/ ({sum(timings.values()) / 60:.1f} min)")
    return report


def drop_checkpoints(folder: Path) -> None:
    """Remove a finished stage's Trainer checkpoints (`checkpoint-*`: the weights again, with the optimizer's
    state, 1.6 GB for the demo's stage 2); the stage's final model, state and results stay in `folder`."""
    for checkpoint in Path(folder).glob("checkpoint-*"):
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)


def stage_runs(args: argparse.Namespace, preset: dict, out: Path, *, bf16: bool, cuda: bool) -> list[tuple[str, list[str]]]:
    """The train.py runs of the recipe, (stage, argv) in order: each stage's settings file, then what this
    run changes (folders, seed, backbone, the preset's sizes, precision, `FLAG_SETTINGS` of the flags set)."""
    data_dir = out / "data"
    folders = {stage: out / folder for stage, folder in STAGE_FOLDERS.items()}
    stages = [s for s, skip in (("encoder", args.skip_stage0), ("align", args.skip_stage1), ("joint", False)) if not skip]
    runs = []
    for stage in stages:
        settings: dict[str, object] = {"data_dir": data_dir, "output_dir": folders[stage], "seed": args.seed}
        roles = {stage}
        if stage != "encoder":
            roles.add("llm")
            settings.update(per_device_train_batch_size=preset["batch_size"],
                            **({"backbone": args.backbone} if args.backbone else {}),
                            **({"bf16": True} if bf16 else {}), **({} if cuda else {"use_cpu": True}))
        if stage == "align":
            settings["max_steps"] = preset["align_steps"]
            if not args.skip_stage0:
                settings["encoder_checkpoint"] = folders["encoder"]
            if args.window_length:
                settings.update(window_length=args.window_length, window_stride=args.window_stride)
        if stage == "joint":
            if preset["joint_samples"]:
                settings["max_train_samples"] = preset["joint_samples"]
            if not args.skip_stage1:
                settings["model_name_or_path"] = folders["align"]
            elif not args.skip_stage0:
                settings["encoder_checkpoint"] = folders["encoder"]
        if stage != "joint" or args.skip_stage1:
            roles.add("new model")
            settings["num_roi_tokens"] = preset["roi_tokens"]
        for flag, (applies_to, changes) in FLAG_SETTINGS.items():
            if getattr(args, flag) and applies_to in roles:
                settings.update(changes)
        runs.append((stage, [str(STAGE_SETTINGS / f"{stage}.yaml"), *option_argv(settings)]))
    return runs


def option_argv(settings: dict[str, object]) -> list[str]:
    """`{option: value}` as train.py command-line options (booleans as true/false)."""
    argv = []
    for option, value in settings.items():
        argv += [f"--{option}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def pick_precision(requested: str, preset: dict) -> dict:
    """{"bf16", "reason", "native_bf16"}: `--precision auto` takes bf16 only where the hardware computes it natively."""
    native = choose_precision(probe_capabilities(use_cpu=not torch.cuda.is_available()))
    if requested == "auto":
        bf16 = preset["bf16"] and native.bf16
        reason = native.reason if preset["bf16"] else "the preset trains in fp32"
    else:
        bf16, reason = requested == "bf16", f"--precision {requested} (hardware: {native.reason})"
    return {"bf16": bf16, "reason": reason, "native_bf16": native.bf16}


def training_summary(out: Path, args, preset: dict, timings: dict, precision: dict) -> str:
    lines = [f"Recipe preset `{args.preset}` (seed {args.seed}), atlas {args.atlas}, {preset['subjects']} simulated subjects, "
             f"{'bf16 autocast' if precision['bf16'] else 'fp32'} ({precision['reason']})."]
    stage0 = out / "stage0" / "train_results.json"
    if stage0.exists():
        info = json.loads(stage0.read_text())
        lines.append(f"- Stage 0 (encoder pre-training): {info['samples_seen']} samples, {info['seconds']:.0f}s, best epoch {info['best_epoch']}.")
    for name, label in (("stage1", "Stage 1 (alignment, LLM frozen)"), ("stage2", "Stage 2 (joint, one epoch)")):
        path = out / name / "train_summary.json"
        if path.exists():
            info = json.loads(path.read_text())
            losses = [h["loss"] for h in info["log_history"] if "loss" in h]
            loss = f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
            lines.append(f"- {label}: {info['train_instructions']} instructions{loss}, {timings.get(name, 0):.0f}s.")
    return "\n".join(lines)


def card_hyperparameters(args, preset: dict, precision: dict, timings: dict) -> dict[str, object]:
    """The model card's hyperparameter table: the preset's sizes, the stages run, the ablations and precision."""
    ablations = [f"--{name}" for name, value in vars(args).items()
                 if value is True and name not in ("lora", "rebuild_data")]
    if args.window_length:
        ablations.append(f"--window_length {args.window_length} --window_stride {args.window_stride}")
    return {
        "preset": args.preset, "seed": args.seed, "atlas": args.atlas, "simulated subjects": preset["subjects"],
        "per-device batch size": preset["batch_size"], "ROI-level graph tokens (R)": preset["roi_tokens"],
        "stage 0 (encoder pre-training)": "skipped" if args.skip_stage0 else "run",
        "stage 1 (alignment) steps": "skipped" if args.skip_stage1 else preset["align_steps"],
        "stage 2 (joint)": "one epoch, " + ("LoRA" if args.lora else "full fine-tuning"),
        "stage 2 instruction cap": preset["joint_samples"] or "none",
        "ablations": ", ".join(f"`{a}`" for a in ablations) or "none",
        "precision": "bf16 autocast" if precision["bf16"] else "fp32",
        "evaluated zero-shot subjects": preset["eval_subjects"] or "all",
        "wall clock (s)": ", ".join(f"{name} {seconds:.0f}" for name, seconds in timings.items()),
    }


if __name__ == "__main__":
    main()
