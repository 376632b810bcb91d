"""Sliding-window FCNs drawn per instruction for stage 1."""

import numpy as np
import pytest
import torch

from datasets_scripts.window_lookup import WindowedFCNs, window_starts


def _series(t=140, n=7, seed=0):
    return np.random.default_rng(seed).normal(size=(t, n)).astype(np.float16)


def test_window_starts_follow_the_stride_grid():
    assert window_starts(140, 100, 20).tolist() == [0, 20, 40]
    assert window_starts(100, 100, 20).tolist() == [0]
    assert window_starts(99, 100, 20).tolist() == []


def test_each_call_is_the_fcn_of_one_window_on_the_grid_and_the_draws_vary():
    series = _series()
    whole = lambda sid: torch.full((7, 7), 9.0)  # noqa: E731 - never called for a windowed subject
    windows = WindowedFCNs({"a": series}, whole, window_length=100, window_stride=20)
    candidates = [np.corrcoef(series[s:s + 100].astype(np.float64).T) for s in (0, 20, 40)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        fcn = windows("a")
        assert fcn.shape == (7, 7) and fcn.dtype == torch.float32
        match = [i for i, c in enumerate(candidates) if np.allclose(fcn.numpy(), c, atol=1e-5)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {0, 1, 2}


def test_subjects_without_a_long_enough_series_are_read_whole():
    whole = {"b": torch.eye(7), "c": 2 * torch.eye(7)}
    windows = WindowedFCNs({"a": _series(), "c": _series(t=60)}, whole.__getitem__, window_length=100)
    assert torch.equal(windows("b"), whole["b"]) and torch.equal(windows("c"), whole["c"])
    assert windows.windowed_subjects() == 1


@pytest.mark.parametrize("length, stride, message", [(2, 20, "window_length must be at least 3"),
                                                      (100, 0, "window_stride must be at least 1")])
def test_bad_window_settings_are_named(length, stride, message):
    with pytest.raises(ValueError, match=message):
        WindowedFCNs({}, lambda sid: None, window_length=length, window_stride=stride)
