"""Ray Data reads CSV sources through rayline's reader (csv_rows.py): a line with the wrong
number of fields stays a row for the quarantine instead of failing its file, and declared
columns are read as text for their rules to type."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from rayline.data.csv_rows import BAD_ROW, CSVRead


class CSVRowsDatasource(FileBasedDatasource):
    """`read`: how the files are read; `columns`: the columns every block has (absent ones as
    nulls; hive partition columns are added by Ray from the path), plus BAD_ROW; None keeps the
    file's columns."""

    def __init__(self, paths: list[str], *, read: CSVRead, columns: list[str] | None = None, **file_based_kwargs):
        super().__init__(paths, **file_based_kwargs)
        self._read = read
        self._columns = None if columns is None else [c for c in dict.fromkeys(columns) if c != BAD_ROW]

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        yield from self._read.tables(f, path, self._columns)
