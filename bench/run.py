"""Run the benchmark suite: `make bench` = `python -m bench.run --out bench`.

    python -m bench.run [--out bench] [--data DIR] [--sections overhead,encoder,...] [--threads N] [--quick]

Builds a small simulated instruction set (300 subjects, Schaefer-100) in a temporary folder unless
`--data` is given, runs the sections, writes `results.json` and `results.md` to `--out` and prints the
table. `--quick` shrinks every section (a smoke run; its numbers are not the ones to quote).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

SECTIONS = ("connectome", "encoder", "overhead", "pipeline", "tokens", "answering", "padding", "memory", "speed")


def machine_info(threads: int | None) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "threads_flag": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "load_before": round(os.getloadavg()[0], 2)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench", help="folder for results.json and results.md")
    parser.add_argument("--data", default=None, help="an instruction-set folder (default: build one)")
    parser.add_argument("--subjects", type=int, default=300, help="subjects of the built instruction set")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    parser.add_argument("--quick", action="store_true", help="shrink everything (smoke run)")
    parser.add_argument("--demo_timings", default="outputs/demo/timings.json",
                        help="the last `make demo`'s timings.json (demo_minutes)")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    return args


def run(args: argparse.Namespace, log=print) -> dict:
    """Run the chosen sections; returns {"summary", "details", "machine", "notes", "files"}."""
    from threadpoolctl import threadpool_limits

    from . import report
    from .setup import backbone_lm, build_dataset, default_tokenizer, encoder_config, load_bench_data, sample_rows, wrap

    start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads) if args.threads else contextlib.nullcontext()
    sections = [s for s in SECTIONS if s in args.sections.split(",")]
    quick, repeats = args.quick, (2 if args.quick else args.repeats)
    details: dict = {}
    seconds: dict = {}
    notes: list[str] = []
    machine = machine_info(args.threads)

    def timed(name: str):
        log(f"[bench] {name} ...")
        return time.perf_counter()

    def done(name: str, t0: float) -> None:
        seconds[name] = time.perf_counter() - t0
        log(f"[bench] {name}: {seconds[name]:.0f} s")

    with limits, tempfile.TemporaryDirectory(prefix="fcn-llm-bench-") as tmp:
        needs_data = set(sections) - {"connectome", "encoder"}
        data = None
        if needs_data:
            t0 = timed("instruction set")
            folder = Path(args.data) if args.data else build_dataset(Path(tmp) / "data", subjects=args.subjects)
            data = load_bench_data(folder)
            done("data", t0)

        if "connectome" in sections:
            from .connectome import connectome_speed

            t0 = timed("connectome")
            details["connectome"] = connectome_speed(subjects=100 if quick else 1000, repeats=repeats)
            done("connectome", t0)

        if "encoder" in sections:
            from .encoder import encoder_throughput

            t0 = timed("encoder")
            details["encoder"] = encoder_throughput(batch=8 if quick else 32, repeats=repeats)
            done("encoder", t0)

        default = None
        if needs_data - {"memory", "speed"}:
            tokenizer = default_tokenizer()
            default = wrap("SmolLM2-135M-Instruct", backbone_lm("default", len(tokenizer)), tokenizer,
                           encoder_config(data.atlas))
            rows = sample_rows(data.rows["train"], 8, seed=0)

        if "overhead" in sections:
            from .overhead import step_overhead

            t0 = timed("overhead")
            tiny_tokenizer = default_tokenizer()
            tiny = wrap("tiny Llama", backbone_lm("tiny", len(tiny_tokenizer)), tiny_tokenizer, encoder_config(data.atlas))
            details["overhead"] = {
                "default": step_overhead(default, _collate(default, data, rows), repeats=repeats),
                "tiny": step_overhead(tiny, _collate(tiny, data, rows), repeats=repeats),
            }
            del tiny
            gc.collect()
            done("overhead", t0)

        if "pipeline" in sections:
            from .pipeline import loader_throughput, loader_to_step_ratio

            t0 = timed("pipeline")
            loader = loader_throughput(default, data, batch_size=8, batches=10 if quick else 40)
            details["pipeline"] = {"loader": loader}
            if "overhead" in details:
                step_ms = details["overhead"]["default"]["stage2"]["fcn_llm"]["median_ms"]
                details["pipeline"].update(loader_to_step_ratio(loader, step_ms, batch_size=8))
            done("pipeline", t0)

        if "tokens" in sections:
            from .setup import LLAVA_IMAGE_TOKENS
            from .tokens import default_graph_tokens, prompt_lengths, step_time_vs_graph_tokens

            t0 = timed("tokens")
            details["tokens"] = {
                "graph_tokens": default_graph_tokens(), "llava_image_tokens": LLAVA_IMAGE_TOKENS,
                "comparative": prompt_lengths(default, data),
                "step_by_g": step_time_vs_graph_tokens(
                    default, data, rows, lengths=(16, 32) if quick else (16, 32, 64, 128),
                    repeats=max(2, repeats // 2)),  # ratios of 1.4-5x: fewer repeats do
            }
            gc.collect()
            done("tokens", t0)

        if "answering" in sections:
            from .answering import lookup_fcns, scoring_efficiency, scoring_vs_generate, zero_shot_questions

            t0 = timed("answering")
            questions = zero_shot_questions(data, 16 if quick else 48)
            judgments = zero_shot_questions(data, 16 if quick else 64, paradigms=("judgment",), seed=1)
            fcns_of = lookup_fcns(data)
            details["answering"] = {
                "efficiency": scoring_efficiency(default, questions, fcns_of, batch_size=8, repeats=min(repeats, 3)),
                "generate": scoring_vs_generate(default, judgments, fcns_of,
                                                batch_sizes={1: 4, 64: 16} if quick else {1: 16, 64: 64}),
            }
            done("answering", t0)

        if "padding" in sections:
            from .answering import zero_shot_questions
            from .padding import eval_padding, train_padding

            t0 = timed("padding")
            everything = zero_shot_questions(data, 64 if quick else 400,
                                             paradigms=("judgment", "predictive", "comparative"), seed=2)
            details["padding"] = {"train": train_padding(default, data, rows=200 if quick else 2000),
                                  "eval": eval_padding(default, everything)}
            done("padding", t0)

        del default
        gc.collect()
        if "memory" in sections:
            from .memory import memory_usage

            t0 = timed("memory (subprocesses)")
            data_dir = Path(args.data) if args.data else Path(tmp) / "data"
            details["memory"] = memory_usage(data_dir, batch=8, fit_batches=(8, 16) if quick else (8, 16, 24),
                                             threads=args.threads)
            notes.append("max_batch_24gib_stage2 is a straight-line extrapolation of the steady-state stage-2 step "
                         "peak RSS at batch sizes "
                         f"{details['memory']['stage2_24gib']['extrapolated_from']} (padded length "
                         f"{details['memory']['runs']['stage2']['padded_length']}), not a measured run.")
            done("memory", t0)

        if "speed" in sections:
            from .contention import bf16_step_ratio, contention

            t0 = timed("speed (subprocesses: bf16 vs fp32, a busy competing process)")
            data_dir = Path(args.data) if args.data else Path(tmp) / "data"
            cores = os.cpu_count() or 1
            details["speed"] = {
                "bf16": bf16_step_ratio(data_dir, threads=cores, steps=2 if quick else 4),
                "contention": contention(data_dir, threads=(cores, 1) if cores > 1 else (1,),
                                         steps=2 if quick else 4, log=log),
                "main_job_setting": f"threads={cores},wait=adaptive" if cores > 1 else "threads=1,wait=default",
                "demo": demo_timings(args.demo_timings),
            }
            done("speed", t0)

    machine["seconds"] = time.perf_counter() - start
    machine["section_seconds"] = seconds
    machine["load_after"] = round(os.getloadavg()[0], 2)
    notes.insert(0, "fp32 throughout but `bf16_speedup_or_slowdown` (the recipe takes bf16 autocast where the "
                    "hardware computes bf16 natively); the bare LLM gets the same token "
                    "ids with <graph> replaced by a word.")
    summary = report.summarize(details)
    files = report.write_results(args.out, summary, details, machine, notes)
    return {"summary": summary, "details": details, "machine": machine, "notes": notes, "files": files}


def demo_timings(path: str | Path) -> dict:
    """The last demo's timings.json with its total in minutes (`minutes` None when there is none)."""
    import json

    path = Path(path)
    if not path.exists():
        return {"path": str(path), "minutes": None}
    timings = json.loads(path.read_text())
    seconds = sum(v for v in timings.values() if isinstance(v, (int, float)))
    return {"path": str(path), "minutes": seconds / 60, "timings": timings}


def _collate(setup, data, rows):
    from .setup import collate

    return collate(setup, data, rows)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    from .report import markdown_table

    print(markdown_table(result["summary"]))
    print(f"\n{result['machine']['seconds']:.0f} s; wrote {result['files']['json']} and {result['files']['markdown']}")
    return result


if __name__ == "__main__":
    main()
