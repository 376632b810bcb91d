"""Item 6: peak RSS of training steps, each in a fresh subprocess (the process's high-water mark).

    python -m bench.memory --data DIR --stage joint --batch 8 [--lora] [--backbone default|tiny]

A child loads the backbone, wraps it (the loaded copy is then freed), builds a batch with the
collator and runs two AdamW steps (stage 1: `freeze_for_stage(model, "align")`; stage 2 full, or LoRA
via `train.apply_lora` with train.py's defaults), then prints one JSON line: the peak over the whole
run, and the steady-state peak of the second step alone (the high-water mark is reset after the
first step, which allocates the optimizer state). Batches are prefixes of one sample whose first row
is a comparative question (the longest prompts), so every batch size pads to the same length. The
largest batch in 24 GiB is extrapolated from a straight line through the steady-state stage-2 peaks
at several batch sizes (an extrapolation, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30


def peak_rss_gib() -> float:
    """This process's peak resident set size so far: `VmHWM` of /proc/self/status.

    Not `resource.getrusage(...).ru_maxrss`: Linux carries the parent's high-water mark into a child
    across fork + exec, so a child of a big parent would report the parent's peak.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS (Linux >= 4.0: `5` to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(argv: Sequence[str] | None = None) -> dict:
    """Measure one configuration in this process; returns (and prints) its JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--stage", choices=("align", "joint"), default="joint")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backbone", default="default")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from fcn_llm.cli.train import ModelArguments, apply_lora, freeze_for_stage

    from .setup import backbone_lm, collate, default_tokenizer, encoder_config, load_bench_data, sample_rows, wrap

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_bench_data(args.data)
    tokenizer = default_tokenizer()
    setup = wrap(args.backbone, backbone_lm(args.backbone, len(tokenizer)), tokenizer, encoder_config(data.atlas))
    setup.bare = None  # the FCN-LLM holds its own copy of the weights
    gc.collect()
    rows = sample_rows(data.rows["train"], max(args.batch, 64), seed=0, longest_first=True)[: args.batch]
    batch = collate(setup, data, rows)
    model = setup.model
    freeze_for_stage(model, args.stage, freeze_encoder=False)
    if args.lora:
        model = apply_lora(model, ModelArguments(lora=True))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    def forward_backward() -> None:
        model(**batch).loss.backward()

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    before = current_rss_gib()
    forward_backward()
    update()  # the first step allocates the optimizer state
    first = peak_rss_gib()
    steady = reset_peak_rss()
    forward_backward()
    forward_backward_peak = peak_rss_gib()
    update()
    step_peak = peak_rss_gib()
    record = {"stage": args.stage, "lora": args.lora, "batch": args.batch, "backbone": args.backbone,
              "padded_length": int(batch["input_ids"].shape[1]),
              "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
              "rss_before_steps_gib": before, "peak_rss_gib": max(first, step_peak),
              "steady_step_peak_gib": step_peak if steady else None,
              "steady_forward_backward_peak_gib": forward_backward_peak if steady else None}
    print(json.dumps(record))
    return record


def run_child(data_dir: str | Path, stage: str, batch: int, lora: bool = False, backbone: str = "default",
              threads: int | None = None) -> dict:
    """One configuration in a fresh Python process; its JSON record."""
    cmd = [sys.executable, "-m", "bench.memory", "--data", str(data_dir), "--stage", stage, "--batch", str(batch),
           "--backbone", backbone] + (["--lora"] if lora else [])
    if threads:
        cmd += ["--threads", str(threads)]
    path = [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_batch(batches: Sequence[int], peaks_gib: Sequence[float], budget_gib: float = 24.0) -> dict:
    """Straight-line fit peak = a + b * batch; the largest batch with a + b * batch <= budget."""
    slope, intercept = np.polyfit(np.asarray(batches, float), np.asarray(peaks_gib, float), 1)
    best = int(math.floor((budget_gib - intercept) / slope + 1e-9)) if slope > 0 else None
    return {"gib_per_sample": float(slope), "gib_at_batch_0": float(intercept), "budget_gib": budget_gib,
            "max_batch": best, "extrapolated_from": list(batches)}


def memory_usage(data_dir: str | Path, batch: int = 8, fit_batches: Sequence[int] = (8, 16, 24),
                 backbone: str = "default", threads: int | None = None) -> dict:
    """Peak RSS (GiB) of stage 1, stage 2 and stage 2 LoRA at `batch`, and the 24 GiB extrapolation
    (from the steady-state stage-2 step peaks; the whole-run peaks where the reset is unavailable).

    `fit_batches` should be large enough for activations to dominate: at batch 4 the peak is mostly
    the batch-independent optimizer update (4 -> 8 added 0.06 GiB per sample, 8 -> 16 0.18).
    """
    kw = dict(backbone=backbone, threads=threads)
    runs = {"stage1": run_child(data_dir, "align", batch, **kw), "stage2": run_child(data_dir, "joint", batch, **kw),
            "stage2_lora": run_child(data_dir, "joint", batch, lora=True, **kw)}
    fit = {batch: runs["stage2"]}
    for b in fit_batches:
        if b not in fit:
            fit[b] = run_child(data_dir, "joint", b, **kw)
    sizes = sorted(fit)
    peaks = [fit[b]["steady_step_peak_gib"] or fit[b]["peak_rss_gib"] for b in sizes]
    return {"batch": batch, "runs": runs, "stage2_steady_peak_by_batch": dict(zip(map(str, sizes), peaks)),
            "stage2_24gib": largest_batch(sizes, peaks)}


if __name__ == "__main__":
    child()
