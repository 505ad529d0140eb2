"""A bounded, rotated log of rows in Parquet parts under one storage prefix.

Rows are buffered in memory and written as one part when `flush_records` are buffered or the
oldest is `flush_s` old; a replica killed by SIGKILL loses only its buffer (at most that many
records or seconds of traffic). More than `max_buffer` buffered rows (storage down or slow) are
dropped, not queued without bound, and counted. Beyond `max_files` parts the oldest are deleted.
Part names begin with the write time in milliseconds, so a reader takes a window by name.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from rayline.config import PredictionLogConfig
from rayline.storage import Storage

PART_SUFFIX = ".parquet"


def part_time(name: str) -> float:
    """A part's write time (seconds) from its name; 0 for a name that is not a part's."""
    head = name.split("-", 1)[0]
    return int(head) / 1000 if head.isdigit() else 0.0


class PartLog:
    def __init__(self, storage: Storage, prefix: str, schema: pa.Schema, cfg: PredictionLogConfig, writer: str,
                 prepare: Callable[[list[dict]], dict] | None = None, clock: Callable[[], float] = time.time):
        """`prepare` turns the buffered chunks into columns (in the flushing thread: the work a
        request should not wait for, such as hashing inputs)."""
        self.storage, self.prefix, self.schema, self.cfg = storage, prefix, schema, cfg
        self.writer = "".join(c for c in writer if c.isalnum())[:32] or "w"
        self.prepare, self.clock = prepare, clock
        self.lock = threading.Lock()
        self.chunks: list[dict] = []   # each: column name -> list, for `n` rows
        self.buffered, self.oldest = 0, None
        self.dropped = self.written = self.parts = 0
        self.seq = itertools.count()
        self.flushing = threading.Lock()  # one write at a time, in order

    def add(self, chunk: dict, n: int) -> bool:
        """Buffer `n` rows (a dict of equal-length lists, or what `prepare` understands); False
        when the buffer is full and they were dropped."""
        with self.lock:
            if self.buffered + n > self.cfg.max_buffer:
                self.dropped += n
                return False
            self.chunks.append(chunk)
            self.buffered += n
            self.oldest = self.oldest or self.clock()
        return True

    def due(self) -> bool:
        return self.buffered >= self.cfg.flush_records or (
            self.oldest is not None and self.clock() - self.oldest >= self.cfg.flush_s)

    def flush(self) -> int:
        """Write what is buffered as one part (blocking: call it off the event loop). On a storage
        error the rows go back to the buffer's front (within max_buffer) and the error is raised."""
        with self.flushing:
            with self.lock:
                chunks, n = self.chunks, self.buffered
                self.chunks, self.buffered, self.oldest = [], 0, None
            if not chunks:
                return 0
            try:
                columns = self.prepare(chunks) if self.prepare else {
                    k: [v for c in chunks for v in c[k]] for k in self.schema.names}
                table = pa.Table.from_pydict(columns, schema=self.schema)
                sink = io.BytesIO()
                pq.write_table(table, sink, compression="zstd")
                name = f"{int(self.clock() * 1000):013d}-{self.writer}-{next(self.seq):06d}{PART_SUFFIX}"
                self.storage.write_bytes(sink.getvalue(), self.prefix, name)
            except Exception:
                with self.lock:  # keep them for the next try, as far as the bound allows
                    room = max(0, self.cfg.max_buffer - self.buffered)
                    if n <= room:
                        self.chunks, self.buffered = chunks + self.chunks, self.buffered + n
                        self.oldest = self.oldest or self.clock()
                    else:
                        self.dropped += n
                raise
            self.written += n
            self.parts += 1
            if self.parts % 10 == 1:
                self.retain()
            return n

    def retain(self) -> list[str]:
        """Delete the oldest parts beyond max_files (all writers' parts count)."""
        names = [n for n in self.storage.list_dir(self.prefix) if n.endswith(PART_SUFFIX)]
        extra = sorted(names, key=part_time)[: max(0, len(names) - self.cfg.max_files)]
        for name in extra:
            try:
                self.storage.delete_file(self.prefix, name)
            except FileNotFoundError:
                pass  # another replica deleted it first
        return extra

    def stats(self) -> dict:
        return {"buffered": self.buffered, "written": self.written, "parts": self.parts, "dropped": self.dropped}


def read_parts(storage: Storage, prefix: str, since: float = 0.0, schema: pa.Schema | None = None) -> pa.Table | None:
    """The parts written at or after `since` (by their names), as one table; None if there are none."""
    names = [n for n in storage.list_dir(prefix) if n.endswith(PART_SUFFIX) and part_time(n) >= since]
    tables = []
    for name in names:
        try:
            tables.append(pq.read_table(io.BytesIO(storage.read_bytes(prefix, name)), schema=schema))
        except FileNotFoundError:
            continue  # rotated away while listing
    return pa.concat_tables(tables, promote_options="permissive") if tables else None
