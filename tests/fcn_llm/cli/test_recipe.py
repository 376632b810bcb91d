"""recipe.py's choices that need no training run."""

from fcn_llm.cli import recipe
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
