"""Ray Data reads CSV sources through rayline's reader (csv_rows.py): a line with the wrong
number of fields stays a row for the quarantine instead of failing its file, and declared
columns are read as text for their rules to type."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
from ray.data.datasource import FileBasedDatasource

from rayline.data.csv_rows import BAD_ROW, read_tables


class CSVRowsDatasource(FileBasedDatasource):
    """`delimiter`: None for a tab in .tsv files, else a comma. `text`: columns read as text.
    `columns`: the columns every block has (absent ones as nulls; hive partition columns are
    added by Ray from the path), plus BAD_ROW; None keeps the file's columns. `setting`: where the
    source's column types are declared (named in errors); `encoding`: the files' text encoding
    (None: UTF-8), set at `encoding_setting`; `infer`: the only columns type-inferred (None: every
    undeclared one); `decimal`: the numbers' decimal mark, in `numbers` too (text columns)."""

    def __init__(self, paths: list[str], *, delimiter: str | None, text: tuple[str, ...],
                 columns: list[str] | None = None, setting: str = "", encoding: str | None = None,
                 encoding_setting: str = "", infer: tuple[str, ...] | None = None, decimal: str | None = None,
                 numbers: tuple[str, ...] = (), **file_based_kwargs):
        super().__init__(paths, **file_based_kwargs)
        self._delimiter, self._text, self._setting = delimiter, text, setting
        self._encoding, self._encoding_setting, self._infer = encoding, encoding_setting, infer
        self._decimal, self._numbers = decimal, numbers
        self._columns = None if columns is None else [c for c in dict.fromkeys(columns) if c != BAD_ROW]

    def _read_stream(self, f: pa.NativeFile, path: str) -> Iterator[pa.Table]:
        delimiter = self._delimiter or ("\t" if path.endswith(".tsv") else ",")
        yield from read_tables(f, delimiter, self._text, self._columns, self._setting, self._encoding,
                               self._encoding_setting, self._infer, self._decimal, self._numbers)
