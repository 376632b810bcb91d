"""Item 2: encoder graphs/s (forward + backward) at N = 100, 200, 400 ROIs, sparse PyG vs dense layers.

Dense path: the encoder as shipped (`DenseGraphConv` on the `(B, N, N)` top-k adjacency). Sparse path:
the same encoder with each message-passing layer's `DenseGraphConv` swapped for PyG's sparse
`GraphConv` (same weights, same maths, scatter over an `edge_index`; the dense-to-sparse conversion is
part of its cost). Both are checked to give the same graph tokens. Cost ~ N^k: k is fitted per path.
`bench/encoder_cost.py` compares every dense layer kind and one sparse GATv2Conv layer.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GraphConv
from torch_geometric.utils import dense_to_sparse

from modeling_fcnllm import FCNEncoderConfig, FCNEncoderModel
from modeling_fcnllm.modeling_fcnllm import FCNGraphLayer

from .setup import encoder_config
from .timing import fit_exponent, interleaved

ATLASES = {100: "schaefer100-7", 200: "schaefer200-7", 400: "schaefer400-7"}


class SparseGraphLayer(nn.Module):
    """`FCNGraphLayer` ("graph") with PyG's sparse `GraphConv`: `h + dropout(gelu(conv(norm(h), edges)))`."""

    def __init__(self, dense: FCNGraphLayer):
        super().__init__()
        hidden = dense.norm.normalized_shape[0]
        self.norm = copy.deepcopy(dense.norm)
        self.dropout = copy.deepcopy(dense.dropout)
        self.conv = GraphConv(hidden, hidden, aggr="add")
        self.conv.load_state_dict(dense.conv.state_dict())  # lin_rel (with bias) and lin_root: same names

    def forward(self, hidden: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """`hidden` `(B, N, H)`, `adjacency` `(B, N, N)` -> `(B, N, H)`; out_i = sum_j A_ij h_j as the dense layer."""
        batch, num_rois, width = hidden.shape
        edge_index, edge_weight = dense_to_sparse(adjacency)  # row i, column j: message j -> i
        messages = self.conv(self.norm(hidden).reshape(-1, width), edge_index.flip(0), edge_weight)
        return hidden + self.dropout(F.gelu(messages.view(batch, num_rois, width)))


def sparse_copy(encoder: FCNEncoderModel) -> FCNEncoderModel:
    """The same encoder with sparse message passing (same weights)."""
    sparse = copy.deepcopy(encoder)
    sparse.layers = nn.ModuleList(SparseGraphLayer(layer) for layer in encoder.layers)
    return sparse


def random_fcns(batch: int, num_rois: int, seed: int = 0) -> torch.Tensor:
    """`(batch, N, N)` correlation matrices of random time series with a shared component."""
    rng = np.random.default_rng(seed)
    series = torch.from_numpy(rng.normal(size=(batch, 200, num_rois)) + rng.normal(size=(batch, 200, 1)))
    series = series - series.mean(1, keepdim=True)
    series = series / series.norm(dim=1, keepdim=True)
    return (series.transpose(1, 2) @ series).float()


def encoder_throughput(sizes: dict[int, str | FCNEncoderConfig] | None = None, batch: int = 32, repeats: int = 3,
                       warmup: int = 1) -> dict:
    """Graphs/s of the dense and sparse encoders per N, their max output difference, fitted exponents."""
    sizes = sizes or ATLASES
    rows = {}
    for num_rois, spec in sizes.items():
        config = spec if isinstance(spec, FCNEncoderConfig) else encoder_config(spec)
        torch.manual_seed(0)
        dense = FCNEncoderModel(config).eval()  # eval: no dropout, so both paths compute the same tokens
        sparse = sparse_copy(dense).eval()
        fcns = random_fcns(batch, num_rois)
        with torch.no_grad():
            diff = float((dense(fcns).graph_tokens - sparse(fcns).graph_tokens).abs().max())
        times = interleaved({"dense": lambda: dense(fcns).graph_tokens.sum().backward(),
                             "sparse": lambda: sparse(fcns).graph_tokens.sum().backward()},
                            repeats=repeats, warmup=warmup)
        rows[num_rois] = {
            "atlas": spec if isinstance(spec, str) else f"{num_rois} ROIs", "graph_tokens": config.graph_seq_length,
            "edges_per_graph": config.num_rois * config.neighbours_per_node,
            "dense_graphs_per_s": batch / times["dense"].median, "sparse_graphs_per_s": batch / times["sparse"].median,
            "dense_ms_per_graph": times["dense"].median / batch * 1e3,
            "sparse_ms_per_graph": times["sparse"].median / batch * 1e3,
            "sparse_over_dense": times["sparse"].median / times["dense"].median,
            "max_token_difference": diff,
        }
    n = list(rows)
    return {
        "batch": batch, "per_rois": rows,
        "dense_exponent": fit_exponent(n, [rows[k]["dense_ms_per_graph"] for k in n]) if len(n) > 1 else float("nan"),
        "sparse_exponent": fit_exponent(n, [rows[k]["sparse_ms_per_graph"] for k in n]) if len(n) > 1 else float("nan"),
    }
