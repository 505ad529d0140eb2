"""Ray Data reads JSON sources through rayline's reader (json_records.py): JSON lines or one
array of records per file, streamed, with unreadable records kept as rows for the quarantine."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from rayline.data.json_records import BAD_RECORD, read_tables


class JSONRecordsDatasource(FileBasedDatasource):
    """`columns`: the columns every block has (absent ones as nulls; hive partition columns are
    added by Ray from the path), plus BAD_RECORD; None keeps the keys each block's records hold."""

    def __init__(self, paths: list[str], *, columns: list[str] | None = None, **file_based_kwargs):
        super().__init__(paths, **file_based_kwargs)
        self._columns = None if columns is None else [c for c in dict.fromkeys(columns) if c != BAD_RECORD]

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        for table in read_tables(f):
            if self._columns is not None:
                n = table.num_rows
                table = pa.table({**{c: table.column(c) if c in table.column_names else pa.nulls(n, pa.string())
                                     for c in self._columns}, BAD_RECORD: table.column(BAD_RECORD)})
            yield table
