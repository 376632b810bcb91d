"""Decoding stored upper triangles into FCN matrices."""

import numpy as np
import pytest

from datasets_scripts.loading import DatasetFormatError
from datasets_scripts.triangles import triangle_to_matrices


@pytest.mark.parametrize("with_diagonal", [False, True])
def test_triangle_round_trip(with_diagonal):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 5, 5))
    a = (a + a.transpose(0, 2, 1)) / 2
    a[:, range(5), range(5)] = 1.0
    r, c = np.triu_indices(5, 0 if with_diagonal else 1)
    np.testing.assert_allclose(triangle_to_matrices(a[:, r, c], num_rois=5), a, rtol=1e-6)
    if not with_diagonal:  # the strict triangle is the default reading
        np.testing.assert_allclose(triangle_to_matrices(a[:, r, c]), a, rtol=1e-6)


def test_bad_vector_length():
    with pytest.raises(DatasetFormatError, match="length 7 is not an upper triangle"):
        triangle_to_matrices(np.zeros((2, 7)))
    with pytest.raises(DatasetFormatError, match="does not fit N=5 ROIs"):
        triangle_to_matrices(np.zeros((2, 11)), num_rois=5)
