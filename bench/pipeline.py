"""Item 7: the data pipeline. Samples/s of what the Trainer's data loader does per batch (fetch the
rows from the `datasets` split, `FCNInstructionCollator`: chat template, tokenization, `GraphLookup`
of the FCNs, validation and z-scoring), to be set against the training step's samples/s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fcn_llm.training.collator import FCNInstructionCollator

from .setup import BenchData, Setup
from .timing import Timing, time_once


def loader_throughput(setup: Setup, data: BenchData, batch_size: int = 8, batches: int = 40, split: str = "train",
                      seed: int = 1) -> dict:
    """Median ms per batch and samples/s of row fetching + collation, over `batches` random batches."""
    collator = FCNInstructionCollator(setup.processor, data.lookup)
    source = data.datasets.get(split) if data.datasets else None
    rows: Sequence = source if source is not None else data.rows[split]
    order = np.random.default_rng(seed).permutation(len(rows))[: batch_size * batches].tolist()
    fetch = getattr(rows, "__getitems__", None) or (lambda idx: [rows[i] for i in idx])
    collator(fetch(order[:batch_size]))  # warm-up
    timing = Timing()
    for start in range(0, len(order), batch_size):
        seconds, _ = time_once(lambda: collator(fetch(order[start : start + batch_size])))
        timing.times.append(seconds)
    return {"batch_size": batch_size, "batches": len(timing.times), "per_batch": timing.as_dict(),
            "samples_per_s": batch_size / timing.median}


def loader_to_step_ratio(loader: dict, step_ms: float, batch_size: int) -> dict:
    """Loader samples/s over training-step samples/s (>= 5: the loader is never the bottleneck)."""
    step_rate = batch_size / (step_ms / 1e3)
    return {"loader_samples_per_s": loader["samples_per_s"], "step_samples_per_s": step_rate,
            "ratio": loader["samples_per_s"] / step_rate}
