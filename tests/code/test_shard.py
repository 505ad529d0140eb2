"""A worker's share of a split, read from Parquet without Ray (train.shard)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.train.shard import read_shard, row_range


@pytest.fixture
def split_dir(tmp_path):
    # 3 files, uneven row groups: 0..99 in order across files and groups
    d = tmp_path / "split=train"
    d.mkdir()
    start = 0
    for i, (rows, group) in enumerate([(37, 10), (50, 7), (13, 13)]):
        t = pa.table({"x_num": pa.array([[float(v)] for v in range(start, start + rows)], pa.list_(pa.float32(), 1)),
                      "x_cat": pa.array([[v] for v in range(start, start + rows)], pa.list_(pa.int64(), 1)),
                      "y": pa.array(range(start, start + rows), pa.float32())})
        pq.write_table(t, d / f"part-{i}.parquet", row_group_size=group)
        start += rows
    return str(d)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_shares_partition_the_split_in_order(split_dir, world):
    shares = [read_shard(split_dir, r, world).column("y").to_pylist() for r in range(world)]
    assert sum(shares, []) == list(range(100))                       # every row once, in order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1         # balanced
    assert [len(s) for s in shares] == [b - a for a, b in (row_range(100, r, world) for r in range(world))]


def test_more_workers_than_rows_get_empty_shares_with_the_schema(split_dir):
    shares = [read_shard(split_dir, r, 150) for r in range(150)]
    assert sum(s.num_rows for s in shares) == 100 and shares[0].num_rows == 0
    assert shares[0].column_names == ["x_num", "x_cat", "y"]
