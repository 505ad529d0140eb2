"""The ingest's Parquet sink: files named by write task, rows in arrival order, one file per
partition value (data/ordered_sink.py). Pure: no cluster, a local filesystem."""

from types import SimpleNamespace

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rayline.data.ordered_sink import ROW_GROUP_ROWS, OrderedParquetSink


def _blocks():
    return [pa.table({"x": [3, 1, 2], "split": ["train", "test", "train"]}),
            pa.table({"x": [], "split": []}, schema=pa.schema([("x", pa.int64()), ("split", pa.string())])),
            pa.table({"x": [9, 8], "split": ["valid", "train"]})]


def test_each_partition_gets_the_tasks_rows_in_arrival_order_under_a_name_from_the_task(tmp_path):
    sink = OrderedParquetSink(str(tmp_path / "ready"), pafs.LocalFileSystem(), "split", use_dictionary=False)
    sink.write(_blocks(), SimpleNamespace(task_idx=7))
    files = sorted(p.relative_to(tmp_path / "ready").as_posix() for p in (tmp_path / "ready").rglob("*.parquet"))
    assert files == ["split=test/part-000007.parquet", "split=train/part-000007.parquet", "split=valid/part-000007.parquet"]
    train = pq.read_table(tmp_path / "ready" / "split=train" / "part-000007.parquet")
    assert train.schema.names == ["x"] and train.column("x").to_pylist() == [3, 2, 8]  # the partition column left out


def test_the_same_blocks_give_the_same_bytes_and_no_rows_write_nothing(tmp_path):
    for d in ("a", "b"):
        OrderedParquetSink(str(tmp_path / d), pafs.LocalFileSystem()).write(_blocks(), SimpleNamespace(task_idx=0))
    a, b = (tmp_path / d / "part-000000.parquet" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    assert pq.read_table(a).num_rows == 5
    OrderedParquetSink(str(tmp_path / "c"), pafs.LocalFileSystem()).write(_blocks()[1:2], SimpleNamespace(task_idx=0))
    assert not (tmp_path / "c").exists()


def test_large_writes_keep_row_groups_the_shard_reader_can_skip(tmp_path):
    n = ROW_GROUP_ROWS * 2 + 5
    OrderedParquetSink(str(tmp_path), pafs.LocalFileSystem()).write([pa.table({"x": list(range(n))})],
                                                                    SimpleNamespace(task_idx=1))
    meta = pq.ParquetFile(tmp_path / "part-000001.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 5]


def test_a_row_without_a_partition_value_fails_the_write_instead_of_vanishing(tmp_path):
    sink = OrderedParquetSink(str(tmp_path / "ready"), pafs.LocalFileSystem(), "split")
    with pytest.raises(ValueError, match=r"1 of 3 row\(s\) to write have no split \(write task 4\)"):
        sink.write([pa.table({"x": [1, 2, 3], "split": ["train", None, "test"]})], SimpleNamespace(task_idx=4))
    assert not list((tmp_path).rglob("*.parquet"))  # nothing half-written
