"""Broadcast left joins of small dimension tables onto batches of the primary table.

Dimension tables (weather, planes, airports: thousands of rows) are read once on the driver,
validated, put in the object store and joined onto every batch inside the same map task that
validates it. That costs no shuffle; Ray Data's `Dataset.join` (a hash shuffle of both sides)
is the right tool only when both sides are large, which rayline does not need for a star schema.

The join itself is a lookup, not a general hash join: a dimension's keys are unique (duplicates
were quarantined), so each batch row maps to at most one dimension row. Each key column is
turned into a dense code with `index_in` against that column's distinct values; a composite key
folds its codes pairwise, re-densifying after each step (so codes stay below the dimension's
row count and cannot overflow); the final code indexes the dimension's rows. This keeps batch
order without a sort and costs about half of Acero's join + sort on this host (35 vs 65 ms for
the three flights joins of a 262k-row batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import JoinConfig
from rayline.errors import InputError
from rayline.features.coerce import coerce


def kind_of(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_boolean(t):
        return "bool"
    return "string"


@dataclass
class PreparedDimension:
    """A dimension table ready for lookups: its output columns and the key code tables."""

    table: str
    columns: pa.Table  # output columns (renamed), one row per dimension row
    key_kinds: list[str]  # canonical kind of each dimension key column, in join.keys order
    distinct: list[pa.Array]  # distinct values of each key column
    folded: list[pa.Array | None]  # distinct (previous code * len(distinct[k]) + code[k]) per step k >= 1
    row_of_code: pa.Array  # final dense code -> dimension row

    @property
    def num_rows(self) -> int:
        return self.columns.num_rows


def prepare_dimension(dim: pa.Table, join: JoinConfig) -> PreparedDimension:
    """Index a validated dimension table for `left_join`. Its keys must be unique and non-null."""
    right_keys = list(join.keys.values())
    keys = [coerce(dim.column(k), kind_of(dim.schema.field(k).type))[0] for k in right_keys]
    has_key = np.ones(dim.num_rows, dtype=bool)
    for k in keys:
        has_key &= pc.is_valid(k).to_numpy(zero_copy_only=False)
    if not has_key.all():  # a null key matches nothing (SQL semantics)
        dim, keys = dim.filter(pa.array(has_key)), [k.filter(pa.array(has_key)) for k in keys]
    distinct, folded, code = [], [], None
    for k in keys:
        uniq = pc.unique(k)
        c = pc.index_in(k, value_set=uniq).cast(pa.int64())
        distinct.append(uniq)
        if code is None:
            code = c
            folded.append(None)
        else:
            step = pc.add(pc.multiply(code, len(uniq)), c)
            step_uniq = pc.unique(step)
            folded.append(step_uniq)
            code = pc.index_in(step, value_set=step_uniq).cast(pa.int64())
    codes = code.to_numpy(zero_copy_only=False) if code is not None else np.zeros(0, np.int64)
    n_codes = len(folded[-1]) if folded and folded[-1] is not None else (len(distinct[0]) if distinct else 0)
    if n_codes != dim.num_rows:
        raise InputError(f"join with {join.table!r}: key ({', '.join(right_keys)}) is not unique in the dimension table")
    row_of_code = np.empty(n_codes, dtype=np.int64)
    row_of_code[codes] = np.arange(dim.num_rows, dtype=np.int64)
    out_cols = [c for c in join.columns if c not in right_keys]
    columns = dim.select(out_cols).rename_columns([join.output_name(c) for c in out_cols])
    return PreparedDimension(join.table, columns, [kind_of(k.type) for k in keys], distinct, folded, pa.array(row_of_code))


def lookup_rows(batch: pa.Table, dim: PreparedDimension, join: JoinConfig) -> pa.Array:
    """For each batch row, the matching dimension row (int64), or null when there is none."""
    code = None
    for i, lk in enumerate(join.keys):
        # Align key types (a CSV may read a key as int on one side and string on the other).
        probe = coerce(batch.column(lk), dim.key_kinds[i])[0]
        c = pc.index_in(probe, value_set=dim.distinct[i]).cast(pa.int64())
        if code is None:
            code = c
        else:
            step = pc.add(pc.multiply(code, len(dim.distinct[i])), c)
            code = pc.index_in(step, value_set=dim.folded[i]).cast(pa.int64())
    return pc.take(dim.row_of_code, code)


def left_join(batch: pa.Table, dim: PreparedDimension, join: JoinConfig) -> tuple[pa.Table, np.ndarray]:
    """Left-join `dim` (from `prepare_dimension`) onto `batch`, keeping batch order.

    Returns the joined batch and a mask of rows that found no match.
    """
    rows = lookup_rows(batch, dim, join)
    unmatched = pc.is_null(rows).to_numpy(zero_copy_only=False)
    matched = dim.columns.take(rows)
    out = batch
    for c in matched.column_names:
        if c in out.column_names:
            raise InputError(f"join with {join.table!r}: column {c!r} already exists in the primary table; "
                             f"give it another name with joins[].rename")
        out = out.append_column(c, matched.column(c))
    return out, unmatched
