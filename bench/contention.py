"""Stage-1 training steps in fresh processes: bf16 autocast vs fp32, and the slowdown when a busy
process shares the cores, for each thread setting.

    python -m bench.contention --data DIR [--batch 8] [--steps 4] [--threads 2,1] [--wait_policies default,PASSIVE]

A child (`--child`) loads SmolLM2-135M, wraps it as stage 1 trains it (LLM frozen, encoder and
projector trained), collates one batch of `--batch` training instructions and times `--steps`
AdamW steps per precision, interleaved, after one warm-up step each; it prints one JSON line.
The parent runs a child per (threads, OMP wait policy), alone and next to one competing
`python -c 'while True: pass'`, and reports each setting's contended / alone step-time ratio.
OMP_WAIT_POLICY is read when the OpenMP runtime loads, so each setting needs its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY_LOOP = "while True: pass"


def child(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16")
    parser.add_argument("--adaptive", action="store_true", help="threads at the free cores (fcn_llm.threads)")
    args = parser.parse_args(argv)

    import torch

    from fcn_llm.cli.train import freeze_for_stage

    from .setup import backbone_lm, collate, default_tokenizer, encoder_config, load_bench_data, sample_rows, wrap

    from fcn_llm.threads import enable_adaptive_threads, rebalance

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.adaptive:
        enable_adaptive_threads(interval_s=0.5)
    data = load_bench_data(args.data)
    tokenizer = default_tokenizer()
    setup = wrap("default", backbone_lm("default", len(tokenizer)), tokenizer, encoder_config(data.atlas))
    setup.bare = None
    model = setup.model
    freeze_for_stage(model, "align", freeze_encoder=False)
    model.train()
    batch = collate(setup, data, sample_rows(data.rows["train"], args.batch, seed=0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)

    thread_counts = []

    def step(bf16: bool) -> float:
        thread_counts.append(rebalance())
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for p in precisions:
        step(p == "bf16")  # warm-up
    for _ in range(args.steps):
        for p in precisions:
            times[p].append(step(p == "bf16"))
    record = {"threads": torch.get_num_threads(), "adaptive": args.adaptive,
              "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
              "batch": args.batch, "padded_length": int(batch["input_ids"].shape[1]),
              "step_s": {p: sorted(t)[len(t) // 2] for p, t in times.items()}, "repeats_s": times,
              "threads_per_step": thread_counts}
    print(json.dumps(record))
    return record


@contextmanager
def busy_process(active: bool):
    """One competing busy loop (a second Python process) while the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if active else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def run_child(data_dir: str | Path, *, threads: int, wait_policy: str, precisions: str = "fp32", batch: int = 8,
              steps: int = 4, contended: bool = False, timeout_s: float = 600) -> dict:
    """One child process (alone, or next to a busy loop); its JSON record."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy not in ("default", "adaptive"):
        env["OMP_WAIT_POLICY"] = wait_policy
    cmd = [sys.executable, "-m", "bench.contention", "--child", "--data", str(data_dir), "--threads", str(threads),
           "--precisions", precisions, "--batch", str(batch), "--steps", str(steps)]
    if wait_policy == "adaptive":  # the default (spinning) policy, threads at the free cores
        cmd.append("--adaptive")
    with busy_process(contended):
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bf16_step_ratio(data_dir: str | Path, *, threads: int, batch: int = 8, steps: int = 4) -> dict:
    """fp32 step time / bf16-autocast step time of the same stage-1 batch (> 1: bf16 is faster here)."""
    record = run_child(data_dir, threads=threads, wait_policy="default", precisions="fp32,bf16", batch=batch,
                       steps=steps)
    return {**record, "bf16_speedup_or_slowdown": record["step_s"]["fp32"] / record["step_s"]["bf16"]}


def contention(data_dir: str | Path, *, threads: tuple[int, ...] = (2, 1),
               wait_policies: tuple[str, ...] = ("default", "PASSIVE", "adaptive"), batch: int = 8, steps: int = 4,
               log=print) -> dict:
    """Per setting "threads=T,wait=P": fp32 step seconds alone and contended, and their ratio."""
    settings = {}
    for t in threads:
        for policy in (wait_policies if t > 1 else ("default",)):  # one thread never waits at a barrier
            name = f"threads={t},wait={policy}"
            alone = run_child(data_dir, threads=t, wait_policy=policy, batch=batch, steps=steps)
            busy = run_child(data_dir, threads=t, wait_policy=policy, batch=batch, steps=steps, contended=True)
            settings[name] = {"alone_s": alone["step_s"]["fp32"], "contended_s": busy["step_s"]["fp32"],
                              "slowdown": busy["step_s"]["fp32"] / alone["step_s"]["fp32"]}
            log(f"[contention] {name}: {settings[name]}")
    return settings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", default="2,1")
    parser.add_argument("--wait_policies", default="default,PASSIVE,adaptive",
                        help="OpenMP wait policies (default, PASSIVE, ACTIVE) or adaptive: the default policy with "
                             "threads at the free cores")
    args = parser.parse_args(argv)
    result = {
        "bf16": bf16_step_ratio(args.data, threads=int(args.threads.split(",")[0]), batch=args.batch, steps=args.steps),
        "contention": contention(args.data, threads=tuple(int(t) for t in args.threads.split(",")),
                                 wait_policies=tuple(args.wait_policies.split(",")), batch=args.batch,
                                 steps=args.steps),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if "--child" in sys.argv[1:]:
        child()
    else:
        main()
