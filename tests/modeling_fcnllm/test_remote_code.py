"""The Hub flow, offline: save, then load with trust_remote_code in a fresh process without the project."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import random_fcns

QUESTION = "<graph>\nDoes this subject have ADHD? Answer yes or no."

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"modeling_fcnllm", "processing", "datasets_scripts"}
    if sys.argv[3:] == ["no-pyg"]:
        BLOCKED.add("torch_geometric")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} must not be importable here")

    sys.meta_path.insert(0, Block())
    import numpy as np, torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForCausalLM, AutoProcessor

    source, ref_path = sys.argv[1], sys.argv[2]
    ref = load_file(ref_path)
    if "torch_geometric" in BLOCKED:
        try:
            AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True)
        except ImportError as err:
            assert "torch_geometric" in str(err), err
            print("PYG-ERROR-OK")
            sys.exit(0)
        raise SystemExit("loaded without torch_geometric")
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    batch = processor(text=[QUESTION], fcns=[ref["fcn"].numpy()])
    assert torch.equal(batch["input_ids"], ref["input_ids"]), "processor gives other input_ids"
    lm = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
    assert type(lm).__module__.startswith("transformers_modules"), type(lm).__module__
    with torch.no_grad():
        torch.testing.assert_close(lm(**batch).logits, ref["logits"])
        torch.testing.assert_close(base(**batch).last_hidden_state, ref["hidden"])
    print("REMOTE-OK", type(lm).__name__, type(base).__name__, type(processor).__name__)
    """
).replace("QUESTION", repr(QUESTION))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from processing import FCNProcessor
    from tests.conftest import make_tiny_model, make_tokenizer

    root = tmp_path_factory.mktemp("remote")
    processor = FCNProcessor(make_tokenizer())
    model = make_tiny_model(processor.tokenizer)
    processor = FCNProcessor.from_model_config(processor.tokenizer, model.config)
    folder = root / "fcn-llm"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    fcn = torch.from_numpy(random_fcns(1)[0])
    batch = processor(text=[QUESTION], fcns=[fcn.numpy()])
    with torch.no_grad():
        ref = {
            "fcn": fcn,
            "input_ids": batch["input_ids"],
            "logits": model(**batch).logits,
            "hidden": model.model(**batch).last_hidden_state,
        }
    save_file({k: v.contiguous() for k, v in ref.items()}, root / "ref.safetensors")
    (root / "child.py").write_text(CHILD)
    return root, folder


def _run_child(root, source, hf_home, offline=False, extra=(), expect="REMOTE-OK FCNLLMForCausalLM FCNLLMModel FCNProcessor"):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-I", str(root / "child.py"), str(source), str(root / "ref.safetensors"), *extra],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert expect in result.stdout


def test_saved_folder_carries_code_auto_map_and_safetensors(saved):
    _, folder = saved
    files = {p.name for p in folder.iterdir()}
    assert {"configuration_fcnllm.py", "modeling_fcnllm.py", "processing_fcnllm.py", "connectivity.py"} <= files
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    processor_auto_map = json.loads((folder / "processor_config.json").read_text())["auto_map"]
    assert processor_auto_map["AutoProcessor"].endswith("FCNProcessor")


def test_remote_code_from_a_local_folder_in_a_fresh_process(saved):
    root, folder = saved
    _run_child(root, folder, root / "hf-local")


def test_remote_code_from_a_prefilled_hub_cache_offline(saved):
    root, folder = saved
    hf_home = root / "hf-cache"
    repo = hf_home / "hub" / "models--org--fcn-llm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    _run_child(root, "org/fcn-llm", hf_home, offline=True)


def test_missing_torch_geometric_is_named(saved):
    root, folder = saved
    _run_child(root, folder, root / "hf-nopyg", extra=("no-pyg",), expect="PYG-ERROR-OK")
