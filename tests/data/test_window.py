"""A time split's data window (`split.train_from`, `split.until`): rows outside it are counted, not
used, never quarantined; what `rayline watch` retrains a sliding window with."""

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

from rayline.config import config_from_dict
from rayline.data import run_ingest
from rayline.errors import ConfigError
from rayline.storage import Storage
from tests.conftest import small_config, small_tables, write_tables


def _raw(tmp_path, **split):
    write_tables(small_tables(2000), tmp_path / "data")
    raw = small_config(tmp_path / "data", tmp_path / "root")
    raw["data"]["split"] = {"method": "time", "column": "ts", "test_from": "2024-03-01", **split}
    raw["data"]["passthrough"] = ["trip_id", "ts"]
    return raw


def test_rows_outside_the_window_are_counted_not_used(ray_local, tmp_path):
    whole = run_ingest(config_from_dict(_raw(tmp_path)), Storage(str(tmp_path / "root")))
    cfg = config_from_dict(_raw(tmp_path, train_from="2024-01-20", until="2024-03-15"))
    windowed = run_ingest(cfg, Storage(cfg.storage.root))
    rows = windowed.manifest["rows"]
    t = small_tables(2000)["trips"].column("ts")
    lo, hi = pc.less(t, pc.strptime("2024-01-20", "%Y-%m-%d", "s", error_is_null=False).cast(t.type)), \
        pc.greater_equal(t, pc.strptime("2024-03-15", "%Y-%m-%d", "s").cast(t.type))
    expected_outside = pc.sum(pc.or_(lo, hi).cast("int64")).as_py()
    assert rows["outside_window"] == expected_outside > 0
    assert rows["read"] == whole.manifest["rows"]["read"] == 2000
    assert rows["quarantined"] == whole.manifest["rows"]["quarantined"]       # nothing extra quarantined
    assert rows["read"] == rows["clean"] + rows["quarantined"] + rows["outside_window"]
    assert "outside_window" not in whole.manifest["rows"]
    ready = pads.dataset(f"{windowed.path}/ready", format="parquet", partitioning="hive").to_table(columns=["ts"])
    ts = ready.column("ts")
    assert pc.min(ts).as_py().isoformat() >= "2024-01-20" and pc.max(ts).as_py().isoformat() < "2024-03-15"
    assert windowed.key != whole.key                                          # another window, another ingest


@pytest.mark.parametrize("split,message", [
    ({"method": "hash", "train_from": "2024-01-01"}, "need method time"),
    ({"train_from": "2024-03-02"}, "train_from must come before"),
    ({"until": "2024-02-01"}, "until must come after test_from"),
])
def test_window_errors_name_the_field(tmp_path, split, message):
    raw = small_config(tmp_path, tmp_path)
    raw["data"]["split"] = {"method": "time", "column": "ts", "test_from": "2024-03-01", **split}
    if split.get("method") == "hash":
        raw["data"]["split"] = {"method": "hash", "train_from": "2024-01-01"}
    with pytest.raises(ConfigError, match=message) as e:
        config_from_dict(raw)
    assert "data.split" in str(e.value)


def test_a_sliding_retrain_window_over_the_sources_time_range(ray_local, tmp_path):
    """`rayline watch`'s retrain: the sources' newest day read over the cluster, then the newest
    14 days as test, the 14 before as validation, 30 days of training before them."""
    from rayline.data.ingest import sources_time_range
    from rayline.registry import Registry
    from rayline.watch.effects import window_config

    raw = _raw(tmp_path)
    raw["watch"] = {"retrain": {"window": "sliding", "days": 30, "test_days": 14, "valid_days": 14}}
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    lo, hi = sources_time_range(cfg, storage)
    ts = small_tables(2000)["trips"].column("ts")
    assert (lo, hi) == (pc.min(ts).as_py(), pc.max(ts).as_py())
    run_cfg, chosen = window_config(cfg, storage, Registry.of(cfg, storage), None)
    s = run_cfg.data.split
    assert chosen["window"] == "sliding" and chosen["newest"] == hi.isoformat()
    assert s.test_from[:10] == "2024-03-17" and s.valid_from[:10] == "2024-03-03" and s.train_from[:10] == "2024-02-02"
    out = run_ingest(run_cfg, storage)
    rows = out.manifest["rows"]
    assert rows["read"] == rows["clean"] + rows["quarantined"] + rows["outside_window"] and rows["test"] > 0
