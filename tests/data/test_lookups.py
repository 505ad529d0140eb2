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


def _config_over(ingested, data_dir):
    cfg, _, _, _ = ingested
    raw = small_config(data_dir, cfg.storage.root, fmt="parquet")
    raw["data"]["counts"] = [c.model_dump() for c in cfg.data.counts]
    raw["data"]["features"]["numeric"] += ["station_hour_trips", "vehicle_trips"]
    return config_from_dict(raw)


def test_publishing_fresh_lookups_needs_no_retraining_and_serving_takes_only_a_compatible_one(ingested, tmp_path):
    """`rayline lookups publish`: the same sources give the ingest's own snapshot (nothing
    changes); a changed dimension (a new station, a changed elevation, a duplicate key) gives a new
    snapshot through the same validation and quarantine, which a model follows when its files,
    columns and types fit, and not otherwise."""
    import json

    from rayline import layout
    from rayline.data.lookup_store import SNAPSHOT_FILE, newest_compatible, read_snapshot
    from rayline.data.publish import publish_lookups

    cfg, storage, ingest, trips = ingested
    own = ingest.manifest["lookups"]
    same = publish_lookups(cfg, storage)
    assert same["snapshot"] == own["snapshot"]                                   # unchanged sources, the same id
    assert newest_compatible(storage, cfg.name, ingest.key, own) is None        # the model's own: nothing to follow
    tables = small_tables(900)
    stations = pa.table({"code": ["AAA", "BBB", "CCC", "DDD", "AAA"], "elevation": [11.0, 200.0, 1500.0, 42.0, 5.0]})
    write_tables({**tables, "stations": stations}, tmp_path / "data", "parquet")
    fresh = publish_lookups(_config_over(ingested, tmp_path / "data"), storage)
    assert fresh["snapshot"] != own["snapshot"] and not fresh["reused"]
    assert fresh["tables"]["stations"] == {"read": 5, "clean": 3, "quarantined": 2}  # both AAA rows: the key is not unique
    base = f"{layout.lookup_snapshots(cfg.name)}/{fresh['snapshot']}"
    assert pq.read_table(storage.path(base, "quarantine", "stations.parquet")).num_rows == 2
    assert publish_lookups(_config_over(ingested, tmp_path / "data"), storage)["reused"]
    newest = newest_compatible(storage, cfg.name, ingest.key, own)
    assert newest["snapshot"] == fresh["snapshot"]
    spec = ingest.spec
    lookups = read_snapshot(storage, cfg.name, ingest.key, newest, spec.joins, spec.counts)
    base_rec = {"trip_id": 1, "vehicle": "V001", "distance": 100.0, "hour": 5, "ts": "2024-01-02T05:00:00Z"}
    typed, _ = Contract(spec).check_records([{**base_rec, "station": "DDD"}, {**base_rec, "station": "AAA"}])
    joined, missed = lookups.apply(typed)
    assert joined.column("elevation").to_pylist()[0] == 42.0 and not missed["stations(station)"][0]
    assert joined.column("elevation").to_pylist()[1] is None and missed["stations(station)"][1]  # quarantined key
    desc = storage.read_json(base, SNAPSHOT_FILE)                                # another shape: not followed
    desc["schemas"]["join0-stations"] = [["code", "string"], ["elevation", "string"]]
    storage.write_bytes(json.dumps(desc).encode(), base, SNAPSHOT_FILE)
    assert newest_compatible(storage, cfg.name, ingest.key, own) is None


def test_a_few_rows_through_the_dictionaries_equal_the_arrow_path(ingested, monkeypatch):
    """A request's few rows take the Python path (dictionary lookups, keys spelled in Python);
    a batch takes Arrow's. Row by row, with odd keys, the two give the same columns and misses."""
    from rayline.features import lookups as lk_mod

    cfg, storage, ingest, trips = ingested
    spec, lookups = ingest.spec, _lookups(cfg, storage, ingest)
    records = trips.slice(0, 40).drop_columns(["delay"]).to_pylist()
    for r in records:
        r["ts"] = r["ts"].isoformat()
    records[1]["vehicle"], records[2]["station"], records[3]["hour"] = "V999", None, 5.0
    records[4]["hour"], records[5]["vehicle"] = None, None
    typed, failures = Contract(spec).check_records(records)
    assert not failures.bad.any()
    small = [lookups.apply(typed.slice(i, 1)) for i in range(typed.num_rows)]
    monkeypatch.setattr(lk_mod, "SMALL_LOOKUP", 0)                        # every call takes Arrow's path
    whole, missed = lookups.apply(typed)
    for i, (row, row_missed) in enumerate(small):
        assert row.to_pylist() == whole.slice(i, 1).to_pylist(), i
        assert {k: bool(v[0]) for k, v in row_missed.items()} == {k: bool(v[i]) for k, v in missed.items()}, i
    assert missed["vehicles(vehicle)"][1] and missed["vehicle_trips"][5] and not missed["station_hour_trips"][3]


@pytest.mark.parametrize("values", [["a", None, ""], [5, -2, None, 0], [2013.0, 5.0, None, 1e8],
                                    [0.0, -0.0, 5.5, 1e15, 1e20, None], [True, False]])
def test_key_text_spelled_in_python_is_arrows(values):
    from rayline.features.lookups import _key_text_small, key_text

    col = pa.array(values)
    assert _key_text_small(col) == key_text(col).to_pylist()


def test_the_smoke_request_sends_a_raw_row_as_a_client_has_it(ingested):
    """`rayline run`'s smoke request: raw rows of the primary source (no label, nothing joined),
    which the contract accepts and every lookup finds; the typical record last."""
    from rayline.pipeline import smoke_records

    cfg, storage, ingest, trips = ingested
    spec, lookups = ingest.spec, _lookups(cfg, storage, ingest)
    records = smoke_records(cfg, storage, spec, n=5)
    assert len(records) == 6 and records[-1] == spec.example_record()
    assert "delay" not in records[0] and {"station", "vehicle"} <= set(records[0])    # the label stays home
    assert not set(records[0]) & set(lookups.columns)                                 # nothing looked up is sent
    typed, failures = Contract(spec).check_records(records[:5])
    _, missed = lookups.apply(typed)
    assert not failures.bad.any() and not any(m[0] for m in missed.values())


def test_a_raw_row_for_the_smoke_request_is_valid_json(tmp_path):
    """NaN (pandas' missing float) becomes null and times ISO text: JSON has neither."""
    import json

    import pyarrow.fs as pafs

    from rayline.data.sources import ResolvedSource, head_records

    f = str(tmp_path / "part.parquet")
    pq.write_table(pa.table({"x": [1.0, float("nan")], "t": pa.array([0, None], pa.timestamp("s", tz="UTC")),
                             "label": [0, 1]}), f)
    src = ResolvedSource("p", "parquet", pafs.LocalFileSystem(), (f,), (0,), (0.0,), str(tmp_path))
    rows = head_records(src, 5, {"x", "t"})
    assert rows == [{"x": 1.0, "t": "1970-01-01T00:00:00+00:00"}, {"x": None, "t": None}]
    json.loads(json.dumps(rows, allow_nan=False))
    # a CSV of a decimal-comma locale: its numbers are sent as numbers, its codes as written
    c = tmp_path / "part.csv"
    c.write_text("x;zip;label\n412,5;02134;1\n")
    src = ResolvedSource("p", "csv", pafs.LocalFileSystem(), (str(c),), (0,), (0.0,), str(tmp_path), delimiter=";",
                         string_columns=("zip",), decimal=",")
    assert head_records(src, 5, {"x", "zip"}) == [{"x": 412.5, "zip": "02134"}]


def test_a_requests_looked_up_values_in_python_give_the_arrow_paths_inputs_and_counts(ingested):
    """A request's few rows get their looked-up features as Python values (no joined table):
    the model inputs, the misses and the drift counts equal those of the joined table, with
    misses, a client's own values and odd keys among the rows."""
    from rayline.serve.monitor import DriftTracker

    cfg, storage, ingest, trips = ingested
    spec, lookups = ingest.spec, _lookups(cfg, storage, ingest)
    kinds = tuple(spec.raw_kinds().items())
    records = trips.slice(0, 24).drop_columns(["delay"]).to_pylist()
    for r in records:
        r["ts"] = r["ts"].isoformat()
    records[1]["vehicle"], records[2]["station"], records[3]["hour"] = "V999", None, 5.0
    records[4]["elevation"], records[5]["station_hour_trips"], records[6]["seats"] = 999.0, 7, None
    records[7]["maker"] = "Z"
    typed, failures = Contract(spec).check_records(records)
    assert not failures.bad.any()
    for lo, n in [(0, 1), (1, 1), (4, 1), (5, 1), (7, 1), (0, 8), (16, 8)]:
        rows, named = typed.slice(lo, n), set().union(*records[lo:lo + n])
        got = lookups.values(rows, kinds, named)
        assert got is not None
        values, missed = got
        joined, want_missed = lookups.apply(rows)
        x, want = spec.transform(rows, values), spec.transform(joined)
        np.testing.assert_array_equal(x.num, want.num)
        np.testing.assert_array_equal(x.cat, want.cat)
        assert {k: v.tolist() for k, v in missed.items()} == {k: v.tolist() for k, v in want_missed.items()}
        a, b = DriftTracker(spec, clock=lambda: 0.0), DriftTracker(spec, clock=lambda: 0.0)
        assert a.observe(rows, x, missed, values) == b.observe(joined, want, want_missed)
        assert a.buckets.keys() == b.buckets.keys()
        for key, bucket in a.buckets.items():
            assert bucket["misses"] == b.buckets[key]["misses"] and bucket["records"] == b.buckets[key]["records"]
            for part in ("num", "cat", "hist"):
                np.testing.assert_array_equal(bucket[part], b.buckets[key][part])
    one = lookups.values(typed.slice(4, 1), kinds, {"elevation"})[0]
    assert one["elevation"] == [999.0]                                              # the client's value wins
    assert lookups.values(typed.slice(1, 1), kinds, set())[1]["vehicles(vehicle)"].tolist() == [True]
    # more rows than a request's few, or a looked-up column read as a time: the joined table
    assert lookups.values(typed.slice(0, 9), kinds, None) is None
    assert lookups.values(typed.slice(0, 1), tuple((k, "timestamp" if k == "seats" else v) for k, v in kinds), None) is None


def test_a_batchs_missed_column_names_the_lookups_each_row_missed_in_order():
    from rayline.features.lookups import missed_column, missed_per_row

    missed = {"weather": np.array([True, False, True, False]), "planes": np.array([False, False, True, True]),
              "airports": np.zeros(4, dtype=bool)}
    column = missed_column(missed, 4)
    assert column.type == pa.string()
    assert column.to_pylist() == ["weather", None, "weather,planes", "planes"]
    assert column.to_pylist() == [",".join(n) or None for n in missed_per_row(missed, 4)]
    assert missed_column({"weather": np.zeros(3, dtype=bool)}, 3).to_pylist() == [None] * 3
    assert missed_column({}, 2).null_count == 2
    # many lookups (more than one integer's bits) and many distinct sets: still each row's own names
    rng = np.random.default_rng(0)
    many = {f"lookup{i}": rng.random(500) < 0.3 for i in range(70)}
    assert missed_column(many, 500).to_pylist() == [",".join(n) or None for n in missed_per_row(many, 500)]
