"""Row-level validation: typed columns out, failing rows to quarantine with a reason.

Every rule is vectorised over an Arrow batch. A row that fails any rule leaves the clean
output and becomes one quarantine row recording the first rule that failed, the column, the
offending value, every failure as text, its source file and the original row as JSON, so
nothing is silently dropped and a person can fix and replay it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import ColumnRule
from rayline.features.coerce import coerce

QUARANTINE_SCHEMA = pa.schema([
    ("table", pa.string()),
    ("rule", pa.string()),
    ("column", pa.string()),
    ("value", pa.string()),
    ("failures", pa.string()),
    ("source_file", pa.string()),
    ("row", pa.string()),
])


@dataclass
class Failures:
    """First failure per row, plus all failures as text (only materialised for bad rows)."""

    n: int
    details: bool = True  # False: only which rows failed (the ingest's second pass needs no more)

    def __post_init__(self) -> None:
        self.bad = np.zeros(self.n, dtype=bool)
        slots = self.n if self.details else 0  # no per-row reasons to keep without details
        self.rule = np.full(slots, None, dtype=object)
        self.column = np.full(slots, None, dtype=object)
        self.value = np.full(slots, None, dtype=object)
        self.all: dict[int, list[str]] = {}

    def add(self, mask: np.ndarray, rule: str, column: str, raw: pa.Array | None) -> None:
        if not self.details:
            self.bad |= mask
            return
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        values = raw.take(pa.array(idx)).to_pylist() if raw is not None else [None] * idx.size
        for i, v in zip(idx.tolist(), values):
            text = None if v is None else str(v)
            if not self.bad[i]:
                self.bad[i] = True
                self.rule[i], self.column[i], self.value[i] = rule, column, text
            self.all.setdefault(i, []).append(f"{rule}:{column}={text}")

    def quarantine(self, raw: pa.Table, table_name: str, source_col: str | None) -> pa.Table:
        if not self.details:
            raise ValueError("Failures(details=False) records no reasons to quarantine with")
        idx = np.flatnonzero(self.bad)
        bad_rows = raw.take(pa.array(idx))
        src = bad_rows.column(source_col).to_pylist() if source_col and source_col in raw.column_names else [None] * idx.size
        return pa.table({
            "table": pa.array([table_name] * idx.size, pa.string()),
            "rule": pa.array(self.rule[idx].tolist(), pa.string()),
            "column": pa.array(self.column[idx].tolist(), pa.string()),
            "value": pa.array(self.value[idx].tolist(), pa.string()),
            "failures": pa.array(["; ".join(self.all[i]) for i in idx.tolist()], pa.string()),
            "source_file": pa.array(src, pa.string()),
            "row": pa.array(_json_rows(bad_rows.drop_columns([c for c in (source_col,) if c and c in raw.column_names])), pa.string()),
        }, schema=QUARANTINE_SCHEMA)


def _json_rows(table: pa.Table) -> list[str]:
    """Each row as a JSON object (pandas' C encoder: quarantines can be large)."""
    if table.num_rows == 0:
        return []
    try:
        return table.to_pandas(types_mapper=pd.ArrowDtype).to_json(orient="records", lines=True, date_format="iso").splitlines()
    except (ValueError, TypeError, OverflowError):
        return [json.dumps(r, default=str) for r in table.to_pylist()]


def apply_rules(table: pa.Table, rules: dict[str, ColumnRule], failures: Failures) -> pa.Table:
    """Coerce each ruled column to its type and record every rule violation in `failures`."""
    out = table
    for name, rule in rules.items():
        if name not in table.column_names:
            # A row-level check cannot fix a missing column; sources.check_files reports it
            # per file. Here (joined columns, JSON lines without the key) it is all-null.
            raw = pa.nulls(table.num_rows)
        else:
            raw = table.column(name)
            raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
        typed, type_bad = raw, np.zeros(table.num_rows, dtype=bool)
        if rule.type is not None:
            typed, type_bad = coerce(raw, rule.type)
            failures.add(type_bad, "type", name, raw)
        if not rule.nullable:
            # Values that failed the type rule are null now but were not missing.
            failures.add(pc.is_null(typed).to_numpy(zero_copy_only=False) & ~type_bad, "not_null", name, raw)
        if rule.min is not None or rule.max is not None:
            failures.add(_out_of_range(typed, rule), "range", name, raw)
        if rule.allowed is not None:
            as_str = coerce(typed, "string")[0]
            ok = pc.is_in(as_str, value_set=pa.array(rule.allowed, pa.string()))
            failures.add(pc.and_(pc.is_valid(as_str), pc.invert(pc.fill_null(ok, False))).to_numpy(zero_copy_only=False),
                         "allowed", name, raw)
        out = _set_column(out, name, typed)
    return out


def _out_of_range(typed: pa.Array, rule: ColumnRule) -> np.ndarray:
    if pa.types.is_timestamp(typed.type):
        vals = pc.cast(typed, pa.int64()).to_numpy(zero_copy_only=False)  # only numeric bounds make sense
        vals = vals.astype(np.float64) / 1e6
    else:
        vals = pc.fill_null(pc.cast(typed, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    bad = np.zeros(len(vals), dtype=bool)
    with np.errstate(invalid="ignore"):
        if rule.min is not None:
            bad |= vals < rule.min
        if rule.max is not None:
            bad |= vals > rule.max
    return bad


def _set_column(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, arr)
    return table.append_column(name, arr)


def duplicate_mask(table: pa.Table, key: list[str]) -> np.ndarray:
    """Rows whose key occurs more than once. All of them are flagged: which copy is right is
    not ours to guess, so none is silently preferred."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool)
    keyed = table.select(key).append_column("__rl_i", pa.array(np.arange(table.num_rows)))
    counts = keyed.group_by(key, use_threads=False).aggregate([("__rl_i", "count")])
    dup_keys = counts.filter(pc.greater(counts.column("__rl_i_count"), 1)).select(key)
    if dup_keys.num_rows == 0:
        return np.zeros(table.num_rows, dtype=bool)
    marked = keyed.join(dup_keys.append_column("__rl_dup", pa.array([True] * dup_keys.num_rows)), key, join_type="left outer")
    mask = np.zeros(table.num_rows, dtype=bool)
    hit = marked.filter(pc.is_valid(marked.column("__rl_dup"))).column("__rl_i").to_numpy()
    mask[hit] = True
    return mask
