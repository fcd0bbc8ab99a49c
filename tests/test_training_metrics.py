"""The paper's four metrics (fcn_deploy.metrics) against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcn_deploy.metrics import ConfusionMatrix, fast_hist, format_scores, scores_from_hist


def test_four_metrics_by_hand():
    # 3 classes + ignore (3). 10 labelled pixels.
    label = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    pred = np.array([0, 0, 0, 1, 1, 1, 0, 2, 2, 0, 1, 2])
    cm = ConfusionMatrix(3)
    cm.update(label, pred)
    # hist[true, pred]
    np.testing.assert_array_equal(cm.hist, [[3, 1, 0], [1, 2, 0], [1, 0, 2]])
    s = cm.scores(["a", "b", "c"])
    assert s["pixel_acc"] == pytest.approx(7 / 10)
    assert s["mean_acc"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    iu = [3 / (4 + 5 - 3), 2 / (3 + 3 - 2), 2 / (3 + 2 - 2)]
    assert s["mean_iu"] == pytest.approx(sum(iu) / 3)
    assert s["fw_iu"] == pytest.approx(0.4 * iu[0] + 0.3 * iu[1] + 0.3 * iu[2])
    assert s["per_class_iu"]["b"] == pytest.approx(0.5)
    line = format_scores(s)
    assert "pixel acc 70.00" in line and "mean IU" in line


def test_absent_class_is_nan_and_left_out_of_means():
    hist = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 0]])
    s = scores_from_hist(hist)
    assert s["per_class_iu"]["2"] is None
    assert s["mean_iu"] == 1.0 and s["mean_acc"] == 1.0


def test_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, 1000)
    pred = rng.integers(0, 4, 1000)
    one = ConfusionMatrix(4)
    one.update(lab, pred)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(lab[:300], pred[:300])
    b.update(lab[300:], pred[300:])
    a.merge(b)
    np.testing.assert_array_equal(a.hist, one.hist)
    assert one.hist.sum() == int((lab < 4).sum())  # label 4 = ignore, skipped
    with pytest.raises(ValueError):
        fast_hist(lab, pred[:10], 4)
    assert math.isnan(scores_from_hist(np.zeros((2, 2)))["pixel_acc"])
