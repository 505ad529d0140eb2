"""Where batch predictions are written: the output's layout, its staging, and what may never
be overwritten.

Batch output is staged beside its destination and published with a marker, so a failed run
leaves nothing behind and never a half-written output. Three refusals protect what is already
there: an output that is, holds, or lies inside the input (replacing it would delete input,
or the next read would take predictions for input), and an existing output without
`overwrite` (it is replaced only once the new one is complete).

Layout: `<output>/predictions/` (the scored rows) and `<output>/quarantine/` (the rows refused,
quarantine columns only), each a set of `part-<random>.parquet` files, one per scored batch.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from rayline.errors import InputError
from rayline.storage import Storage

PREDICTIONS, QUARANTINE = "predictions", "quarantine"
REPORT = pa.schema([("part", pa.string()), ("rows", pa.int64())])


@dataclass(frozen=True)
class StagedParts:
    """Where a run's actors write what they scored: each batch is written by the actor that scored
    it (its rows never travel to write tasks), as files of its own under the staging directory, and
    the actor returns one report row per file (its path under the staging directory, its rows).

    Only reported files are kept (`keep_reported`): an attempt that died after writing, whose batch
    Ray ran again elsewhere, leaves a file nobody reported, and it is removed."""

    storage: Storage  # its filesystem resolved on the driver and pickled with it, as a write task's
    staging: str

    def write(self, predictions: pa.Table, quarantine: pa.Table) -> pa.Table:
        parts, rows = [], []
        for sub, table in ((PREDICTIONS, predictions), (QUARANTINE, quarantine)):
            if table.num_rows:
                part = f"{sub}/part-{uuid.uuid4().hex}.parquet"
                self.storage.write_parquet(table, self.staging, part)
                parts.append(part)
                rows.append(table.num_rows)
        return pa.table([pa.array(parts, pa.string()), pa.array(rows, pa.int64())], schema=REPORT)


def keep_reported(parts: StagedParts, reported: list[dict]) -> dict[str, int]:
    """Remove the staged files no finished batch reported; the rows each of predictions/ and
    quarantine/ holds, counted from the kept files' footers (not from the reports)."""
    storage, staging = parts.storage, parts.staging
    kept = {r["part"] for r in reported}
    if len(kept) != len(reported):
        raise RuntimeError(f"batch prediction reported {len(reported) - len(kept)} file(s) twice")
    counts = {}
    base = storage.path(staging).rstrip("/") + "/"
    for sub in (PREDICTIONS, QUARANTINE):
        keep = []
        for path in storage.list_files(staging, sub):
            rel = path[len(base):]
            if rel in kept:
                keep.append(path)
                kept.discard(rel)
            else:
                storage.delete_file(staging, rel)
        counts[sub] = sum(storage.parquet_rows(keep))
    if kept:
        raise RuntimeError(f"batch prediction reported files that are not there: {sorted(kept)[:3]}")
    return counts


def location(fs: pafs.FileSystem, path: str) -> tuple[str, str]:
    """(filesystem kind, normalised path): local paths with links resolved, no trailing slash."""
    kind = fs.type_name
    p = os.path.realpath(path) if kind == "local" else path.split("?", 1)[0]
    return kind, p.rstrip("/") or "/"


def overlaps(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Same place, or one inside the other, on the same kind of filesystem."""
    if a[0] != b[0]:
        return False
    x, y = a[1].rstrip("/") + "/", b[1].rstrip("/") + "/"
    return x.startswith(y) or y.startswith(x)


def check_output(input_loc: tuple[str, str], output_loc: tuple[str, str], output_exists: bool, *,
                 overwrite: bool, shown_input: str, shown_output: str) -> None:
    if overlaps(input_loc, output_loc):
        where = ("is the input" if input_loc[1] == output_loc[1] else
                 "is inside the input" if output_loc[1].startswith(input_loc[1].rstrip("/") + "/") else "contains the input")
        raise InputError(f"--output {shown_output} {where} {shown_input}: writing there could delete or mix with the "
                         f"input; choose an output outside the input")
    if output_exists and not overwrite:
        raise InputError(f"--output {shown_output} already exists; pass --overwrite to replace it (the old output is "
                         f"kept until the new one is complete)")
