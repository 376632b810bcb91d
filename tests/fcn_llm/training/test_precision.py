"""Precision by capability: the decision on faked hardware, the probe and the timed ratio."""

import math

import pytest
import torch

from fcn_llm.training.precision import Capabilities, choose_precision, measure_bf16_ratio, probe_capabilities


@pytest.mark.parametrize(
    "caps, bf16, words",
    [
        (Capabilities("cpu", cpu_name="Intel Xeon"), False, "neither AVX512_BF16 nor AMX"),
        (Capabilities("cpu", cpu_name="AMD EPYC", cpu_avx512_bf16=True), True, "AVX512_BF16"),
        (Capabilities("cpu", cpu_name="Sapphire Rapids", cpu_amx_tile=True), True, "AMX"),
        (Capabilities("cpu", cpu_avx512_bf16=True, cpu_amx_tile=True), True, "AVX512_BF16 and AMX"),
        (Capabilities("cuda", cuda_name="NVIDIA A100", cuda_bf16=True), True, "A100"),
        (Capabilities("cuda", cuda_name="Tesla T4", cuda_bf16=False), False, "no bf16 support"),
    ],
)
def test_choose_precision_follows_native_support(caps, bf16, words):
    choice = choose_precision(caps)
    assert choice.bf16 is bf16
    assert words in choice.reason


def test_probe_on_cpu_reports_this_machines_flags():
    caps = probe_capabilities(use_cpu=True)
    assert caps.device == "cpu"
    assert caps.cpu_avx512_bf16 == bool(torch.cpu._is_avx512_bf16_supported())
    assert caps.cpu_amx_tile == bool(torch.cpu._is_amx_tile_supported())


def test_measured_ratio_is_a_positive_time_ratio():
    ratio = measure_bf16_ratio(rows=16, in_features=32, out_features=32, seconds=0.05)
    assert math.isfinite(ratio) and ratio > 0


def test_attention_is_eager_on_cpus_and_fused_on_cuda():
    from fcn_llm.training.precision import choose_attention

    assert choose_attention("cpu") == "eager" and choose_attention("cuda") == "sdpa"
