"""FeatureSpec fitting and transforms: batch and single-record paths agree exactly."""

import json

import numpy as np
import pyarrow as pa
import pytest

from rayline.config import config_from_dict
from rayline.features.fit import Moments, PartialStats, build_spec, partial_stats
from rayline.features.spec import MISSING_INDEX, OOV_INDEX, FeatureSpec, model_inputs_from_table
from tests.conftest import inputs_of, small_config, small_tables


@pytest.fixture
def fitted(tmp_path):
    cfg = config_from_dict(small_config(tmp_path, tmp_path))
    t = small_tables(500)["trips"]
    t = t.append_column("elevation", pa.array(np.where(np.arange(500) % 7 == 0, np.nan, 100.0)))
    t = t.append_column("seats", pa.array(np.arange(500) % 200, pa.int64()))
    t = t.append_column("maker", pa.array(["X"] * 499 + ["Z"]))
    label = (t.column("delay").to_numpy() > 30).astype(float)
    # Two halves merged == fitting on the whole: partial aggregates are exact.
    a = partial_stats(t.slice(0, 200), cfg.data.features, label[:200])
    b = partial_stats(t.slice(200), cfg.data.features, label[200:])
    whole = partial_stats(t, cfg.data.features, label)
    merged = a.merge(b)
    return cfg, t, build_spec(merged, cfg), build_spec(whole, cfg)


def test_partial_stats_merge_equals_whole(fitted):
    _, _, merged, whole = fitted
    for m, w in zip(merged.numeric, whole.numeric):
        assert m.mean == pytest.approx(w.mean, rel=1e-12) and m.std == pytest.approx(w.std, rel=1e-9)
    assert merged.categorical == whole.categorical
    seats = next(f for f in whole.numeric if f.name == "seats")      # drift's PSI bins: the training deciles
    x = np.arange(500) % 200
    assert seats.bins == np.quantile(x, np.arange(1, 10) / 10, method="inverted_cdf").tolist()
    assert seats.bin_shares == pytest.approx(np.bincount(np.searchsorted(seats.bins, x, side="right")) / 500)
    assert all(abs(s - 0.1) < 0.01 for s in seats.bin_shares)
    elevation = next(f for f in whole.numeric if f.name == "elevation")  # one value: one bin, all of it
    assert elevation.bins == [] and elevation.bin_shares == [1.0]


def test_moments_merge_is_chan_exact():
    x = np.random.default_rng(1).normal(1e6, 3, 1001)
    m = Moments.of(x[:10]).merge(Moments.of(x[10:]))
    assert m.mean == pytest.approx(x.mean(), rel=1e-12)
    assert m.std == pytest.approx(x.std(), rel=1e-7)


def test_spec_round_trips_as_plain_json(fitted):
    _, _, spec, _ = fitted
    text = spec.to_json()
    assert json.loads(text)["version"] == 1
    assert FeatureSpec.from_json(text) == spec
    with pytest.raises(ValueError, match="version 99"):
        FeatureSpec.from_json(text.replace('"version": 1', '"version": 99'))


def test_batch_equals_single_record_exactly(fitted):
    _, t, spec, _ = fitted
    batch = spec.transform(t)
    records = t.select(spec.input_columns).to_pylist()
    # JSON round trip: what a client would send (timestamps as ISO strings).
    records = json.loads(json.dumps(records, default=lambda v: v.isoformat()))
    for i in (0, 7, 123, 499):
        one = inputs_of(spec, [records[i]])
        np.testing.assert_array_equal(one.num[0], batch.num[i])
        np.testing.assert_array_equal(one.cat[0], batch.cat[i])
    many = inputs_of(spec, records)
    np.testing.assert_array_equal(many.num, batch.num)
    np.testing.assert_array_equal(many.cat, batch.cat)


def test_missing_unseen_and_absent_inputs(fitted):
    _, _, spec, _ = fitted
    out = inputs_of(spec, [{"station": "ZZZ"}, {"station": None}])
    station = spec.input_columns.index("station") - len(spec.numeric) - 0
    cat_names = [c.name for c in spec.categorical]
    j = cat_names.index("station")
    assert out.cat[0, j] == OOV_INDEX and out.cat[1, j] == MISSING_INDEX
    # absent numeric -> imputed with the training mean (0 after scaling); its indicator is 1
    # where training saw missing values (elevation), and absent where it never did (distance:
    # an input that was always 0 in training would never have learnt a weight)
    names = spec.numeric_inputs
    assert out.num[0, names.index("distance")] == pytest.approx(0.0, abs=1e-6)
    assert out.num[0, names.index("elevation")] == pytest.approx(0.0, abs=1e-6)
    assert out.num[0, names.index("elevation__missing")] == 1.0
    assert "distance__missing" not in names and "seats__missing" not in names
    # a missing timestamp has no position on the circle
    assert out.num[0, names.index("ts__hour_sin")] == 0 and out.num[0, names.index("ts__hour_cos")] == 0
    assert station is not None


def test_vocabulary_is_frequency_ordered_and_cut(tmp_path):
    raw = small_config(tmp_path, tmp_path)
    raw["data"]["features"]["categorical"] = [{"name": "station", "min_frequency": 3}, {"name": "vehicle", "max_size": 2}]
    cfg = config_from_dict(raw)
    t = pa.table({"station": ["A"] * 5 + ["B"] * 3 + ["C"] * 2, "vehicle": ["x"] * 4 + ["y"] * 4 + ["z"] * 2,
                  "distance": [1.0] * 10, "elevation": [1.0] * 10, "seats": [1] * 10, "hour": [1] * 10,
                  "ts": pa.nulls(10, pa.timestamp("us", tz="UTC"))})
    spec = build_spec(partial_stats(t, cfg.data.features, np.zeros(10)), cfg)
    st, vh = spec.categorical
    assert st.vocabulary == ["A", "B"] and st.oov_fraction == pytest.approx(0.2)
    assert vh.vocabulary == ["x", "y"]  # ties broken by value, deterministic


def test_model_table_round_trip(fitted):
    _, t, spec, _ = fitted
    t = t.append_column("trip_ix", t.column("trip_id"))
    table = spec.to_model_table(t)
    num, cat = model_inputs_from_table(table)
    direct = spec.transform(t)
    np.testing.assert_array_equal(num, direct.num)
    np.testing.assert_array_equal(cat, direct.cat)
    assert table.column("y").to_pylist() == (t.column("delay").to_numpy() > 30).astype(np.float32).tolist()
    assert "trip_id" in table.column_names  # passthrough


def test_empty_partial_stats_merge():
    assert PartialStats().merge(PartialStats()).rows == 0


def test_values_beyond_training_are_clipped_to_its_range(fitted):
    """Any finite input gives bounded model inputs (so a finite prediction); training rows are untouched."""
    _, t, spec, _ = fitted
    f = next(n for n in spec.numeric if n.name == "distance")
    j = spec.numeric_inputs.index("distance")
    edge = inputs_of(spec, [{"distance": f.max}, {"distance": f.min}]).num[:, j]
    far = inputs_of(spec, [{"distance": 1.7e308}, {"distance": -1.7e308}]).num[:, j]
    assert np.isfinite(far).all() and np.array_equal(far, edge)
    raw = (t.column("distance").to_numpy() - f.mean) / f.std
    np.testing.assert_allclose(spec.transform(t).num[:, j], raw.astype(np.float32), rtol=1e-6)


def test_specs_compare_by_their_fields_after_transforming(fitted):
    """Transforms cache derived constants on the spec: equality must still mean equal fields
    (serving compares the live spec with a newly loaded one)."""
    _, t, spec, _ = fitted
    copy = FeatureSpec.from_json(spec.to_json())
    spec.transform(t.slice(0, 3))
    assert spec == copy and copy == spec
    copy.transform(t.slice(0, 3))
    assert spec == copy
    other = FeatureSpec.from_json(spec.to_json().replace('"train_rows": ', '"train_rows": 1'))
    other.transform(t.slice(0, 3))
    assert spec != other


def test_numeric_matrix_reads_a_few_rows_as_python_values_exactly_as_arrow_does():
    import math

    import numpy as np
    import pyarrow as pa

    from rayline.features import spec as spec_mod

    t = pa.table({"i": pa.array([1, None, -3, 2 ** 40] * 3, pa.int64()),
                  "f": pa.array([1.5, None, math.inf, math.nan] * 3, pa.float32()),
                  "d": pa.array([0.1, -math.inf, None, 7.0] * 3, pa.float64()), "s": ["1.5", None, "x", "2"] * 3})
    names = ["i", "f", "d", "s", "absent"]
    for rows in (1, 4):
        small = spec_mod.numeric_matrix(t.slice(0, rows), names)
        saved, spec_mod.SMALL_ROWS = spec_mod.SMALL_ROWS, 0
        try:
            large = spec_mod.numeric_matrix(t.slice(0, rows), names)
        finally:
            spec_mod.SMALL_ROWS = saved
        # the same finite values, missing (non-finite: callers treat NaN and infinity alike) in the same places
        np.testing.assert_array_equal(np.isfinite(small), np.isfinite(large))
        np.testing.assert_array_equal(small[np.isfinite(small)], large[np.isfinite(large)])
    assert spec_mod.numeric_matrix(t.slice(0, 12), names).shape == (5, 12)


def test_the_drift_sample_stays_bounded_and_keeps_its_weight_over_many_batches():
    from rayline.features.fit import SAMPLE_MAX, Sample

    rng = np.random.default_rng(3)
    merged = Sample()
    for _ in range(120):                                  # a 30M-row ingest: ~115 batches
        merged = merged.merge(Sample.of(rng.exponential(10.0, 50_000)))
    assert len(merged.values) <= SAMPLE_MAX
    assert sum(merged.weights) == pytest.approx(120 * 50_000)
    edges, shares = merged.bins()
    want = np.quantile(rng.exponential(10.0, 2_000_000), np.arange(1, 10) / 10)
    np.testing.assert_allclose(edges, want, rtol=0.05)
    assert all(abs(s - 0.1) < 0.01 for s in shares)
