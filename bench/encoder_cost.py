"""What the FCN encoder costs per graph on this machine, next to the LLM forward it feeds.

    python bench/encoder_cost.py [--batch 32] [--repeats 5]

Prints milliseconds per graph (forward, and forward+backward) for each GNN kind at Schaefer-100 and
Schaefer-400, and the ratio to one SmolLM2-135M forward over a 64-token prompt, all measured in one
run (the machine is noisy: read the ratios).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from modeling_fcnllm import FCNEncoder, FCNEncoderConfig
from processing import load_atlas


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for atlas_name in ("schaefer100-7", "schaefer400-7"):
        atlas = load_atlas(atlas_name)
        rng = np.random.default_rng(0)
        series = rng.normal(size=(args.batch, 200, atlas.num_rois))
        fcns = torch.from_numpy(np.stack([np.corrcoef(s.T) for s in series]).astype(np.float32))
        for gnn_type in ("graph", "gin", "gcn", "gat"):
            config = FCNEncoderConfig(
                num_rois=atlas.num_rois, network_assignment=atlas.network_assignment, gnn_type=gnn_type
            )
            encoder = FCNEncoder(config)

            def forward():
                with torch.no_grad():
                    encoder(fcns)

            def train_step():
                encoder(fcns).graph_tokens.sum().backward()

            fwd = _time(forward, args.repeats) / args.batch * 1e3
            step = _time(train_step, args.repeats) / args.batch * 1e3
            rows.append((atlas_name, gnn_type, config.graph_seq_length, fwd, step))

    from transformers import AutoModelForCausalLM

    from modeling_fcnllm.backbone import default_backbone_dir

    lm = AutoModelForCausalLM.from_pretrained(default_backbone_dir()).eval()
    ids = torch.randint(0, 1000, (args.batch, 64))

    def lm_forward():
        with torch.no_grad():
            lm(input_ids=ids)

    lm_ms = _time(lm_forward, args.repeats) / args.batch * 1e3
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch}")
    print(f"SmolLM2-135M forward, 64 tokens: {lm_ms:.2f} ms per sample")
    print("| atlas | gnn | G | encoder fwd ms/graph | fwd+bwd ms/graph | fwd / LLM fwd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for atlas_name, gnn_type, g, fwd, step in rows:
        print(f"| {atlas_name} | {gnn_type} | {g} | {fwd:.3f} | {step:.3f} | {fwd / lm_ms:.3f} |")


if __name__ == "__main__":
    main()
