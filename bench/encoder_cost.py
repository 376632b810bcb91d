"""What the FCN encoder costs per graph on this machine, next to a sparse PyG layer and the LLM.

    python bench/encoder_cost.py [--batch 32] [--repeats 5] [--threads 2]

Prints milliseconds per graph (forward, and forward+backward) of the whole `FCNEncoderModel` for each
dense PyG layer kind at Schaefer-100 / 200 / 400, one message-passing layer of the dense default
(`DenseGraphConv`) against the sparse `GATv2Conv` on the same top-k graphs (the choice the encoder
made), and the ratio to one SmolLM2-135M forward over a 64-token prompt, all measured in one run:
the machine is noisy, read the ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch_geometric.nn import DenseGraphConv, GATv2Conv
from torch_geometric.utils import dense_to_sparse

from modeling_fcnllm import FCNEncoderConfig, FCNEncoderModel
from modeling_fcnllm.modeling_fcnllm import sparsify_fcn
from processing import load_atlas


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def random_fcns(batch: int, num_rois: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    series = rng.normal(size=(batch, 200, num_rois)) + rng.normal(size=(batch, 200, 1))
    return torch.from_numpy(np.stack([np.corrcoef(s.T) for s in series]).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip_llm", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder_rows, layer_rows = [], []
    for atlas_name in ("schaefer100-7", "schaefer200-7", "schaefer400-7"):
        atlas = load_atlas(atlas_name)
        fcns = random_fcns(args.batch, atlas.num_rois)
        for gnn_type in ("graph", "gin", "gcn", "gat"):
            config = FCNEncoderConfig(num_rois=atlas.num_rois, network_assignment=atlas.network_assignment, gnn_type=gnn_type)
            encoder = FCNEncoderModel(config)

            def forward():
                with torch.no_grad():
                    encoder(fcns)

            def train_step():
                encoder(fcns).graph_tokens.sum().backward()

            fwd = best_time(forward, args.repeats) / args.batch * 1e3
            step = best_time(train_step, args.repeats) / args.batch * 1e3
            encoder_rows.append((atlas_name, gnn_type, config.graph_seq_length, fwd, step))

        # one layer, dense vs sparse, on the same top-k graph
        hidden = FCNEncoderConfig().hidden_size
        adjacency = sparsify_fcn(fcns, FCNEncoderConfig(num_rois=atlas.num_rois).neighbours_per_node)
        x = torch.randn(args.batch, atlas.num_rois, hidden, requires_grad=True)
        edge_index, edge_weight = dense_to_sparse(adjacency)
        edge_attr = torch.stack([edge_weight.abs(), edge_weight], -1)
        dense, sparse = DenseGraphConv(hidden, hidden), GATv2Conv(hidden, hidden // 4, heads=4, edge_dim=2)
        t_dense = best_time(lambda: dense(x, adjacency).sum().backward(), args.repeats)
        t_sparse = best_time(lambda: sparse(x.reshape(-1, hidden), edge_index, edge_attr).sum().backward(), args.repeats)
        layer_rows.append((atlas_name, t_dense / args.batch * 1e3, t_sparse / args.batch * 1e3))

    lm_ms = None
    if not args.skip_llm:
        from transformers import AutoModelForCausalLM

        from modeling_fcnllm.backbone import default_backbone_dir

        lm = AutoModelForCausalLM.from_pretrained(default_backbone_dir()).eval()
        ids = torch.randint(0, 1000, (args.batch, 64))

        def lm_forward():
            with torch.no_grad():
                lm(input_ids=ids)

        lm_ms = best_time(lm_forward, args.repeats) / args.batch * 1e3
        print(f"SmolLM2-135M forward, 64 tokens: {lm_ms:.2f} ms per sample")
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch}, median of {args.repeats}")
    print("| atlas | layer | G | encoder fwd ms/graph | fwd+bwd ms/graph | fwd / LLM fwd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for atlas_name, gnn_type, g, fwd, step in encoder_rows:
        ratio = f"{fwd / lm_ms:.3f}" if lm_ms else "-"
        print(f"| {atlas_name} | {gnn_type} | {g} | {fwd:.3f} | {step:.3f} | {ratio} |")
    print("\n| atlas | one layer fwd+bwd ms/graph: DenseGraphConv | sparse GATv2Conv | sparse / dense |")
    print("| --- | --- | --- | --- |")
    for atlas_name, d, s in layer_rows:
        print(f"| {atlas_name} | {d:.3f} | {s:.3f} | {s / d:.1f}x |")


if __name__ == "__main__":
    main()
