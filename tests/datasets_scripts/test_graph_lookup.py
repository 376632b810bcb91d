import numpy as np
import pytest
import torch

from datasets_scripts.graph_lookup import GraphLookup


def _lookup(n=5, s=3):
    rng = np.random.default_rng(0)
    mats = rng.uniform(-1, 1, (s, n, n))
    mats = (mats + mats.transpose(0, 2, 1)) / 2
    iu = np.triu_indices(n, 1)
    return GraphLookup([f"s{i}" for i in range(s)], mats[:, iu[0], iu[1]].astype(np.float16), n), mats


def test_rebuilds_symmetric_matrix_with_unit_diagonal():
    lookup, mats = _lookup()
    fcn = lookup["s1"]
    assert fcn.shape == (5, 5) and fcn.dtype == torch.float32
    assert torch.equal(fcn, fcn.T) and torch.all(torch.diagonal(fcn) == 1)
    off = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(fcn.numpy()[off], mats[1][off], atol=1e-3)


def test_batch_flattens_graphs_in_order_of_appearance():
    lookup, _ = _lookup()
    out = lookup.batch([["s2"], ["s0", "s1"]])
    assert out.shape == (3, 5, 5)
    assert torch.equal(out[0], lookup["s2"]) and torch.equal(out[2], lookup["s1"])


def test_missing_id_names_it():
    lookup, _ = _lookup()
    with pytest.raises(KeyError, match="'nope' is not in the subjects data"):
        lookup["nope"]


def test_wrong_triangle_size_names_both_sizes():
    with pytest.raises(ValueError, match=r"\(S, 10\) for N=5.*\(2, 6\)"):
        GraphLookup(["a", "b"], np.zeros((2, 6)), 5)


def test_matrices_are_stored_once():
    lookup, _ = _lookup(s=4)
    assert lookup.triangles.shape == (4, 10)
