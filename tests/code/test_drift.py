"""The drift signal: recent request statistics against the FeatureSpec's training statistics."""

import numpy as np

from rayline.features.spec import CategoricalSpec, FeatureSpec, LabelSpec, NumericSpec
from rayline.serve.monitor import DriftTracker


def _spec():
    return FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=100, max=900, null_fraction=0,
                             missing_indicator=True),
                 NumericSpec(name="temp", mean=50, std=10, impute=50, min=0, max=100, null_fraction=0,
                             missing_indicator=True)],
        categorical=[CategoricalSpec(name="carrier", vocabulary=["UA", "AA"], frequencies=[0.5, 0.5])],
        time=[], label=LabelSpec(column="y", task="binary"))


def test_shifted_and_out_of_range_features_are_flagged():
    spec = _spec()
    tracker = DriftTracker(spec, halflife=100)
    rng = np.random.default_rng(0)
    for _ in range(20):
        records = [{"distance": float(v), "temp": float(t), "carrier": c} for v, t, c in
                   zip(rng.normal(800, 50, 50), rng.normal(50, 10, 50), rng.choice(["UA", "ZZ"], 50))]
        outside = tracker.observe(records, spec.transform_records(records))
    report = tracker.report()
    assert report["observed_records"] == 1000 and report["observed_batches"] == 20
    assert "distance" in report["drifted"] and "temp" not in report["drifted"]
    assert report["features"]["distance"]["shift_in_std"] > 2
    assert "carrier" in report["drifted"] and report["features"]["carrier"]["out_of_vocabulary"] > 0.3
    assert "distance" in outside  # values above the training max were seen in the last batch


def test_traffic_like_training_is_not_flagged():
    spec = _spec()
    tracker = DriftTracker(spec)
    rng = np.random.default_rng(1)
    records = [{"distance": float(v), "temp": float(t), "carrier": "UA"} for v, t in
               zip(rng.normal(500, 100, 500).clip(100, 900), rng.normal(50, 10, 500).clip(0, 100))]
    tracker.observe(records, spec.transform_records(records))
    assert tracker.report()["drifted"] == []
