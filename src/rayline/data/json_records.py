"""JSON sources as users have them: JSON lines, or one top-level array of records (what
`pandas.to_json(orient="records")` and most APIs write), detected from the first byte.

Both are read as a stream (a bounded buffer, never the whole file), so a large array costs no
more memory than a large JSON-lines file. A record that cannot be read (a line that is not JSON,
an element that is not an object) does not fail the file: it becomes a row whose BAD_RECORD
column says where and why, and the ingest and batch inference quarantine it with that reason.

Values arrive as text, like CSV fields (numbers in their JSON spelling, whole floats as
integers so 1545.0 and 1545 name one category, nested values as their JSON text), and the
column rules type them: one schema for every block, whatever mix of types a column holds.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, BinaryIO, Iterator

import pyarrow as pa

BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark
BAD_RECORD = "__rl_bad_record"   # "line 7: <why>" or "index 3: <why>"; null for a good record
BLOCK_RECORDS = 8192             # records per yielded table
CHUNK_BYTES = 1 << 20
MAX_RECORD_CHARS = 64 << 20      # one array element larger than this is malformed, not awaited
_NEXT_OBJECT = re.compile(r",\s*\{")
_decoder = json.JSONDecoder()


class _Bad:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(v), "null" if v is None else "a number")


def iter_records(stream: BinaryIO) -> Iterator[tuple[str, Any]]:
    """(where, record or _Bad) for each record of a JSON-lines or JSON-array stream."""
    head = stream.read(CHUNK_BYTES)
    if head.startswith(BOM):  # Windows tools (PowerShell, Notepad) start UTF-8 text with one
        head = head[len(BOM):]
    start = len(head) - len(head.lstrip())
    if head[start:start + 1] == b"[":
        yield from _array(head, stream)
    else:
        yield from _lines(head, stream)


def _lines(head: bytes, stream: BinaryIO) -> Iterator[tuple[str, Any]]:
    buf, number, eof = head, 0, not head
    while True:
        if not eof:
            more = stream.read(CHUNK_BYTES)
            eof = not more
            buf += more
        *complete, buf = buf.split(b"\n")
        if eof:
            complete.append(buf)
        for line in complete:
            number += 1
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as e:  # includes invalid UTF-8
                yield f"line {number}", _Bad(f"not valid JSON: {str(e)[:120]}")
                continue
            yield f"line {number}", value if isinstance(value, dict) else _Bad(f"{_kind(value)}, expected a JSON object")
        if eof:
            return


def _array(head: bytes, stream: BinaryIO) -> Iterator[tuple[str, Any]]:
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf, eof = dec.decode(head), False
    pos = buf.index("[") + 1
    index = 0

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        chunk = stream.read(CHUNK_BYTES)
        eof = not chunk
        buf = buf[pos:] + dec.decode(chunk, final=eof)
        pos = 0
        return True

    def skip_space() -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or not more():
                return

    def resync() -> bool:
        """Move past a broken element to the next `, {`; False when none follows (the end)."""
        nonlocal pos
        while True:
            m = _NEXT_OBJECT.search(buf, pos)
            if m:
                pos = m.end() - 1
                return True
            pos = max(pos, len(buf) - 64)  # keep a tail in case ", {" straddles two chunks
            if not more():
                return False

    skip_space()
    if pos < len(buf) and buf[pos] == "]":
        return
    while True:
        skip_space()
        if pos >= len(buf):
            yield f"index {index}", _Bad("the array is not closed (truncated file?)")
            return
        try:
            value, end = _decoder.raw_decode(buf, pos)
        except ValueError as e:
            if not eof and len(buf) - pos < MAX_RECORD_CHARS and more():
                continue  # the element may straddle the chunk boundary
            yield f"index {index}", _Bad(f"not valid JSON: {str(e)[:120]}")
            index += 1
            if not resync():
                if not buf[pos:].rstrip().endswith("]"):
                    yield f"index {index}", _Bad("the array is not closed (truncated file?)")
                return
            continue
        pos = end
        yield f"index {index}", value if isinstance(value, dict) else _Bad(f"{_kind(value)}, expected a JSON object")
        index += 1
        skip_space()
        if pos >= len(buf):
            yield f"index {index}", _Bad("the array is not closed (truncated file?)")
            return
        if buf[pos] == "]":
            return
        if buf[pos] == ",":
            pos += 1
        elif buf[pos] != "{":  # a missing comma between two objects loses nothing; anything else:
            yield f"index {index}", _Bad(f"expected ',' or ']' after element {index - 1}, found {buf[pos]!r}")
            index += 1
            if not resync():
                return


def text(v: Any) -> str | None:
    """A JSON value as the text a CSV field would hold."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 2.0 ** 53:
        return str(int(v))
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, separators=(",", ":"))


def to_table(records: list[tuple[str, Any]]) -> pa.Table:
    """Records -> one table of text columns (the union of their keys, in first-seen order) plus
    BAD_RECORD."""
    names: dict[str, None] = {}
    for _, r in records:
        if isinstance(r, dict):
            names.update(dict.fromkeys(r))
    names.pop(BAD_RECORD, None)
    cols = {n: pa.array([text(r.get(n)) if isinstance(r, dict) else None for _, r in records], pa.string())
            for n in names}
    cols[BAD_RECORD] = pa.array([f"{w}: {r.reason}" if isinstance(r, _Bad) else None for w, r in records], pa.string())
    return pa.table(cols)


def read_tables(stream: BinaryIO, block_records: int = BLOCK_RECORDS) -> Iterator[pa.Table]:
    """The stream as tables of at most `block_records` records each (at least one table)."""
    batch: list[tuple[str, Any]] = []
    emitted = False
    for item in iter_records(stream):
        batch.append(item)
        if len(batch) >= block_records:
            yield to_table(batch)
            emitted, batch = True, []
    if batch or not emitted:
        yield to_table(batch)


def first_keys(stream: BinaryIO, limit: int = 100) -> list[str] | None:
    """The keys of the first good record among the first `limit`, for the header check; None if
    there is none."""
    for i, (_, r) in enumerate(iter_records(stream)):
        if isinstance(r, dict):
            return list(r)
        if i >= limit:
            break
    return None
