"""The drift signal: windowed counts against the FeatureSpec's training statistics, mergeable
across replicas, and impossible to poison."""

import math

import numpy as np

from rayline.features.contract import Contract
from rayline.features.spec import CategoricalSpec, FeatureSpec, LabelSpec, NumericSpec
from rayline.serve.monitor import DriftTracker, drift_report


def _spec():
    return FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=100, max=900, null_fraction=0,
                             missing_indicator=True),
                 NumericSpec(name="temp", mean=50, std=10, impute=50, min=0, max=100, null_fraction=0,
                             missing_indicator=True)],
        categorical=[CategoricalSpec(name="carrier", vocabulary=["UA", "AA"], frequencies=[0.5, 0.5])],
        time=[], label=LabelSpec(column="y", task="binary"))


def _feed(tracker, spec, records):
    table, failures = Contract(spec).check_records(records)
    assert not failures.bad.any()
    return tracker.observe(table, spec.transform(table))


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


def test_shifted_and_out_of_range_features_are_flagged():
    spec = _spec()
    tracker = DriftTracker(spec)
    rng = np.random.default_rng(0)
    for _ in range(20):
        records = [{"distance": float(v), "temp": float(t), "carrier": c} for v, t, c in
                   zip(rng.normal(800, 50, 50), rng.normal(50, 10, 50), rng.choice(["UA", "ZZ"], 50))]
        outside = _feed(tracker, spec, records)
    report = tracker.report()
    assert report["records_in_window"] == 1000 and tracker.batches == 20
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
    _feed(tracker, spec, records)
    assert tracker.report()["drifted"] == []


def test_extreme_values_cannot_poison_the_statistics():
    spec = _spec()
    tracker = DriftTracker(spec)
    normal = [{"distance": 500.0, "temp": 50.0, "carrier": "UA"}] * 999
    _feed(tracker, spec, normal)
    _feed(tracker, spec, [{"distance": 1.7e308, "temp": -1.7e308, "carrier": "UA"}])
    _feed(tracker, spec, [{"distance": -1.7e308, "temp": 1.7e308, "carrier": "UA"}])
    f = tracker.report()["features"]
    for name in ("distance", "temp"):
        assert math.isfinite(f[name]["recent_mean_clipped"]) and abs(f[name]["shift_in_std"]) < 0.01
        assert f[name]["below_training_min"] == 1 and f[name]["above_training_max"] == 1
    assert tracker.report()["drifted"] == []  # two extreme values among 1001 are not drift


def test_replicas_merge_exactly_and_old_buckets_leave_the_window():
    spec, clock = _spec(), Clock()
    a, b, both = (DriftTracker(spec, window_s=300, clock=clock) for _ in range(3))
    rng = np.random.default_rng(2)
    for i in range(6):
        recs = [{"distance": float(v), "temp": 50.0, "carrier": "AA"} for v in rng.normal(500, 100, 40).clip(100, 900)]
        _feed(a if i % 2 else b, spec, recs)
        _feed(both, spec, recs)
        clock.t += 30
    merged = drift_report(spec, [a.snapshot(), b.snapshot()], clock() - 300, 300)
    alone = drift_report(spec, [both.snapshot()], clock() - 300, 300)
    assert merged["records_in_window"] == alone["records_in_window"] == 240 and merged["replicas_reporting"] == 2
    assert merged["features"] == alone["features"]
    clock.t += 1000  # all of it is older than the window now
    assert drift_report(spec, [a.snapshot(), b.snapshot()], clock() - 300, 300)["records_in_window"] == 0
