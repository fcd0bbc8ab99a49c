"""fcn-bench statistics: percentiles against numpy, CV warning, throughput and speedups."""

import math

import numpy as np
import pytest

from fcn_deploy.benchmarks import stats


def test_summary_matches_numpy():
    rng = np.random.default_rng(3)
    a = rng.gamma(2.0, 5.0, size=257)
    s = stats.summarize(a)
    assert s.count == 257
    assert s.min == pytest.approx(a.min())
    assert s.max == pytest.approx(a.max())
    assert s.mean == pytest.approx(a.mean())
    assert s.median == pytest.approx(np.median(a))
    for q in (90, 95, 99):
        assert getattr(s, f"p{q}") == pytest.approx(np.percentile(a, q))
    assert s.std == pytest.approx(a.std())
    assert s.cv == pytest.approx(a.std() / a.mean())
    assert list(s.to_dict()) == list(stats.SUMMARY_KEYS)


def test_summary_of_small_series():
    s = stats.summarize([4.0, 1.0, 3.0, 2.0])
    assert (s.min, s.median, s.max) == (1.0, 2.5, 4.0)
    assert s.p90 == pytest.approx(3.7)


def test_summary_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([1.0, float("nan")])
    assert stats.summarize_optional([None, None]) is None
    assert stats.summarize_optional([None, 2.0, 4.0]).mean == 3.0


def test_cv_warning_only_when_noisy():
    steady = stats.summarize([10.0, 10.1, 9.9, 10.0, 10.05])
    noisy = stats.summarize([10.0, 30.0, 11.0, 9.0, 25.0])
    assert stats.cv_warning(steady, label="x") is None
    msg = stats.cv_warning(noisy, label="onnx:m.onnx")
    assert msg is not None and "onnx:m.onnx" in msg and "coefficient of variation" in msg
    # The threshold is honoured both ways.
    assert stats.cv_warning(noisy, threshold=10.0) is None
    assert stats.cv_warning(steady, threshold=0.001) is not None
    # One sample has no spread to judge.
    assert stats.cv_warning(stats.summarize([5.0])) is None


def test_throughput_is_images_over_total_time():
    assert stats.throughput([100.0, 100.0, 200.0], batch=2) == pytest.approx(2 * 3 / 0.4)
    assert math.isinf(stats.throughput([0.0], batch=1))


def test_speedups():
    assert stats.speedup(300.0, 100.0) == pytest.approx(3.0)
    assert stats.speedup(100.0, 0.0) is None
    ref = [10.0, 20.0, 10.0, 40.0]
    other = [5.0, 10.0, 5.0, 20.0]  # always twice as fast, even when both slow down
    assert stats.paired_speedup(ref, other) == pytest.approx(2.0)
    assert stats.paired_speedup([], other) is None
