"""The lookup snapshot: written by the ingest, it gives a client's raw rows exactly the joined and
counted features the ingest gave the training rows (a generic star schema, not flights')."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from rayline.config import config_from_dict
from rayline.data import run_ingest
from rayline.data.lookup_store import read_snapshot
from rayline.features.contract import Contract
from rayline.features.spec import model_inputs_from_table
from rayline.storage import Storage
from tests.conftest import small_config, small_tables, write_tables


@pytest.fixture(scope="module")
def ingested(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lookups")
    tables = small_tables(900)
    write_tables(tables, tmp / "data", "parquet")
    raw = small_config(tmp / "data", tmp / "root", fmt="parquet")
    raw["data"]["counts"] = [{"name": "station_hour_trips", "by": ["station", "hour"]},
                             {"name": "vehicle_trips", "by": ["vehicle"]}]
    raw["data"]["features"]["numeric"] += ["station_hour_trips", "vehicle_trips"]
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    return cfg, storage, run_ingest(cfg, storage), tables["trips"]


def _lookups(cfg, storage, ingest):
    spec = ingest.spec
    return read_snapshot(storage, cfg.name, ingest.key, ingest.manifest["lookups"], spec.joins, spec.counts)


def test_the_snapshot_is_checksummed_with_the_dataset_and_the_spec_knows_its_lookups(ingested):
    cfg, storage, ingest, _ = ingested
    desc = ingest.manifest["lookups"]
    assert set(desc["files"]) == {"join0-stations", "join1-vehicles", "count-station_hour_trips", "count-vehicle_trips"}
    assert desc["rows"]["join0-stations"] == 3 and desc["rows"]["count-vehicle_trips"] == 40
    files = ingest.manifest["files"]
    assert all(f"lookups/{name}.parquet" in files for name in desc["files"])      # verified when the dataset opens
    spec = ingest.spec
    assert [j.table for j in spec.joins] == ["stations", "vehicles"] and [c.name for c in spec.counts] == \
        ["station_hour_trips", "vehicle_trips"]
    assert spec.keys == {} and "delay" in spec.accepted and "trip_id" in spec.accepted
    lookups = _lookups(cfg, storage, ingest)
    assert lookups.snapshot == desc["snapshot"] and lookups.nbytes > 0


def test_raw_rows_get_the_features_the_ingest_gave_them(ingested):
    cfg, storage, ingest, trips = ingested
    spec, lookups = ingest.spec, _lookups(cfg, storage, ingest)
    ready = pads.dataset(ingest.split_uri("test"), format="parquet", partitioning=None).to_table()
    want_num, want_cat = model_inputs_from_table(ready)
    ids = ready.column("trip_id").to_pylist()
    client = trips.take(pa.array(ids)).drop_columns(["delay"])                   # what a client has: no joins, no counts
    records = client.to_pylist()
    for r in records:
        r["ts"] = r["ts"].isoformat()
    typed, failures = Contract(spec).check_records(records)
    assert not failures.bad.any()
    joined, missed = lookups.apply(typed)
    x = spec.transform(joined)
    np.testing.assert_allclose(x.num, want_num, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(x.cat, want_cat)
    assert not any(m.any() for m in missed.values())


def test_a_sent_value_wins_and_a_key_that_finds_nothing_is_a_miss_not_an_error(ingested):
    cfg, storage, ingest, trips = ingested
    spec, lookups = ingest.spec, _lookups(cfg, storage, ingest)
    base = {"trip_id": 1, "station": "AAA", "vehicle": "V001", "distance": 100.0, "hour": 5, "ts": "2024-01-02T05:00:00Z"}
    typed, _ = Contract(spec).check_records([base, {**base, "elevation": 999.0, "station_hour_trips": 7},
                                             {**base, "vehicle": "NOPE", "hour": 99},
                                             {**base, "station_hour_trips": 1.5e300}])   # any float the contract takes
    joined, missed = lookups.apply(typed)
    elevation = joined.column("elevation").to_pylist()
    assert elevation[0] == 10.0 and elevation[1] == 999.0                       # looked up; sent (the client wins)
    assert joined.column("station_hour_trips").to_pylist()[1::2] == [7, 1.5e300]
    assert joined.column("seats")[2].as_py() is None and joined.column("vehicle_trips")[2].as_py() is None
    assert missed["vehicles(vehicle)"].tolist() == [False, False, True, False]
    assert missed["station_hour_trips"].tolist() == [False, False, True, False] and missed["vehicle_trips"][2]
    assert not missed["stations(station)"].any()


def test_a_changed_lookup_file_is_refused(ingested, tmp_path):
    from rayline import layout
    from rayline.errors import RegistryError

    cfg, storage, ingest, _ = ingested
    path = storage.path(layout.dataset(cfg.name, ingest.key), "lookups", "join0-stations.parquet")
    before = open(path, "rb").read()
    try:
        pq.write_table(pa.table({"code": ["AAA"], "elevation": [1.0]}), path)
        with pytest.raises(RegistryError, match="join0-stations.parquet does not match its checksum"):
            _lookups(cfg, storage, ingest)
    finally:
        open(path, "wb").write(before)
    assert pc.sum(_lookups(cfg, storage, ingest).dims[0].columns.column("elevation")).as_py() == 1710.0
