import numpy as np
import pytest
from sklearn.covariance import EmpiricalCovariance, LedoitWolf

from processing.connectivity import compute_fcn, compute_fcns, validate_fcn, validate_time_series

nilearn_connectome = pytest.importorskip("nilearn.connectome")


def _series(num_subjects=4, num_t=60, num_rois=8, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(num_rois, num_rois)) * 0.4 + np.eye(num_rois)
    return [rng.normal(size=(num_t, num_rois)) @ mix + 3.0 for _ in range(num_subjects)]


@pytest.mark.parametrize("kind", ["correlation", "partial correlation", "tangent"])
@pytest.mark.parametrize("estimator", ["empirical", "ledoit_wolf"])
def test_matches_nilearn(kind, estimator):
    series = _series()
    cov = EmpiricalCovariance() if estimator == "empirical" else LedoitWolf(store_precision=False)
    expected = nilearn_connectome.ConnectivityMeasure(kind=kind, cov_estimator=cov).fit_transform(series)
    np.testing.assert_allclose(compute_fcns(series, kind=kind, cov_estimator=estimator), expected, atol=1e-5)


def test_pearson_equals_numpy_and_subjects_may_differ_in_length():
    series = _series(num_subjects=2) + [_series(num_subjects=1, num_t=90, seed=3)[0]]
    fcns = compute_fcns(series)
    for fcn, ts in zip(fcns, series):
        np.testing.assert_allclose(fcn, np.corrcoef(ts.T), atol=1e-10)


def test_fisher_z_zero_diagonal_and_arctanh():
    ts = _series(num_subjects=1)[0]
    z = compute_fcn(ts, fisher_z=True)
    r = np.corrcoef(ts.T)
    np.testing.assert_allclose(np.diag(z), 0.0)
    off = ~np.eye(len(r), dtype=bool)
    np.testing.assert_allclose(z[off], np.arctanh(r[off]), atol=1e-8)


def test_constant_roi_named():
    ts = _series(num_subjects=1)[0]
    ts[:, 5] = 2.0
    with pytest.raises(ValueError, match=r"constant ROI.*\[5\]"):
        compute_fcn(ts)


@pytest.mark.parametrize("kind,num_t", [("correlation", 2), ("partial correlation", 8)])
def test_too_few_timepoints(kind, num_t):
    ts = _series(num_subjects=1, num_t=num_t)[0]
    with pytest.raises(ValueError, match="timepoints"):
        compute_fcn(ts, kind=kind)


def test_tangent_needs_a_group():
    with pytest.raises(ValueError, match="group"):
        compute_fcn(_series(num_subjects=1)[0], kind="tangent")
    with pytest.raises(ValueError, match="group"):
        compute_fcns(_series(num_subjects=1), kind="tangent")


def test_time_series_bad_ndim_dtype_nan_and_kind():
    with pytest.raises(ValueError, match="ndim=1"):
        validate_time_series(np.zeros(10))
    with pytest.raises(ValueError, match="dtype"):
        validate_time_series(np.array([["a", "b"]] * 5))
    ts = _series(num_subjects=1)[0]
    ts[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*\[2\]"):
        validate_time_series(ts)
    with pytest.raises(ValueError, match="Unknown connectivity kind"):
        compute_fcn(_series(num_subjects=1)[0], kind="coherence")


def test_mixed_roi_counts_rejected():
    with pytest.raises(ValueError, match="same number of ROIs"):
        compute_fcns([_series(num_rois=4)[0], _series(num_rois=5)[0]])


def test_validate_fcn_errors():
    good = np.corrcoef(_series(num_subjects=1)[0].T)
    assert validate_fcn(good, num_rois=8).dtype == np.float32
    with pytest.raises(ValueError, match="square"):
        validate_fcn(good[:, :7])
    with pytest.raises(ValueError, match="N=8 ROIs but the model expects num_rois=10"):
        validate_fcn(good, num_rois=10)
    bad = good.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        validate_fcn(bad)
    bad = good.copy()
    bad[1, 2] += 0.1
    with pytest.raises(ValueError, match="not symmetric"):
        validate_fcn(bad)
    with pytest.raises(ValueError, match="ndim=3"):
        validate_fcn(good[None])
    with pytest.raises(ValueError, match="dtype"):
        validate_fcn(good.astype(bool))


@pytest.mark.parametrize("kind", ["partial correlation", "tangent"])
def test_ledoit_wolf_needs_no_more_timepoints_than_rois(kind):
    series = _series(num_t=6)  # T < N = 8: the empirical covariance is singular, the shrunk one is not
    measure = nilearn_connectome.ConnectivityMeasure(kind=kind, cov_estimator=LedoitWolf(store_precision=False))
    expected = measure.fit_transform(series)
    np.testing.assert_allclose(compute_fcns(series, kind=kind, cov_estimator="ledoit_wolf"), expected, atol=1e-5)
    with pytest.raises(ValueError, match="timepoints"):
        compute_fcns(series, kind=kind)


def test_bad_subject_in_a_batch_is_named():
    series = _series(num_subjects=3)
    series[2][:, 4] = 1.5
    with pytest.raises(ValueError, match=r"subject 2 has 1 constant ROI.*\[4\]"):
        compute_fcns(series)
    series = _series(num_subjects=3)
    series[1][7, 3] = np.inf
    with pytest.raises(ValueError, match=r"subject 1 has NaN or inf values in ROI\(s\) \[3\]"):
        compute_fcns(series, cov_estimator="ledoit_wolf")


def test_many_subjects_span_chunks_and_lengths():
    from processing.connectivity import CHUNK

    long, short = _series(num_subjects=CHUNK + 3), _series(num_subjects=2, num_t=45, seed=1)
    series = long[:10] + short[:1] + long[10:] + short[1:]  # a length group that is not a contiguous range
    fcns = compute_fcns(series)
    for i in (0, 10, 11, CHUNK + 3, CHUNK + 4):
        np.testing.assert_allclose(fcns[i], np.corrcoef(series[i].T), atol=1e-10)
