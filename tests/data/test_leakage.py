"""Features are known before the event: no feature of a row depends on its label or on any
test-split label. Shuffling the labels of the test split must leave its features unchanged."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from rayline.config import config_from_dict
from rayline.data import run_ingest
from rayline.storage import Storage
from tests.conftest import small_config, small_tables, write_tables


def _test_split(ingest) -> pa.Table:
    t = pads.dataset(ingest.split_uri("test"), format="parquet", partitioning=None).to_table()
    return t.sort_by("trip_id")


def test_shuffled_test_labels_leave_test_features_unchanged(ray_local, tmp_path):
    tables = small_tables()
    raw = small_config(tmp_path / "a", tmp_path / "root-a")
    raw["data"]["features"]["time"] = [{"name": "ts", "parts": ["hour", "dow", "us_holiday"]}]
    raw["data"]["counts"] = [{"name": "station_hour_trips", "by": ["station", "hour"]}]  # computed over all splits
    raw["data"]["features"]["numeric"] += ["station_hour_trips"]
    write_tables(tables, tmp_path / "a")
    first = run_ingest(config_from_dict(raw), Storage(str(tmp_path / "root-a")))
    test_ids = _test_split(first).column("trip_id")
    assert len(test_ids) > 50

    trips = tables["trips"]
    is_test = pc.is_in(trips.column("trip_id"), value_set=test_ids).to_numpy(zero_copy_only=False)
    delay = trips.column("delay").to_numpy().copy()
    delay[is_test] = np.random.default_rng(1).permutation(delay[is_test])
    shuffled = {**tables, "trips": trips.set_column(trips.column_names.index("delay"), "delay", pa.array(delay))}
    write_tables(shuffled, tmp_path / "b")
    raw_b = small_config(tmp_path / "b", tmp_path / "root-b")
    raw_b["data"]["features"] = raw["data"]["features"]
    raw_b["data"]["counts"] = raw["data"]["counts"]
    second = run_ingest(config_from_dict(raw_b), Storage(str(tmp_path / "root-b")))

    a, b = _test_split(first), _test_split(second)
    assert a.column("trip_id").equals(b.column("trip_id"))
    assert a.column("x_num").equals(b.column("x_num")) and a.column("x_cat").equals(b.column("x_cat"))
    assert not a.column("y").equals(b.column("y"))                  # the labels did move
    assert first.spec.model_dump(exclude={"train_rows"}) == second.spec.model_dump(exclude={"train_rows"})
