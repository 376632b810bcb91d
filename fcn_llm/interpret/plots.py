"""Figures people read: a network-ordered connectivity-matrix heatmap, a network-by-network summary,
and a glass-brain connectome (nilearn's `plot_connectome` on the atlas' MNI coordinates).

Everything draws with matplotlib's Agg backend into PNG files; nothing opens a window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def network_order(assignment: Sequence[int]) -> np.ndarray:
    """ROI order grouping ROIs by network (stable within a network)."""
    return np.argsort(np.asarray(assignment), kind="stable")


def _limit(values: np.ndarray) -> float:
    v = float(np.nanmax(np.abs(values))) if values.size else 0.0
    return v if v > 0 else 1.0


def plot_matrix(edge_map: np.ndarray, assignment: Sequence[int], network_names: Sequence[str], path: str | Path,
                title: str = "", label: str = "attribution") -> Path:
    """`(N, N)` map as a heatmap with ROIs ordered by network, network boundaries and names."""
    assignment = np.asarray(assignment)
    order = network_order(assignment)
    mat = edge_map[np.ix_(order, order)]
    lim = _limit(mat)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    sizes = np.bincount(assignment[order], minlength=len(network_names))
    bounds = np.cumsum(sizes)
    for b in bounds[:-1]:
        ax.axhline(b - 0.5, color="k", lw=0.6)
        ax.axvline(b - 0.5, color="k", lw=0.6)
    centres = bounds - sizes / 2 - 0.5
    ax.set_xticks(centres, network_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(centres, network_names, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    return _save(fig, ax, title, path)


def _save(fig, ax, title: str, path: str | Path) -> Path:
    """Title, tight layout, PNG at 110 dpi, figure closed."""
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_network_matrix(network_map: np.ndarray, network_names: Sequence[str], path: str | Path, title: str = "",
                        highlight: Sequence[tuple[str, str]] = (), label: str = "value") -> Path:
    """`(K, K)` network-by-network summary, annotated, planted pairs (`highlight`) outlined."""
    k = len(network_names)
    lim = _limit(network_map)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    im = ax.imshow(network_map, cmap="RdBu_r", vmin=-lim, vmax=lim)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{network_map[i, j]:.2g}", ha="center", va="center", fontsize=7)
    names = list(network_names)
    for a, b in highlight:
        if a in names and b in names:
            for i, j in {(names.index(a), names.index(b)), (names.index(b), names.index(a))}:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="lime", lw=2.2))
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    return _save(fig, ax, title, path)


def plot_glass_brain(edge_map: np.ndarray, coords: np.ndarray, path: str | Path, title: str = "",
                     top_edges: int = 40, node_values: np.ndarray | None = None) -> Path:
    """Glass-brain connectome of the `top_edges` strongest |edges| (nilearn `plot_connectome`)."""
    from nilearn import plotting

    n = edge_map.shape[0]
    iu = np.triu_indices(n, 1)
    values = np.abs(edge_map[iu])
    keep = min(top_edges, int((values > 0).sum()))
    adjacency = np.zeros_like(edge_map)
    if keep:
        idx = np.argsort(-values)[:keep]
        adjacency[iu[0][idx], iu[1][idx]] = edge_map[iu[0][idx], iu[1][idx]]
        adjacency = adjacency + adjacency.T
    size = 10.0 if node_values is None else 5 + 40 * np.abs(node_values) / _limit(node_values)
    fig = plt.figure(figsize=(9, 3.2))
    display = plotting.plot_connectome(adjacency, np.asarray(coords), node_size=size, node_color="k",
                                       edge_cmap="RdBu_r", edge_vmin=-_limit(adjacency), edge_vmax=_limit(adjacency),
                                       display_mode="ortho", colorbar=True, title=title or None, figure=fig)
    path = Path(path)
    display.savefig(str(path), dpi=110)
    display.close()
    plt.close(fig)
    return path


def plot_roi_bars(values: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "", k: int = 15) -> Path:
    """Bar chart of the `k` ROIs with the largest |value|."""
    order = np.argsort(-np.abs(values))[:k][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(order) + 1))
    ax.barh(range(len(order)), values[order], color=["#c0392b" if v > 0 else "#2471a3" for v in values[order]])
    ax.set_yticks(range(len(order)), [str(labels[i]) for i in order], fontsize=7)
    return _save(fig, ax, title, path)


__all__ = ["network_order", "plot_glass_brain", "plot_matrix", "plot_network_matrix", "plot_roi_bars"]
