"""Reading a CSV file so that one broken line does not fail the file.

A line with more or fewer fields than the header (a stray separator, a cut-off export, a quote
never closed) becomes a row whose BAD_ROW says which line and why: it is quarantined like a row
that breaks a rule (rule `csv`), and every other row is read as before. Arrow's reader would
stop the whole file at that line.

Columns named in `text` are read as written, never type-inferred: Arrow infers a column's type
from the file's first block (~1 MB), so a bad value further down ("abc" in a number column)
failed the file, and two files of one source could disagree on a column's type. Read as text,
the column's rule types it value by value, and a bad value fails that rule for that row only.
A column with no rule keeps Arrow's inference where a run uses it (`infer`: the others are read
as text); a value that breaks it fails the read with the column's name and what to declare.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

BAD_ROW = "__rl_bad_row"  # "line 7: 16 fields where the header has 15: ..."; null for a good row
_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to (.+?): invalid value '(.*)'", re.S)


class CSVReadError(ValueError):
    """A CSV file that cannot be read past some point (the message names the column and the fix)."""


@dataclass(frozen=True)
class CSVRead:
    """How a source's CSV files are read, compiled once on the driver (a read task gets it).
    `delimiter`: None for a tab in .tsv files, else a comma; `text`: the columns read as text;
    `infer`: where given, the only columns Arrow types (the rest as text); `decimal`: the numbers'
    decimal mark, in the inferred columns and in `numbers` (text columns); `encoding`: None for
    UTF-8; `setting` / `encoding_setting`: where the column types and the encoding are declared
    (named in errors)."""

    delimiter: str | None = None
    text: tuple[str, ...] = ()
    infer: tuple[str, ...] | None = None
    decimal: str | None = None
    numbers: tuple[str, ...] = ()
    encoding: str | None = None
    setting: str = ""
    encoding_setting: str = ""

    def delimiter_for(self, path: str) -> str:
        return self.delimiter or ("\t" if path.endswith(".tsv") else ",")

    def tables(self, f, path: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The file's rows in blocks (`read_tables`); `columns`: only these."""
        return read_tables(f, self.delimiter_for(path), self.text, columns, self.setting, self.encoding,
                           self.encoding_setting, self.infer, self.decimal, self.numbers)


def read_tables(f, delimiter: str = ",", text: tuple[str, ...] = (), columns: list[str] | None = None,
                setting: str = "", encoding: str | None = None, encoding_setting: str = "",
                infer: tuple[str, ...] | None = None, decimal: str | None = None,
                numbers: tuple[str, ...] = ()) -> Iterator[pa.Table]:
    """The file's rows in blocks, each with a BAD_ROW column (null for a good row); lines with the
    wrong number of fields come as rows of nulls with BAD_ROW set, after the block they were met in.
    `text`: columns read as text; `columns`: only these, absent ones as nulls;
    `setting`: where a column's type is declared (named when an undeclared column breaks its
    inferred type); `encoding`: the file's text encoding (None: UTF-8), set at `encoding_setting`
    (named when bytes are not UTF-8); `infer`: where given, the only columns Arrow types, every
    other one is read as text (the columns a run only carries along: a sparse one read as empty in
    the first block, then text, failed the file); `decimal`: the numbers' decimal mark (None: '.'),
    read in the inferred columns and in `numbers`, the text columns that hold numbers."""
    bad: list[tuple] = []

    def keep(row) -> str:
        bad.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    # Arrow's errors count the file's columns, not the ones read: the header names them
    header: list[str] | None = None
    head = None
    if infer is not None:  # the header first, to know which columns are text
        first, f = _peek(f)
        header = _file_columns(first, delimiter, encoding)
        inferred = set(infer)
        text = tuple(dict.fromkeys([*text, *(n for n in header if n not in inferred)]))
    elif columns is not None:  # keep the bytes read first, for the header if an error comes
        head = _Head(f)
        f = pa.PythonFile(io.BufferedReader(head, buffer_size=1 << 20), mode="r")

    def names() -> list[str]:
        return header if header is not None else _file_columns(head.first, delimiter, encoding) if head else []

    comma = decimal == ","
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in text}, decimal_point=decimal or ".",
                                   **({"include_columns": columns, "include_missing_columns": True} if columns is not None else {}))
    try:
        reader = pacsv.open_csv(f, read_options=read_options(encoding),
                                parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=keep),
                                convert_options=convert)
    except pa.ArrowInvalid as e:  # the first block (bytes that are not UTF-8 in a text column, ...)
        raise CSVReadError(_explain(str(e), names(), setting, encoding_setting)) from None
    schema, blocks = reader.schema, 0
    if header is None and head is None:  # every column read: the schema is the header
        header = schema.names
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as e:
            raise CSVReadError(_explain(str(e), names(), setting, encoding_setting)) from None
        blocks += 1
        table = pa.Table.from_batches([batch], schema=schema)
        if comma:  # 3,14 is read as 3.14 where a rule types the text (as Arrow does for the inferred columns)
            table = _decimal_points(table, numbers)
        yield table.append_column(BAD_ROW, pa.nulls(batch.num_rows, pa.string()))
        if bad:
            yield bad_rows(schema, bad)
            bad.clear()
    if bad:
        yield bad_rows(schema, bad)
    elif not blocks:  # a header alone: no rows, but the file's columns
        yield schema.empty_table().append_column(BAD_ROW, pa.array([], pa.string()))


def _decimal_points(table: pa.Table, numbers: tuple[str, ...]) -> pa.Table:
    for name in numbers:
        i = table.schema.get_field_index(name)
        if i >= 0 and pa.types.is_string(table.schema.field(i).type):
            table = table.set_column(i, name, pc.replace_substring(table.column(i), ",", "."))
    return table


def bad_rows(schema: pa.Schema, bad: list[tuple]) -> pa.Table:
    """Lines the parser skipped, as rows: every column null, BAD_ROW saying where and why."""
    n = len(bad)
    why = [f"{'line ' + str(number) if number is not None else 'a line'}: {actual} field(s) where the header has "
           f"{expected}: {_shown(text)}" for number, expected, actual, text in bad]
    return pa.table({**{f.name: pa.nulls(n, f.type) for f in schema}, BAD_ROW: pa.array(why, pa.string())})


def _shown(line: str, limit: int = 200) -> str:
    line = line.encode("utf-8", "backslashreplace").decode("utf-8")
    return repr(line[:limit] + ("..." if len(line) > limit else ""))


def read_options(encoding: str | None) -> pacsv.ReadOptions:
    """One thread per file (Ray Data reads files in parallel); text in `encoding` made UTF-8."""
    return pacsv.ReadOptions(use_threads=False, encoding=encoding or "utf8")


def _explain(message: str, names: list[str], setting: str, encoding_setting: str = "") -> str:
    m = _CONVERSION.search(message)
    if not m:
        first = message.splitlines()[0] if message else "unreadable CSV"
        if "invalid UTF8" in first:
            u = re.search(r"In CSV column #(\d+): (?:Row #(\d+): )?", first)
            at = f"line {u.group(2)}, column #{int(u.group(1)) + 1}: " if u and u.group(2) else ""
            fix = f"declare its encoding ({encoding_setting} cp1252, for one saved by Excel on Windows) or save it as UTF-8" \
                if encoding_setting else "save the file as UTF-8"
            return f"{at}bytes that are not UTF-8 text: {fix} ({first})"
        return first
    k, line, kind, value = int(m.group(1)), m.group(2), m.group(3), m.group(4)
    name = names[k] if k < len(names) else f"#{k + 1}"
    where = f"{setting}.{name}" if setting else f"the column {name!r}"
    return (f"{'line ' + line + ': ' if line else ''}column {name!r} holds {_shown(value, 60)}, which is not {kind}, "
            f"the type Arrow inferred from the file's "
            f"first rows; declare its type ({where}: {{type: ...}}) so that its values are read as text and judged "
            f"row by row (a bad value is then quarantined)")


def _file_columns(first: bytes, delimiter: str, encoding: str | None) -> list[str]:
    """The header's names, from the file's first bytes (none: [])."""
    if not first:
        return []
    line = first.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        return pacsv.read_csv(io.BytesIO(line + b"\n"), read_options=read_options(encoding),
                              parse_options=pacsv.ParseOptions(delimiter=delimiter)).column_names
    except pa.ArrowInvalid:
        return []


class _Head(io.RawIOBase):
    """`f`, keeping the first 64 KiB read (the header, for naming a column in an error)."""

    def __init__(self, f):
        self.f, self.first = f, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(len(b))
        if len(self.first) < 1 << 16:
            self.first += data[:(1 << 16) - len(self.first)]
        b[:len(data)] = data
        return len(data)


def _peek(f) -> tuple[bytes, object]:
    """The file's first line or 64 KiB (whichever is longer, at most 16 MiB), and a stream that
    still starts at the beginning."""
    head = b""
    while b"\n" not in head and len(head) < 1 << 24:
        chunk = f.read(1 << 16)
        if not chunk:
            break
        head += chunk
    return head, pa.PythonFile(io.BufferedReader(_Prefixed(head, f), buffer_size=1 << 20), mode="r")


class _Prefixed(io.RawIOBase):
    """`head` (already read from `f`), then the rest of `f`."""

    def __init__(self, head: bytes, f):
        self.head, self.f = memoryview(head), f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if len(self.head):
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.f.read(len(b))
        b[:len(data)] = data
        return len(data)
