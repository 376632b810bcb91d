"""Training precision chosen from what the hardware computes natively, never from its architecture; and the
attention kernel the device trains fastest with.

bf16 autocast pays only where bf16 arithmetic is native: CUDA devices that report bf16 support,
and CPUs with AVX512_BF16 or AMX tiles. Elsewhere (most laptops, many Xeons) the CPU emulates bf16
and every matrix product gets slower, so training runs in fp32 there.

    caps = probe_capabilities(use_cpu=True)
    choice = choose_precision(caps)            # PrecisionChoice(bf16=..., reason="...")
    ratio = measure_bf16_ratio()               # bf16-autocast time / fp32 time of one Linear fwd+bwd
    attention = choose_attention("cpu")        # "eager"

On CPUs PyTorch's fused attention (`sdpa`: the flash-attention CPU kernel) runs the backward pass of the
short sequences FCN-LLM trains on (35-80 tokens) slower than plain matrix products (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Capabilities:
    """What the device the job trains on can compute (`device` is "cuda" or "cpu")."""

    device: str
    cpu_name: str = ""
    cpu_avx512_bf16: bool = False
    cpu_amx_tile: bool = False
    cuda_name: str = ""
    cuda_bf16: bool = False


@dataclass(frozen=True)
class PrecisionChoice:
    bf16: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (empty where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def probe_capabilities(use_cpu: bool = False) -> Capabilities:
    """The capabilities of the device a run with `use_cpu` trains on (CUDA when present and not refused)."""
    if torch.cuda.is_available() and not use_cpu:
        return Capabilities(device="cuda", cuda_name=torch.cuda.get_device_name(0),
                            cuda_bf16=bool(torch.cuda.is_bf16_supported()))
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return Capabilities(device="cpu", cpu_name=cpu_name(), cpu_avx512_bf16=bool(probe()), cpu_amx_tile=bool(amx()))


def choose_precision(caps: Capabilities) -> PrecisionChoice:
    """bf16 where the device computes it natively, fp32 otherwise, with the reason in words."""
    if caps.device == "cuda":
        if caps.cuda_bf16:
            return PrecisionChoice(True, f"CUDA device {caps.cuda_name or '?'} supports bf16 natively")
        return PrecisionChoice(False, f"CUDA device {caps.cuda_name or '?'} has no bf16 support")
    native = [name for name, flag in (("AVX512_BF16", caps.cpu_avx512_bf16), ("AMX", caps.cpu_amx_tile)) if flag]
    cpu = caps.cpu_name or "this CPU"
    if native:
        return PrecisionChoice(True, f"{cpu} computes bf16 natively ({' and '.join(native)})")
    return PrecisionChoice(False, f"{cpu} has neither AVX512_BF16 nor AMX: bf16 would be emulated, fp32 is faster")


def choose_attention(device: str) -> str:
    """The backbone's attention implementation for training on `device` ("cpu" or "cuda"): "eager" on CPUs,
    "sdpa" (PyTorch's fused kernels) elsewhere."""
    return "eager" if device == "cpu" else "sdpa"


def measure_bf16_ratio(device: str = "cpu", rows: int = 480, in_features: int = 576, out_features: int = 1536,
                       seconds: float = 1.0) -> float:
    """bf16-autocast time / fp32 time of a `Linear(in, out)` forward+backward on `(rows, in)` inputs,
    interleaved for about `seconds` in all (> 1: bf16 is slower on this device)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(in_features, out_features, device=device)
    x = torch.randn(rows, in_features, device=device, requires_grad=True)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)
        y.float().sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(False), step(True)  # warm-up: kernels picked, memory allocated
    times: dict[bool, list[float]] = {False: [], True: []}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times[True]) < 3:
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return median[True] / median[False]
