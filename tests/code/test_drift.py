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


def _fitted_spec(rng):
    """A spec whose bins come from the fit's own sample of training values (as the ingest does)."""
    from rayline.features.fit import Sample

    sample = Sample()
    for _ in range(8):  # eight ingest batches
        sample = sample.merge(Sample.of(rng.normal(500, 100, 20_000)))
    edges, shares = sample.bins()
    return FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=0, max=1000, null_fraction=0,
                             missing_indicator=False, bins=edges, bin_shares=shares)],
        categorical=[CategoricalSpec(name="carrier", vocabulary=["UA", "AA", "DL"], frequencies=[0.5, 0.3, 0.2])],
        time=[], label=LabelSpec(column="y", task="binary"))


def test_psi_is_near_zero_for_the_training_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    spec = _fitted_spec(rng)
    assert len(spec.numeric[0].bins) == 9 and all(abs(s - 0.1) < 0.02 for s in spec.numeric[0].bin_shares)
    same, shifted = DriftTracker(spec), DriftTracker(spec)
    carriers = rng.choice(["UA", "AA", "DL"], 4000, p=[0.5, 0.3, 0.2])
    _feed(same, spec, [{"distance": float(v), "carrier": c} for v, c in zip(rng.normal(500, 100, 4000), carriers)])
    _feed(shifted, spec, [{"distance": float(v), "carrier": c}
                          for v, c in zip(rng.normal(600, 100, 4000), rng.choice(["UA", "ZZ"], 4000))])
    stable, moved = same.report(), shifted.report()
    assert stable["features"]["distance"]["psi"] < 0.02 and stable["features"]["carrier"]["psi"] < 0.02
    # a one-standard-deviation shift is a PSI near 1 by the usual reading (> 0.25: a real shift)
    assert moved["features"]["distance"]["psi"] > 0.5
    assert moved["features"]["carrier"]["psi"] > 1.0          # half out of vocabulary, no AA or DL
    assert moved["psi_max"]["feature"] == "carrier" and stable["psi_max"]["psi"] < 0.02


def test_psi_of_merged_replicas_equals_one_tracker_seeing_everything():
    rng = np.random.default_rng(2)
    spec = _fitted_spec(rng)
    records = [{"distance": float(v), "carrier": c}
               for v, c in zip(rng.normal(550, 120, 3000), rng.choice(["UA", "AA", "XX"], 3000))]
    one, a, b = DriftTracker(spec), DriftTracker(spec), DriftTracker(spec)
    _feed(one, spec, records)
    _feed(a, spec, records[:1000])
    _feed(b, spec, records[1000:])
    merged = a.report([b.snapshot()])
    for name in ("distance", "carrier"):
        assert math.isclose(merged["features"][name]["psi"], one.report()["features"][name]["psi"], rel_tol=1e-12)


def test_psi_is_absent_without_training_bins_or_records():
    spec = _spec()  # fitted before bins existed
    tracker = DriftTracker(spec)
    assert tracker.report()["features"]["distance"]["psi"] is None   # no records yet
    _feed(tracker, spec, [{"distance": 500.0, "temp": 50.0, "carrier": "UA"}])
    report = tracker.report()
    assert report["features"]["distance"]["psi"] is None and report["features"]["carrier"]["psi"] is not None
    # an old replica's snapshot (no histograms) merges without error
    old = tracker.snapshot()
    for bucket in old["buckets"].values():
        bucket.pop("hist")
    assert drift_report(spec, [old], 0)["records_in_window"] == 1
