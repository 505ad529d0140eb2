"""rayline's Parquet read plan (data/parquet_read.py): row groups cut into balanced read tasks in
file order, partition folders and file paths as columns (no cluster for the plan)."""

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayline.data.parquet_read import Chunk, datasource, disagreeing_columns, hive_values, plan_tasks


def test_row_groups_are_cut_into_tasks_of_about_the_target_in_file_order():
    files = [("a", [(40, 400), (40, 400)]), ("b", [(100, 1000)]), ("c", [(10, 100)] * 3)]
    tasks = plan_tasks(files, task_rows=60)
    assert tasks == [[Chunk("a", (0, 1), 80, 800)], [Chunk("b", (0,), 100, 1000)], [Chunk("c", (0, 1, 2), 30, 300)]]
    # small files share a task; the order of rows is the input's
    assert plan_tasks([("x", [(5, 1)]), ("y", [(5, 1)])], task_rows=60) == [[Chunk("x", (0,), 5, 1), Chunk("y", (0,), 5, 1)]]
    # never more than max_tasks: the target grows with the input
    many = plan_tasks([(f"f{i}", [(10, 1)]) for i in range(100)], task_rows=1, max_tasks=10)
    assert len(many) == 10 and all(sum(c.rows for c in t) == 100 for t in many)
    assert [c.path for t in many for c in t] == [f"f{i}" for i in range(100)]
    assert plan_tasks([]) == [] and plan_tasks([("empty", [])]) == []


def test_partition_folders_are_read_between_the_base_and_the_file():
    assert hive_values("/d/t", "/d/t/year=2013/month=1/part-0.parquet") == {"year": "2013", "month": "1"}
    assert hive_values("s3://b/t/", "s3://b/t/part-0.parquet") == {}


def test_a_task_reads_its_row_groups_with_partitions_paths_and_only_the_columns_asked(tmp_path):
    for month, start in (("1", 0), ("2", 100)):
        (tmp_path / f"month={month}").mkdir()
        pq.write_table(pa.table({"x": list(range(start, start + 100)), "y": ["v"] * 100}),
                       tmp_path / f"month={month}" / "part.parquet", row_group_size=30)
    fs, base = pafs.LocalFileSystem(), str(tmp_path)
    paths = [f"{base}/month=1/part.parquet", f"{base}/month=2/part.parquet"]
    source, n = datasource(fs, base, paths, path_column="src", task_rows=50)
    tasks = source.get_read_tasks(n)
    # 30-row groups, tasks of >= 50 rows: a task may end in the next file
    assert n == len(tasks) == 4 and [t.metadata.num_rows for t in tasks] == [60, 70, 60, 10]
    table = pa.concat_tables(b for t in tasks for b in t())
    assert table.column_names == ["x", "y", "month", "src"]
    assert table.column("x").to_pylist() == list(range(200))
    assert table.column("month").to_pylist() == ["1"] * 100 + ["2"] * 100
    assert set(table.column("src").to_pylist()) == set(paths)
    assert tasks[0].schema == table.schema
    source, n = datasource(fs, base, paths, columns=["month", "x"], path_column=None, task_rows=1000)
    (only,) = source.get_read_tasks(n)
    got = pa.concat_tables(list(only()))
    assert got.column_names == ["month", "x"] and got.num_rows == 200


def test_blocks_are_at_most_block_rows_even_from_one_large_row_group(tmp_path):
    # the ingest maps each block in the read's own task: a batch is a block
    pq.write_table(pa.table({"x": list(range(100))}), tmp_path / "one.parquet", row_group_size=100)
    fs, base = pafs.LocalFileSystem(), str(tmp_path)
    source, n = datasource(fs, base, [f"{base}/one.parquet"], columns=["x"], task_rows=40, block_rows=40)
    (task,) = source.get_read_tasks(n)
    blocks = list(task())
    assert [b.num_rows for b in blocks] == [40, 40, 20]
    assert pa.concat_tables(blocks).column("x").to_pylist() == list(range(100))


def test_a_large_row_group_is_decoded_block_by_block_not_held_whole(tmp_path):
    # a block sliced from the whole row group would keep all of its buffers alive downstream
    pq.write_table(pa.table({"x": list(range(10_000)), "s": [f"row {i}" for i in range(10_000)]}),
                   tmp_path / "big.parquet", row_group_size=4_000)
    fs, base = pafs.LocalFileSystem(), str(tmp_path)
    source, n = datasource(fs, base, [f"{base}/big.parquet"], path_column=None, task_rows=10_000, block_rows=1_000)
    (task,) = source.get_read_tasks(n)
    blocks = list(task())
    assert all(b.num_rows <= 1_000 for b in blocks) and sum(b.num_rows for b in blocks) == 10_000
    whole = pq.read_table(tmp_path / "big.parquet").get_total_buffer_size()
    assert max(b.get_total_buffer_size() for b in blocks) < whole / 4  # a 1,000-row share, not a 4,000-row group
    table = pa.concat_tables(blocks)
    assert table.column("x").to_pylist() == list(range(10_000)) and table.column("s")[9_999].as_py() == "row 9999"
    assert table.schema == task.schema
    source, n = datasource(fs, base, [f"{base}/big.parquet"], path_column="src", task_rows=10_000, block_rows=1_000)
    (task,) = source.get_read_tasks(n)
    table = pa.concat_tables(task())
    assert table.column_names == ["x", "s", "src"] and table.column("src").unique().to_pylist() == [f"{base}/big.parquet"]


def test_an_empty_file_reads_as_one_empty_block_with_its_columns(tmp_path):
    pq.write_table(pa.table({"x": pa.array([], pa.int64())}), tmp_path / "empty.parquet")
    pq.write_table(pa.table({"x": list(range(5))}), tmp_path / "five.parquet")
    fs, base = pafs.LocalFileSystem(), str(tmp_path)
    source, n = datasource(fs, base, [f"{base}/empty.parquet", f"{base}/five.parquet"], columns=["x"], block_rows=2)
    blocks = [b for t in source.get_read_tasks(n) for b in t()]
    assert [b.num_rows for b in blocks] == [0, 2, 2, 1] and all(b.column_names == ["x"] for b in blocks)


def test_a_column_whose_files_disagree_on_its_type_is_read_as_text_in_every_file(tmp_path):
    """Exports from two writers: `id` int64 in one file and text in the other. Ray Data could not
    merge such blocks, so the read failed; both are read as text (the rules type them). Types one
    widens to (int64 and double, null and anything) stay as they are."""
    pq.write_table(pa.table({"id": [1, 2], "x": [1, 2], "n": pa.nulls(2)}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["3", "x4"], "x": [0.5, 1.5], "n": [1, 2]}), tmp_path / "b.parquet")
    assert disagreeing_columns([pq.read_schema(tmp_path / f) for f in ("a.parquet", "b.parquet")]) == {"id"}
    paths = [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    source, n = datasource(pafs.LocalFileSystem(), str(tmp_path), paths, task_rows=1)
    tasks = source.get_read_tasks(n)
    blocks = [b for t in tasks for b in t()]
    assert [b.schema.field("id").type for b in blocks] == [pa.string(), pa.string()]
    assert pa.concat_tables(blocks, promote_options="permissive").column("id").to_pylist() == ["1", "2", "3", "x4"]
    assert blocks[0].schema.field("x").type == pa.int64() and tasks[0].schema.field("id").type == pa.string()
