"""A small self-contained HTML report per attribute (PNG figures inlined as base64)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).stem)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def write_html(path: str | Path, title: str, summary: dict, figures: Sequence[Path], pairs: Sequence[Sequence],
               edges: Sequence[dict], ground_truth: dict | None = None) -> Path:
    """Write the report.

    Args:
        summary: key -> value lines at the top (question, method, subjects, ...).
        figures: PNG files, inlined in order.
        pairs: rows (network a, network b, mean attribution, effect size, contrast effect size, activation
            pattern's mean r, its permutation z, its family-wise p; "" where absent).
        edges: strongest edges (`cohort.top_edges`).
        ground_truth: `ground_truth.evaluate_map` output, if the data come from the simulator.
    """
    parts = [f"<h1>{html.escape(title)}</h1>",
             _table(["", ""], [(k, v) for k, v in summary.items()])]
    if ground_truth:
        gt_rows = [(k, ground_truth[k]) for k in ("map", "planted_pairs", "planted_edge_auc", "planted_pair_rank",
                                                  "primary_pair", "primary_pair_rank", "top_pair", "top_pair_z",
                                                  "top_pair_p_fwe") if k in ground_truth]
        gradient = ground_truth.get("gradient") or {}
        gt_rows += [(f"gradient {k}", gradient[k]) for k in ("planted_edge_auc", "planted_pair_rank", "top_pair")
                    if k in gradient and gradient is not ground_truth]
        parts += ["<h2>Ground truth (simulator)</h2>", _table(["metric", "value"], gt_rows)]
    parts += ["<h2>Figures</h2>", "".join(_img(f) for f in figures)]
    parts += ["<h2>Network pairs</h2>",
              _table(["network a", "network b", "mean attribution", "effect size (d vs 0)", "contrast d (1 vs 0)",
                      "pattern mean r", "pattern z", "pattern p (FWE)"], pairs)]
    parts += ["<h2>Strongest edges (cohort mean)</h2>",
              _table(["ROI a", "ROI b", "attribution"], [(e["roi_a"], e["roi_b"], e["value"]) for e in edges])]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%;margin:4px}")
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path = Path(path)
    path.write_text(doc)
    return path


__all__ = ["write_html"]
