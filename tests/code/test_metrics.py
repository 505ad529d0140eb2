"""Metrics agree with scikit-learn's reference implementations."""

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from rayline.model.metrics import binary_metrics, calibration, multiclass_metrics, regression_metrics, roc_auc


def test_auc_and_log_loss_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    p = np.round(np.clip(y * 0.3 + rng.uniform(0, 0.7, 5000), 0, 1), 2)  # many ties
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    m = binary_metrics(y, p)
    assert m["log_loss"] == pytest.approx(sk_log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-9)
    assert m["baseline_accuracy"] == pytest.approx(max(y.mean(), 1 - y.mean()))


def test_auc_undefined_for_one_class():
    assert np.isnan(roc_auc(np.ones(5), np.linspace(0, 1, 5)))


def test_calibration_error_is_zero_when_calibrated():
    p = np.repeat([0.1, 0.5, 0.9], 1000)
    y = np.concatenate([np.r_[np.ones(100), np.zeros(900)], np.r_[np.ones(500), np.zeros(500)],
                        np.r_[np.ones(900), np.zeros(100)]])
    ece, bins = calibration(y, p)
    assert ece == pytest.approx(0.0, abs=1e-12) and len(bins) == 3


def test_regression_and_multiclass():
    y = np.array([1.0, 2.0, 3.0])
    r = regression_metrics(y, y + 1)
    assert r["rmse"] == pytest.approx(1.0) and r["mae"] == pytest.approx(1.0)
    m = multiclass_metrics(np.array([0, 1, 2]), np.eye(3) * 0.98 + 0.01 - 0.0)
    assert m["accuracy"] == 1.0 and m["log_loss"] < 0.05
