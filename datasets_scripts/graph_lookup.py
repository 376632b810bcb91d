"""Collator-side lookup: subject ids -> FCN tensors, each subject's matrix stored once.

Instructions carry only `subject_ids`; a collator asks `GraphLookup` for the FCNs of a batch, in
order of appearance (as LLaVA flattens images), so no matrix is duplicated per instruction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .triangles import triangle_to_matrices


class GraphLookup:
    """Maps subject_id -> FCN `(N, N)` float32 tensor rebuilt from the stored upper triangle.

    Args:
        subject_ids: S ids.
        triangles: `(S, N(N-1)/2)` upper triangles without the diagonal (any float dtype; kept as is).
        num_rois: N.
    """

    def __init__(self, subject_ids: Iterable[str], triangles: np.ndarray, num_rois: int):
        ids = [str(s) for s in subject_ids]
        expected = num_rois * (num_rois - 1) // 2
        if triangles.ndim != 2 or triangles.shape[1] != expected:
            raise ValueError(f"Upper triangles must have shape (S, {expected}) for N={num_rois} ROIs, "
                             f"got {tuple(triangles.shape)}.")
        if len(ids) != len(triangles):
            raise ValueError(f"{len(ids)} subject ids but {len(triangles)} FCNs.")
        self._index: dict[str, int] = {}
        for i, sid in enumerate(ids):
            if sid in self._index:
                raise ValueError(f"Subject id {sid!r} appears twice in the subjects data.")
            self._index[sid] = i
        self.triangles = triangles
        self.num_rois = num_rois

    @classmethod
    def from_dataset(cls, subjects) -> "GraphLookup":
        """From a `datasets.Dataset` / `DatasetDict` of the `subjects` config (all splits are merged)."""
        parts = list(subjects.values()) if isinstance(subjects, dict) else [subjects]
        ids, tris, sizes = [], [], set()
        for part in parts:
            table = part.data.table if hasattr(part.data, "table") else part.data
            ids += table.column("subject_id").to_pylist()
            fcn = table.column("fcn").combine_chunks()
            width = fcn.type.list_size if hasattr(fcn.type, "list_size") else None
            values = fcn.flatten().to_numpy(zero_copy_only=False)
            tris.append(values.reshape(len(fcn), width if width else -1))
            sizes |= set(table.column("num_rois").to_pylist())
        if len(sizes) != 1:
            raise ValueError(f"Subjects of different atlas sizes in one lookup: N in {sorted(sizes)}.")
        return cls(ids, np.concatenate(tris), int(sizes.pop()))

    @classmethod
    def from_folder(cls, folder: str | Path) -> "GraphLookup":
        """From a folder written by `build_instructions.py` (reads its `subjects` config)."""
        from .loading import load_config

        return cls.from_dataset(load_config(folder, "subjects"))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, subject_id: str) -> bool:
        return subject_id in self._index

    def __getitem__(self, subject_id: str) -> torch.Tensor:
        """The FCN `(N, N)` float32 with a unit diagonal."""
        return self.stack([subject_id])[0]

    def stack(self, subject_ids: Iterable[str]) -> torch.Tensor:
        """FCNs `(G, N, N)` float32 for G ids, in the given order."""
        rows = []
        for sid in subject_ids:
            if sid not in self._index:
                raise KeyError(f"Subject id {sid!r} is not in the subjects data ({len(self)} subjects loaded); "
                               "build the lookup from the same dataset folder as the instructions.")
            rows.append(self._index[sid])
        triangles = np.asarray(self.triangles[rows], dtype=np.float32).reshape(len(rows), -1)
        return torch.from_numpy(triangle_to_matrices(triangles, "GraphLookup", self.num_rois))

    def batch(self, subject_ids_per_example: Iterable[Iterable[str]]) -> torch.Tensor:
        """`graph_values` `(total graphs, N, N)` of a batch: every example's graphs, in order of appearance."""
        return self.stack([sid for ids in subject_ids_per_example for sid in ids])
