"""A Parquet datasink whose files are the same for the same input.

Ray Data's own `write_parquet` names files with two random UUIDs and hands its blocks to
pyarrow's threaded dataset writer, which writes a task's row groups in whatever order its
threads finish (measured: the same ingest twice gave the same row groups, permuted). The
ingest's training shards are contiguous row ranges of the sorted files, so a model trained on
them could not be reproduced. Here each write task writes one file per partition value, named
by its task index (`part-000003.parquet`), its rows in the order they arrived; with the
execution's `preserve_order` (runtime.ordered_data) task indices and arrival order follow the
input, so the same input gives byte-identical files.
"""

from __future__ import annotations

from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

ROW_GROUP_ROWS = 32_768  # what Ray's writer produced: the shard reader skips by row group


class OrderedParquetSink(Datasink[None]):
    def __init__(self, path: str, filesystem, partition_col: str | None = None, **parquet_options):
        self.path, self.fs, self.partition_col = path.rstrip("/"), filesystem, partition_col
        self.options = parquet_options

    def write(self, blocks: Iterable[Block], ctx) -> None:
        tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
        if not tables:
            return
        table = pa.concat_tables(tables, promote_options="permissive")
        name = f"part-{ctx.task_idx:06d}.parquet"
        if self.partition_col is None:
            self._write(table, self.path, name)
            return
        col = table.column(self.partition_col)
        if col.null_count:  # no partition to put them in: refuse rather than leave them out
            raise ValueError(f"{col.null_count} of {table.num_rows} row(s) to write have no {self.partition_col} "
                             f"(write task {ctx.task_idx}): every row needs one")
        rest = table.drop_columns([self.partition_col])
        for value in sorted(pc.unique(col).to_pylist()):
            self._write(rest.filter(pc.equal(col, value)), f"{self.path}/{self.partition_col}={value}", name)

    def _write(self, table: pa.Table, directory: str, name: str) -> None:
        self.fs.create_dir(directory, recursive=True)
        with self.fs.open_output_stream(f"{directory}/{name}") as f:
            pq.write_table(table, f, row_group_size=ROW_GROUP_ROWS, **self.options)

    def get_name(self) -> str:
        return "OrderedParquet"
