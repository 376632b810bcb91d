"""Decoding stored FCNs: upper-triangle vectors (what an instruction set's `fcn` column holds) -> matrices."""

from __future__ import annotations

import math

import numpy as np

from .loading import DatasetFormatError


def triangle_to_matrices(vectors: np.ndarray, where: str = "FCN", num_rois: int | None = None) -> np.ndarray:
    """Upper triangles `(S, E)` -> symmetric `(S, N, N)` float32.

    E = N(N-1)/2: strict upper triangle in `numpy.triu_indices(N, 1)` order, unit diagonal; E = N(N+1)/2:
    with the diagonal; E = N*N: full matrices. Every triangular number fits both triangle forms, so
    without `num_rois` the strict form (what correlation FCNs are stored as) is assumed. A vector that
    fits no N raises DatasetFormatError naming `where`.
    """
    e = vectors.shape[1]
    if num_rois is None:
        num_rois = (1 + math.isqrt(1 + 8 * e)) // 2
        if num_rois * (num_rois - 1) // 2 != e:
            full = math.isqrt(e)
            if full * full == e:
                return vectors.reshape(-1, full, full).astype(np.float32)
            raise DatasetFormatError(f"{where}: an FCN vector of length {e} is not an upper triangle of any "
                                     f"N x N matrix.")
    n = int(num_rois)
    if e == n * n:
        return vectors.reshape(-1, n, n).astype(np.float32)
    if e == n * (n - 1) // 2:
        k = 1
    elif e == n * (n + 1) // 2:
        k = 0
    else:
        raise DatasetFormatError(f"{where}: an FCN vector of length {e} does not fit N={n} ROIs "
                                 f"(expected {n * (n - 1) // 2}, {n * (n + 1) // 2} or {n * n}).")
    r, c = np.triu_indices(n, k)
    out = np.zeros((len(vectors), n, n), dtype=np.float32)
    out[:, r, c] = vectors
    out[:, c, r] = vectors
    if k == 1:
        out[:, np.arange(n), np.arange(n)] = 1.0
    return out
