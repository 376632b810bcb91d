"""recipe.py's choices that need no training run."""

from fcn_llm.cli import recipe, train
from fcn_llm.training.precision import Capabilities


def test_auto_precision_is_fp32_where_bf16_is_emulated(monkeypatch):
    monkeypatch.setattr(recipe, "probe_capabilities", lambda use_cpu: Capabilities("cpu", cpu_name="Old Xeon"))
    choice = recipe.pick_precision("auto", recipe.PRESETS["demo"])
    assert not choice["bf16"] and "Old Xeon" in choice["reason"]
    forced = recipe.pick_precision("bf16", recipe.PRESETS["demo"])
    assert forced["bf16"] and not forced["native_bf16"] and "--precision bf16" in forced["reason"]


def test_auto_precision_is_bf16_where_it_is_native(monkeypatch):
    monkeypatch.setattr(recipe, "probe_capabilities", lambda use_cpu: Capabilities("cpu", cpu_avx512_bf16=True))
    assert recipe.pick_precision("auto", recipe.PRESETS["demo"])["bf16"]
    assert not recipe.pick_precision("fp32", recipe.PRESETS["demo"])["bf16"]


def _runs(tmp_path, *flags, bf16=False, cuda=False):
    """The recipe's stage runs for `flags`, each resolved by train.py's parser: {stage: {setting: value}}."""
    args = recipe.parse_args(["--out", str(tmp_path), *flags])
    runs = recipe.stage_runs(args, recipe.PRESETS[args.preset], tmp_path, bf16=bf16, cuda=cuda)
    resolved = {}
    for stage, argv in runs:
        assert argv[0].endswith(f"configs/stages/{stage}.yaml")
        settings = {}
        for parsed in train.parse_args(argv):
            settings.update(parsed.to_dict() if hasattr(parsed, "to_dict") else vars(parsed))
        resolved[stage] = settings
    return resolved


def test_demo_runs_the_three_stage_files_with_the_run_s_folders_and_sizes(tmp_path):
    runs = _runs(tmp_path)
    assert list(runs) == ["encoder", "align", "joint"]
    encoder, align, joint = runs["encoder"], runs["align"], runs["joint"]
    assert encoder["output_dir"] == str(tmp_path / "stage0") and encoder["data_dir"] == str(tmp_path / "data")
    assert encoder["seed"] == align["seed"] == joint["seed"] == 0
    assert align["encoder_checkpoint"] == str(tmp_path / "stage0") and align["freeze_encoder"]
    assert (align["max_steps"], align["per_device_train_batch_size"], align["learning_rate"]) == (400, 8, 1e-3)
    assert joint["model_name_or_path"] == str(tmp_path / "stage1") and joint["encoder_checkpoint"] is None
    assert (joint["max_train_samples"], joint["learning_rate"], joint["num_train_epochs"]) == (800, 2e-5, 1)
    assert align["use_cpu"] and joint["use_cpu"] and not align["bf16"]
    args = recipe.parse_args(["--out", str(tmp_path)])
    on_gpu = dict(recipe.stage_runs(args, recipe.PRESETS["demo"], tmp_path, bf16=True, cuda=True))
    assert "--bf16" in on_gpu["align"] and "--use_cpu" not in on_gpu["align"]  # resolved only where CUDA is
    full = _runs(tmp_path, "--preset", "full")
    assert full["align"]["max_steps"] == 3000 and full["joint"]["max_train_samples"] is None
    # the demo's encoder is built with 4 ROI tokens (G = 1 + 7 + 4 on Schaefer-100), the full preset's with 8
    assert encoder["num_roi_tokens"] == align["num_roi_tokens"] == 4 and full["encoder"]["num_roi_tokens"] == 8


def _changed(base: dict, other: dict) -> dict:
    return {stage: {k: v for k, v in other[stage].items() if v != base[stage].get(k)} for stage in other}


def test_each_ablation_flag_changes_its_options_on_its_stages(tmp_path):
    base = _runs(tmp_path)
    assert _changed(base, _runs(tmp_path, "--no_roi_tokens")) == {
        "encoder": {"use_roi_tokens": False}, "align": {"use_roi_tokens": False}, "joint": {}}  # stage 2 continues stage 1
    assert _changed(base, _runs(tmp_path, "--no_aux_loss")) == {"encoder": {}, "align": {"auxiliary_loss_weight": 0.0}, "joint": {}}
    assert _changed(base, _runs(tmp_path, "--no_linear_heads")) == {"encoder": {"linear_network_heads": False}, "align": {}, "joint": {}}
    assert _changed(base, _runs(tmp_path, "--no_comparative")) == {
        "encoder": {}, "align": {"paradigms": "predictive,judgment"}, "joint": {"paradigms": "predictive,judgment"}}
    assert _changed(base, _runs(tmp_path, "--lora")) == {"encoder": {}, "align": {}, "joint": {"lora": True, "learning_rate": 2e-4}}
    no_stage0 = _runs(tmp_path, "--skip_stage0")
    assert list(no_stage0) == ["align", "joint"]
    assert no_stage0["align"]["encoder_checkpoint"] is None and not no_stage0["align"]["freeze_encoder"]
    no_stage1 = _runs(tmp_path, "--skip_stage1", "--token_evidence")
    assert list(no_stage1) == ["encoder", "joint"]
    assert no_stage1["joint"]["model_name_or_path"] is None and no_stage1["joint"]["encoder_checkpoint"] == str(tmp_path / "stage0")
    assert no_stage1["joint"]["instruction_evidence"] == no_stage1["encoder"]["instruction_evidence"] == "tokens"
    assert _changed(base, _runs(tmp_path, "--window_length", "100", "--window_stride", "10")) == {
        "encoder": {}, "align": {"window_length": 100, "window_stride": 10}, "joint": {}}  # stage 1 only


def test_every_ablation_flag_is_in_the_table_once():
    flags = {a.dest for a in recipe.build_parser()._actions if a.option_strings and a.const is True}
    assert flags - {"rebuild_data", "skip_stage1"} == set(recipe.FLAG_SETTINGS)  # skip_stage1 drops a run, changes none


def test_a_finished_stage_keeps_its_model_and_drops_its_trainer_checkpoints(tmp_path):
    (tmp_path / "checkpoint-400").mkdir()
    (tmp_path / "checkpoint-400" / "optimizer.pt").write_bytes(b"state")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "trainer_state.json").write_text("{}")
    recipe.drop_checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "trainer_state.json"]
