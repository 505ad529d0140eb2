"""Rows that violate rules are quarantined, never dropped: read = clean + quarantined."""

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from rayline.config import config_from_dict
from rayline.data import run_ingest
from rayline.storage import Storage
from tests.conftest import small_config, small_tables, write_tables


def _ingest(cfg_dict, **kw):
    cfg = config_from_dict(cfg_dict)
    return cfg, run_ingest(cfg, Storage(cfg.storage.root), **kw)


def _quarantine(result):
    return pq.read_table(result.quarantine_uri).to_pylist()


def test_every_rule_violation_lands_in_quarantine(ray_local, tmp_path):
    tables = small_tables(400)
    trips = tables["trips"].to_pylist()
    trips[0]["distance"] = "far"          # type
    trips[1]["distance"] = 99999.0        # range
    trips[2]["station"] = "ZZZ"           # allowed (and no station to join: not required)
    trips[3]["trip_id"] = None            # not_null
    trips[4]["delay"] = None              # label missing
    trips[5]["ts"] = None                 # time feature missing: allowed, imputed
    tables["trips"] = pa.Table.from_pylist([{k: (str(v) if v is not None else None) for k, v in r.items()} for r in trips])
    vehicles = tables["vehicles"].to_pylist()
    vehicles.append(dict(vehicles[0]))    # duplicate join key in a dimension: both copies quarantined
    tables["vehicles"] = pa.Table.from_pylist(vehicles)
    data = tmp_path / "data"
    write_tables(tables, data)
    raw = small_config(data, tmp_path / "root")
    raw["data"]["joins"][1]["required"] = True   # unmatched vehicle -> quarantine "join"
    cfg, result = _ingest(raw)

    rows = result.manifest["rows"]
    assert rows["read"] == 400
    assert rows["read"] == rows["clean"] + rows["quarantined"]
    q = _quarantine(result)
    by_row = {_key(json.loads(r["row"]).get("trip_id")): r for r in q if r["table"] == "trips"}
    assert by_row["0"]["rule"] == "type" and by_row["0"]["column"] == "distance" and by_row["0"]["value"] == "far"
    assert by_row["1"]["rule"] == "range" and by_row["1"]["value"] == "99999.0"
    assert by_row["2"]["rule"] == "allowed" and by_row["2"]["value"] == "ZZZ"
    # a declared CSV column is read as written: the quarantined row shows the empty field as ""
    assert by_row[""]["rule"] == "not_null" and by_row[""]["column"] == "trip_id"
    assert by_row["4"]["rule"] == "not_null" and by_row["4"]["column"] == "delay"
    assert "5" not in by_row
    dup_vehicle = vehicles[0]["vid"]
    joins = [r for r in q if r["rule"] == "join"]
    assert joins and all(json.loads(r["row"])["vehicle"] == dup_vehicle for r in joins)
    dims = [r for r in q if r["table"] == "vehicles"]
    assert len(dims) == 2 and {r["rule"] for r in dims} == {"unique"}
    assert all(r["source_file"].endswith(".csv") for r in q)
    assert result.manifest["dimensions"]["vehicles"] == {"read": 41, "clean": 39, "quarantined": 2}
    by_rule = result.manifest["quarantine_by_rule"]
    assert by_rule["trips.distance:type"] == 1 and by_rule["vehicles.vid:unique"] == 2
    # the fitted spec saw only clean training rows
    assert result.spec.train_rows == rows["train"]


def test_rerun_reuses_and_changes_rerun(ray_local, small_data):
    data, root = small_data
    raw = small_config(data, root)
    _, first = _ingest(raw)
    _, again = _ingest(raw)
    assert not first.reused and again.reused and again.key == first.key
    raw2 = small_config(data, root)
    raw2["data"]["split"]["valid_fraction"] = 0.2
    _, changed_cfg = _ingest(raw2)
    assert not changed_cfg.reused and changed_cfg.key != first.key
    # touching an input file changes the fingerprint
    t = pacsv.read_csv(data / "trips.csv")
    pacsv.write_csv(t.slice(0, 500), data / "trips.csv")
    _, changed_data = _ingest(raw)
    assert not changed_data.reused and changed_data.manifest["rows"]["read"] == 500


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_other_formats_and_hive_partitions(ray_local, tmp_path, fmt):
    tables = small_tables(300)
    data = tmp_path / "data"
    write_tables({k: v for k, v in tables.items() if k != "trips"}, data, fmt)
    # the fact table as a hive-partitioned directory: region=<x>/part.<ext>
    trips = tables["trips"]
    for region in ("east", "west"):
        part = data / "trips" / f"region={region}"
        half = trips.slice(0, 150) if region == "east" else trips.slice(150)
        write_tables({"part": half}, part, fmt)
    raw = small_config(data, tmp_path / "root", fmt=fmt)
    raw["data"]["sources"]["trips"]["path"] = str(data / "trips")
    raw["data"]["features"]["categorical"].append("region")
    _, result = _ingest(raw)
    assert result.manifest["rows"]["read"] == 300 == result.manifest["rows"]["clean"]
    regions = {c.name: c.vocabulary for c in result.spec.categorical}["region"]
    assert sorted(regions) == ["east", "west"]


def test_failed_run_publishes_nothing(ray_local, small_data, monkeypatch):
    data, root = small_data
    cfg = config_from_dict(small_config(data, root))
    storage = Storage(cfg.storage.root)
    import rayline.data.ingest as ing

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(ing, "_write_quarantine", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_ingest(cfg, storage)
    leftovers = storage.list_dir(f"datasets/{cfg.name}")
    assert leftovers == []  # neither a finished-looking dataset nor the staging dir


def _key(v):
    return None if v is None else str(v)


def test_published_dataset_is_checked_against_its_manifest(ray_local, small_data):
    """Every file's SHA-256 is in manifest.json; a changed file is named on load and rebuilt on reuse."""
    from rayline.data import load_ingest
    from rayline.errors import InputError

    data, root = small_data
    cfg, first = _ingest(small_config(data, root))
    storage = Storage(cfg.storage.root)
    base = first.path
    files = first.manifest["files"]
    assert "feature_spec.json" in files and any(f.startswith("ready/split=train/") for f in files)
    assert any(f.startswith("quarantine/") for f in files) and "manifest.json" not in files
    victim = next(f for f in sorted(files) if f.startswith("ready/split=train/"))
    raw = open(f"{base}/{victim}", "rb").read()
    with open(f"{base}/{victim}", "wb") as f:
        f.write(raw[:-1] + bytes([raw[-1] ^ 1]))          # same size, one bit flipped
    with pytest.raises(InputError, match=f"{victim} has a different SHA-256"):
        load_ingest(cfg, storage)
    messages = []
    again = run_ingest(cfg, storage, progress=messages.append)
    assert not again.reused and any("does not match its manifest.json" in m and "rebuilding" in m for m in messages)
    assert load_ingest(cfg, storage).manifest["rows"] == first.manifest["rows"]
    import os

    os.remove(f"{again.path}/feature_spec.json")
    with pytest.raises(InputError, match="feature_spec.json is missing"):
        load_ingest(cfg, storage)
