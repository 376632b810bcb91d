"""train.py end to end on a tiny backbone and a tiny simulated instruction set."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, LlamaForCausalLM, TrainerCallback

from fcn_llm.cli import train
from modeling_fcnllm import FCNEncoderConfig, FCNEncoderForAttributePrediction
from datasets_scripts import build_instructions
from tests.conftest import make_tokenizer, tiny_text_config

REPO = Path(__file__).resolve().parents[3]
TINY_ENCODER = ["--encoder_hidden_size", "16", "--num_roi_tokens", "2", "--encoder_layers", "1"]
FAST = ["--report_to", "none", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--use_cpu", "true",
        "--max_eval_samples", "8", "--dataloader_num_workers", "0", "--seed", "0"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = root / "data"
    build_instructions.main(["--out", str(data), "--subjects", "80", "--check-train", "40"])
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    backbone = root / "backbone"
    LlamaForCausalLM(tiny_text_config("llama", len(tokenizer))).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    stage0 = train.main(["--stage", "encoder", "--data_dir", str(data), "--output_dir", str(root / "stage0"),
                         "--encoder_epochs", "3", *TINY_ENCODER, "--report_to", "none"])
    stage1 = train.main(["--stage", "align", "--data_dir", str(data), "--output_dir", str(root / "stage1"),
                         "--backbone", str(backbone), "--encoder_checkpoint", str(stage0), "--max_steps", "3",
                         "--learning_rate", "1e-3", *FAST])
    return {"root": root, "data": data, "backbone": backbone, "stage0": stage0, "stage1": stage1}


def _weights(folder):
    return load_file(Path(folder) / "model.safetensors")


def _stage0_weights(folder, prefix):
    """The stage-0 model's weights under `prefix` ("encoder." or "attribute_heads."), names without it."""
    return {k.removeprefix(prefix): v for k, v in _weights(folder).items() if k.startswith(prefix)}


def test_stage0_saves_a_pretrained_attribute_model(workspace):
    stage0 = workspace["stage0"]
    assert {p.name for p in stage0.iterdir()} == {"config.json", "model.safetensors", "train_results.json"}
    config = json.loads((stage0 / "config.json").read_text())
    assert config["architectures"] == ["FCNEncoderForAttributePrediction"] and len(config["attribute_heads"]) >= 10
    assert json.loads((stage0 / "train_results.json").read_text())["samples_seen"] > 0
    model = FCNEncoderForAttributePrediction.from_pretrained(stage0)
    assert [h.key for h in model.attribute_heads.specs] == [h["key"] for h in config["attribute_heads"]]


def test_stage1_trains_encoder_and_projector_only(workspace):
    stage1 = _weights(workspace["stage1"])
    backbone = load_file(workspace["backbone"] / "model.safetensors")
    for name, value in backbone.items():
        if "embed_tokens" in name or "lm_head" in name:
            continue  # resized by one row for <graph>
        torch.testing.assert_close(stage1[f"model.language_model.{name.removeprefix('model.')}"], value)
    encoder0 = _stage0_weights(workspace["stage0"], "encoder.")
    changed = [k for k, v in encoder0.items() if not torch.equal(stage1[f"model.graph_encoder.{k}"], v)]
    assert changed, "stage 1 did not train the encoder"
    encoder_config = json.loads((workspace["stage1"] / "config.json").read_text())["encoder_config"]
    assert encoder_config["model_type"] == "fcn_encoder" and encoder_config["num_layers"] == 1
    assert not {"attribute_heads", "architectures", "_name_or_path"} & {k for k, v in encoder_config.items() if v}
    summary = json.loads((workspace["stage1"] / "train_summary.json").read_text())
    # the Trainer's own records, as run_clm.py writes them
    assert json.loads((workspace["stage1"] / "train_results.json").read_text())["train_runtime"] > 0
    assert json.loads((workspace["stage1"] / "trainer_state.json").read_text())["global_step"] > 0
    assert summary["stage"] == "align" and "graph_token_spread" in summary
    assert summary["attention"] == ("sdpa" if torch.cuda.is_available() else "eager")  # the CPU's faster kernel


def test_stage1_starts_from_stage0_heads_and_reads_them(workspace, tmp_path):
    """The recipe's stage 1: encoder and its attribute heads from stage 0, frozen; the evidence token
    reads the heads (standardised on the training subjects) and learns."""
    folder = train.main(["--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "s1"),
                         "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(workspace["stage0"]),
                         "--freeze_encoder", "true", "--max_steps", "2", "--learning_rate", "1e-3", *FAST])
    weights = _weights(folder)
    for name, value in _stage0_weights(workspace["stage0"], "attribute_heads.").items():
        torch.testing.assert_close(weights[f"model.graph_attribute_heads.{name}"], value)
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["instruction_evidence"] == "attributes"
    assert weights["model.instruction_conditioning.evidence_norm.running_var"].ne(1.0).all()  # calibrated
    assert weights["model.instruction_conditioning.out.weight"].abs().sum() > 0  # zero at the start, trained


def test_the_saved_model_writes_its_heads_answer_words_whole(workspace):
    """Stage 1 stores each class head's predictive answer words as tokens; the reloaded model's table has them, each
    followed by the end of the answer."""
    from modeling_fcnllm import FCNLLMForCausalLM
    from processing import FCNProcessor

    model = FCNLLMForCausalLM.from_pretrained(workspace["stage1"])
    tokenizer = FCNProcessor.from_pretrained(workspace["stage1"]).tokenizer
    words = {key: [tokenizer.decode(ids) for ids in table] for key, table in model.config.class_answer_ids.items()}
    assert words["sex"] == ["Female", "Male"] and words["adhd"] == ["ADHD", "Control"]
    assert not {"age", "fiq"} & set(words)  # continuous heads write numbers
    conditioning = model.model.instruction_conditioning
    sex = [h["key"] for h in model.config.auxiliary_heads].index("sex")
    assert tokenizer.decode(conditioning.word_ids[sex, 0][conditioning.word_ids[sex, 0] >= 0]) == "Female<|im_end|>"


def test_the_model_stage1_builds_knows_where_answers_start_and_end(workspace):
    """The model `build_model` returns (trained in the same process, before any reload) has the chat template's
    answer prefix, end of answer and class words in its config, and its evidence module reads them."""
    model_args, data_args, recipe_args, _ = train.parse_args([
        "--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(workspace["root"] / "unused"),
        "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(workspace["stage0"]), *FAST])
    subjects, _ = train.load_instruction_data(data_args)
    model, processor, _ = train.build_model(model_args, recipe_args, subjects["train"])
    conditioning = model.model.instruction_conditioning
    assert model.config.answer_prefix_ids == processor.answer_prefix_ids
    assert conditioning.answer_end_id == model.config.answer_end_id == processor.answer_end_id is not None
    sex = [h["key"] for h in model.config.auxiliary_heads].index("sex")
    female = conditioning.word_ids[sex, 0]
    assert processor.tokenizer.decode(female[female >= 0]) == "Female<|im_end|>"
    assert model.config.class_answer_ids["adhd"] == processor.answer_word_ids(["ADHD", "Control"])


@pytest.mark.parametrize("fit", ["continuous,categorical", "none"])
def test_stage1_fits_the_readout_before_training(workspace, tmp_path, fit):
    """At learning rate 0 the saved evidence columns are the fitted ones: the judgment columns of the continuous
    and categorical heads (each kind at its scale; every output of a categorical head), the binary ones zero."""
    folder = train.main(["--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "s1"),
                         "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(workspace["stage0"]),
                         "--freeze_encoder", "true", "--max_steps", "1", "--learning_rate", "0",
                         "--fit_readout", fit, "--evidence_decides_answer", "false", *FAST])
    config = json.loads((Path(folder) / "config.json").read_text())
    specs, paradigms = config["auxiliary_heads"], config["evidence_paradigms"]
    assert paradigms == ["predictive", "judgment", "comparative"]
    columns = _weights(folder)["model.instruction_conditioning.out.weight"].abs().sum(0)
    columns = columns.reshape(len(paradigms), -1)[paradigms.index("judgment")]  # the judgments' readout
    summary = json.loads((Path(folder) / "train_summary.json").read_text())
    assert summary["router_accuracy"] > 0.5 and summary["paradigm_accuracy"] > 0.9
    if fit == "none":
        assert "readout" not in summary and (columns == 0).all()
        return
    readout = summary["readout"]
    assert set(readout["scale"]) <= {"continuous", "categorical", "comparative", "predictive"} and readout["sign_r2"]
    assert readout["threshold_r2"] == {} and config["numeral_tokens"]  # thresholds read as numbers: nothing fitted
    for j, spec in enumerate(specs):
        start = sum(s["num_outputs"] for s in specs[:j])
        written = columns[start : start + spec["num_outputs"]]
        fitted = spec["key"] in readout["heads"] and readout["scale"].get(spec["kind"], 0) > 0
        assert (written > 0).all() if fitted else (written == 0).all(), spec["key"]


@pytest.mark.parametrize("ablation", [["--instruction_conditioning", "false"], ["--instruction_evidence", "tokens"],
                                      ["--auxiliary_loss_weight", "0"], ["--evidence_per_paradigm", "false"]])
def test_evidence_ablations_train(workspace, tmp_path, ablation):
    folder = train.main(["--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "s1"),
                         "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(workspace["stage0"]),
                         "--max_steps", "1", *ablation, *FAST])
    config = json.loads((Path(folder) / "config.json").read_text())
    if ablation[0] == "--instruction_conditioning":
        assert config["instruction_conditioning"] is False
    elif ablation[0] == "--evidence_per_paradigm":
        assert config["instruction_evidence"] == "attributes" and config["evidence_paradigms"] is None
    else:
        assert config["instruction_evidence"] == "tokens"


def test_unknown_readout_kind_is_named():
    with pytest.raises(ValueError, match="Unknown --fit_readout 'binary,ordinal'"):
        train.parse_args(["--stage", "align", "--data_dir", "d", "--output_dir", "o", "--fit_readout", "binary,ordinal"])
    assert train.readout_kinds("all") == ("binary", "categorical", "continuous") and train.readout_kinds("none") == ()
    assert train.readout_kinds("continuous, categorical") == ("continuous", "categorical")


class RecordOptimizer(TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.groups = [(len(g["params"]), g["lr"]) for g in optimizer.param_groups]


def test_stage1_trains_the_evidence_token_at_a_multiple_of_the_learning_rate(workspace, tmp_path):
    """The Trainer builds the optimizer (FCNTrainer.create_optimizer): the evidence token's groups at 10x."""
    record = RecordOptimizer()
    train.main(["--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "s1"),
                "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(workspace["stage0"]),
                "--max_steps", "1", "--learning_rate", "1e-3", "--evidence_lr_multiplier", "10",
                "--evidence_decides_answer", "false", *FAST],
               callbacks=[record])
    assert {round(lr, 9) for _, lr in record.groups} == {1e-3, 1e-2} and all(n > 0 for n, _ in record.groups)


class RecordReadout(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = {k: v.detach().clone() for k, v in model.state_dict().items() if "instruction_conditioning" in k}


def test_with_the_evidence_deciding_the_answer_the_fitted_readout_stays_and_the_question_maps_train(workspace, tmp_path):
    record = RecordReadout()
    folder = train.main(["--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "s1"),
                         "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(workspace["stage0"]),
                         "--max_steps", "2", "--learning_rate", "1e-2", *FAST], callbacks=[record])
    saved, prefix = _weights(folder), "model.instruction_conditioning."
    assert json.loads((Path(folder) / "config.json").read_text())["evidence_decides_answer"] is True
    assert saved[prefix + "out.weight"].abs().sum() > 0  # fitted before training
    torch.testing.assert_close(saved[prefix + "out.weight"], record.start[prefix + "out.weight"])
    torch.testing.assert_close(saved[prefix + "out.bias"], record.start[prefix + "out.bias"])
    assert not torch.equal(saved[prefix + "router.weight"], record.start[prefix + "router.weight"])


def test_a_partly_fitted_readout_cannot_decide_the_answer():
    with pytest.raises(ValueError, match="--evidence_decides_answer keeps the readout fitted .* not --fit_readout 'none'"):
        train.parse_args(["--stage", "align", "--data_dir", "d", "--output_dir", "o", "--fit_readout", "none"])
    train.parse_args(["--stage", "align", "--data_dir", "d", "--output_dir", "o", "--fit_readout", "none",
                      "--evidence_decides_answer", "false"])


class FakeHub:
    """Stands in for `huggingface_hub.HfApi` in transformers.trainer: records the uploads, reaches nothing."""

    def __init__(self):
        self.uploads = []

    def __call__(self):
        return self

    def create_repo(self, repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        card = (folder / "README.md").read_text() if (folder / "README.md").exists() else None
        self.uploads.append({"repo_id": repo_id, "folder": folder, "card": card,
                             "files": sorted(p.name for p in folder.iterdir()), **kwargs})


def test_push_to_hub_uploads_the_output_folder_with_the_fcn_llm_card(workspace, tmp_path, monkeypatch):
    import transformers.trainer

    from tests.fcn_llm.training.test_model_card import _results_json

    hub = FakeHub()
    monkeypatch.setattr(transformers.trainer, "hf_api", hub)
    results = _results_json(tmp_path)
    out = train.main(["--stage", "joint", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "s2"),
                      "--model_name_or_path", str(workspace["stage1"]), "--max_steps", "1", "--save_strategy", "no",
                      "--push_to_hub", "true", "--hub_model_id", "org/fcn-test", "--results_json", str(results), *FAST])
    final = hub.uploads[-1]
    assert final["repo_id"] == "org/fcn-test" and final["folder"] == out == tmp_path / "s2"
    assert final["commit_message"] == "FCN-LLM stage joint"
    assert {"model.safetensors", "config.json", "processor_config.json", "train_summary.json", "README.md"} <= set(final["files"])
    card = ModelCard.load(out / "README.md")
    assert card.content == final["card"] and card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "# FCN-LLM: fcn-test" in card.text and card.data.eval_results  # the FCN-LLM card, results included
    assert AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)


def test_push_to_hub_with_a_bad_results_json_stops_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="No results.json at"):
        train.parse_args(["--output_dir", str(tmp_path), "--results_json", str(tmp_path / "results.json")])


def test_stage2_lora_saves_adapter_and_merged_model(workspace):
    out = train.main(["--stage", "joint", "--data_dir", str(workspace["data"]), "--output_dir", str(workspace["root"] / "lora"),
                      "--model_name_or_path", str(workspace["stage1"]), "--lora", "true", "--lora_r", "2",
                      "--max_steps", "2", "--learning_rate", "1e-3", *FAST])
    assert (out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(merged).__name__ == "FCNLLMForCausalLM"
    assert not any("lora" in k for k in _weights(out))
    stage1, merged = _weights(workspace["stage1"]), _weights(out)
    assert any(not torch.equal(stage1[k], v) for k, v in merged.items() if "q_proj" in k)
    for name in ("model.instruction_conditioning.out.weight", "model.instruction_conditioning.out.bias"):
        torch.testing.assert_close(merged[name], stage1[name])  # the readout the evidence decides with stays


class StopAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


def test_interrupted_and_resumed_run_ends_with_the_same_weights(workspace):
    root = workspace["root"]
    args = ["--stage", "joint", "--data_dir", str(workspace["data"]), "--model_name_or_path", str(workspace["stage1"]),
            "--max_steps", "4", "--save_steps", "2", "--learning_rate", "1e-3", *FAST]
    full = train.main([*args, "--output_dir", str(root / "full")])
    train.main([*args, "--output_dir", str(root / "resumed")], callbacks=[StopAfter(2)])
    assert (root / "resumed" / "checkpoint-2").exists()
    resumed = train.main([*args, "--output_dir", str(root / "resumed"), "--resume_from_checkpoint", str(root / "resumed" / "checkpoint-2")])
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_stage2_without_stage1_is_allowed_with_a_warning(workspace, caplog):
    with caplog.at_level("WARNING", logger="fcn_llm.train"):
        train.main(["--stage", "joint", "--data_dir", str(workspace["data"]), "--output_dir", str(workspace["root"] / "nostage1"),
                    "--backbone", str(workspace["backbone"]), "--max_steps", "1", *TINY_ENCODER, *FAST])
    assert "without a stage-1 folder" in caplog.text


def test_bad_inputs_name_the_problem(workspace, tmp_path):
    with pytest.raises(ValueError, match="not an FCN-LLM instruction set"):
        train.main(["--stage", "encoder", "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--report_to", "none"])
    with pytest.raises(ValueError, match="is a .llama. checkpoint, not an FCN-LLM"):
        train.main(["--stage", "joint", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "o"),
                    "--model_name_or_path", str(workspace["backbone"]), *FAST])
    with pytest.raises(ValueError, match=r"linear layers are \[.*q_proj"):
        train.main(["--stage", "joint", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "o"),
                    "--model_name_or_path", str(workspace["stage1"]), "--lora", "true",
                    "--lora_target_modules", "c_attn", "--max_steps", "1", *FAST])
    with pytest.raises(ValueError, match="not a stage-0 output"):
        train.main(["--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "o"),
                    "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(tmp_path), *FAST])
    with pytest.raises(ValueError, match=r"not a stage-0 output: its config.json describes \['LlamaForCausalLM'\]"):
        train.main(["--stage", "align", "--data_dir", str(workspace["data"]), "--output_dir", str(tmp_path / "o"),
                    "--backbone", str(workspace["backbone"]), "--encoder_checkpoint", str(workspace["backbone"]),
                    *FAST])
    with pytest.raises(ValueError, match="Unknown --stage"):
        train.main(["--stage", "pretrain", "--output_dir", str(tmp_path / "o")])


def test_an_older_stage0_layout_is_named(tmp_path):
    FCNEncoderConfig(num_rois=4).save_pretrained(tmp_path)
    save_file({"roi_embedding": torch.zeros(4, 128)}, tmp_path / "encoder.safetensors")
    with pytest.raises(ValueError, match="older stage-0 layout .encoder.safetensors, heads.safetensors.; rerun --stage encoder"):
        train.load_stage0(str(tmp_path))


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(workspace):
    out = workspace["root"] / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/cpu_2proc.yaml"),
           str(REPO / "train.py"), "--stage", "joint", "--data_dir", str(workspace["data"]), "--output_dir", str(out),
           "--model_name_or_path", str(workspace["stage1"]), "--max_steps", "2", "--learning_rate", "1e-4", *FAST]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "'train_runtime'" in result.stdout
    log = json.loads((out / "train_summary.json").read_text())
    assert log["log_history"][-1]["step"] == 2
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "FCNLLMForCausalLM"


def test_bf16_on_a_missing_cuda_device_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        train.parse_args(["--output_dir", "unused", "--bf16", "true", "--use_cpu", "false"])
    message = capsys.readouterr().err
    assert "no CUDA device" in message and "--use_cpu true" in message


def test_bf16_where_it_is_emulated_runs_and_warns_with_the_measured_ratio(monkeypatch, caplog):
    from fcn_llm.training.precision import Capabilities

    monkeypatch.setattr(train, "probe_capabilities", lambda use_cpu: Capabilities("cpu", cpu_name="Old Xeon"))
    monkeypatch.setattr(train, "measure_bf16_ratio", lambda device: 4.97)
    *_, training_args = train.parse_args(["--output_dir", "unused", "--bf16", "true", "--use_cpu", "true"])
    with caplog.at_level("WARNING", logger="fcn_llm.train"):
        info = train.report_precision(training_args)
    assert info == {"precision": "bf16 autocast", "native_bf16": False, "bf16_over_fp32_time": 4.97,
                    "reason": "Old Xeon has neither AVX512_BF16 nor AMX: bf16 would be emulated, fp32 is faster"}
    assert "4.97x slower" in caplog.text


def test_fp32_where_bf16_is_native_records_the_hardware(monkeypatch):
    from fcn_llm.training.precision import Capabilities

    monkeypatch.setattr(train, "probe_capabilities", lambda use_cpu: Capabilities("cpu", cpu_amx_tile=True))
    *_, training_args = train.parse_args(["--output_dir", "unused", "--use_cpu", "true"])
    info = train.report_precision(training_args)
    assert info["precision"] == "fp32" and info["native_bf16"] and "AMX" in info["reason"]


@pytest.mark.parametrize("given", [None, "PASSIVE"])
def test_train_py_leaves_the_openmp_wait_policy_to_the_user(given):
    """Threads spin at barriers (fastest alone); the thread governor, not a sleeping policy, handles busy cores."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = ("import sys, os, fcn_llm.cli.train; assert 'torch' in sys.modules; "
            "print(os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == (given or "unset")


STAGE_FILES = sorted((REPO / "configs" / "stages").glob("*.yaml"))


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.name)
def test_a_stage_file_alone_reads_as_run_clm_reads_one_and_options_after_it_override(path):
    alone = train.parse_args([str(path)])  # HfArgumentParser.parse_yaml_file
    assert alone[2].stage == path.stem
    with_defaults = train.parse_args([str(path), "--seed", "42"])  # the file as defaults, then the options
    for a, b in zip(alone, with_defaults):
        assert (a.to_dict() if hasattr(a, "to_dict") else vars(a)) == (b.to_dict() if hasattr(b, "to_dict") else vars(b))
    *_, recipe_args, training_args = train.parse_args([str(path), "--seed", "7", "--output_dir", "elsewhere"])
    assert training_args.seed == 7 and training_args.output_dir == "elsewhere" and recipe_args.stage == path.stem


def test_stage_files_hold_the_recipe_settings():
    *_, recipe_args, align = train.parse_args([str(REPO / "configs/stages/align.yaml")])
    assert (align.learning_rate, align.max_steps, align.warmup_steps, align.lr_scheduler_type) == (1e-3, 400, 20, "cosine")
    assert align.optim == "adamw_torch_fused" and recipe_args.evidence_lr_multiplier == 10.0
    model_args, data_args, _, joint = train.parse_args([str(REPO / "configs/stages/joint.yaml"), "--lora", "true"])
    assert (joint.learning_rate, joint.num_train_epochs, joint.max_steps) == (2e-5, 1, -1) and model_args.lora
    assert data_args.balance_answers and data_args.paradigms == "predictive,judgment,comparative"


def test_bad_stage_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="No settings file at .*missing.yaml"):
        train.parse_args([str(tmp_path / "missing.yaml")])
    listing = tmp_path / "list.yaml"
    listing.write_text("- stage\n- align\n")
    with pytest.raises(ValueError, match="holds no mapping"):
        train.parse_args([str(listing)])
    typo = tmp_path / "typo.yaml"
    typo.write_text("stage: align\nlearning_rat: 0.001\nmax_step: 3\n")
    for argv in ([str(typo)], [str(typo), "--seed", "1"]):
        with pytest.raises(ValueError, match=r"sets unknown option\(s\) \['learning_rat', 'max_step'\]"):
            train.parse_args(argv)


def test_zero3_and_lora_under_deepspeed_are_refused_with_the_configs_that_work():
    from types import SimpleNamespace

    def args(stage=None, lora=False, stage_name="joint"):
        plugin = None if stage is None else SimpleNamespace(zero_stage=stage)
        return SimpleNamespace(lora=lora), SimpleNamespace(stage=stage_name), SimpleNamespace(deepspeed_plugin=plugin)

    train.check_distribution(*args())  # DDP or one process
    train.check_distribution(*args(stage=2))
    train.check_distribution(*args(stage=2, lora=True, stage_name="align"))  # --lora only acts in stage 2
    with pytest.raises(ValueError, match="ZeRO-3 is not supported.*ddp.yaml.*deepspeed_zero2.yaml"):
        train.check_distribution(*args(stage=3))
    with pytest.raises(ValueError, match="--lora under DeepSpeed is not supported.*ddp.yaml"):
        train.check_distribution(*args(stage=2, lora=True))


class RecordCollator(TrainerCallback):
    """Keeps the collator the Trainer's training batches come from."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.collator = train_dataloader.collate_fn


def test_stage1_on_sliding_window_fcns(workspace, tmp_path, caplog, monkeypatch):
    """`--window_length`: the training collator draws window FCNs of the training subjects, while the closed-form
    fits before training read whole scans; a set without stored series is an error naming the builder's option."""
    from datasets_scripts.graph_lookup import GraphLookup
    from datasets_scripts.window_lookup import WindowedFCNs

    lookup = GraphLookup.from_folder(workspace["data"])
    with pytest.raises(ValueError, match="--keep-timeseries"):
        train.training_fcns(train.DataArguments(data_dir=str(workspace["data"]), window_length=100), lookup)
    assert train.training_fcns(train.DataArguments(data_dir=str(workspace["data"])), lookup) is lookup
    data = tmp_path / "data"
    build_instructions.main(["--out", str(data), "--subjects", "80", "--check-train", "40", "--keep-timeseries"])
    windows = train.training_fcns(train.DataArguments(data_dir=str(data), window_length=100, window_stride=50),
                                  GraphLookup.from_folder(data))
    assert isinstance(windows, WindowedFCNs) and windows.windowed_subjects() > 20
    fitted_on, fit_readout = [], train.fit_readout
    monkeypatch.setattr(train, "fit_readout", lambda model, collator, *a, **k: (
        fitted_on.append(collator.lookup), fit_readout(model, collator, *a, **k))[1])
    record = RecordCollator()
    with caplog.at_level("INFO", logger=train.logger.name):
        folder = train.main(["--stage", "align", "--data_dir", str(data), "--output_dir", str(tmp_path / "s1"),
                             "--backbone", str(workspace["backbone"]), "--max_steps", "2", "--window_length", "100",
                             *TINY_ENCODER, *FAST], callbacks=[record])
    assert "sliding-window FCNs: 100-point windows every 20 points" in caplog.text
    assert isinstance(fitted_on[0].__self__, GraphLookup) and isinstance(record.collator.lookup, WindowedFCNs)
    assert json.loads((Path(folder) / "trainer_state.json").read_text())["global_step"] == 2
