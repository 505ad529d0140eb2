"""Broadcast left joins of small dimension tables onto batches of the primary table.

Dimension tables (weather, planes, airports: thousands of rows) are read once on the driver,
validated, put in the object store and joined onto every batch with Arrow's hash join inside
the same map task that validates it. That costs no shuffle; Ray Data's `Dataset.join` (a hash
shuffle of both sides) is the right tool only when both sides are large, which rayline does
not need for a star schema.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import JoinConfig
from rayline.errors import InputError
from rayline.features.coerce import coerce

_ROW = "__rl_row"


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


def prepare_dimension(dim: pa.Table, join: JoinConfig) -> pa.Table:
    """Keep the keys and the requested columns, renamed, with a match marker."""
    keep = list(join.keys.values()) + [c for c in join.columns if c not in join.keys.values()]
    out = dim.select(keep)
    for k in join.keys.values():
        # Canonical key types (int64, float64, string, timestamp[us, UTC]) on both sides.
        i = out.column_names.index(k)
        out = out.set_column(i, k, coerce(out.column(k), kind_of(out.schema.field(k).type))[0])
    names = [join.output_name(c) if c not in join.keys.values() else c for c in keep]
    out = out.rename_columns(names)
    return out.append_column(f"__rl_match_{join.table}", pa.array(np.ones(out.num_rows, dtype=bool)))


def left_join(batch: pa.Table, dim: pa.Table, join: JoinConfig) -> tuple[pa.Table, np.ndarray]:
    """Left-join `dim` (already prepared) onto `batch`, keeping batch order.

    Returns the joined batch and a mask of rows that found no match.
    """
    left_keys, right_keys = list(join.keys.keys()), list(join.keys.values())
    probe = pa.table({_ROW: pa.array(np.arange(batch.num_rows, dtype=np.int64))})
    for lk, rk in zip(left_keys, right_keys):
        # Align key types (a CSV may read a key as int on one side and string on the other).
        probe = probe.append_column(rk, coerce(batch.column(lk), kind_of(dim.schema.field(rk).type))[0])
    joined = probe.join(dim, keys=right_keys, join_type="left outer", use_threads=False)
    joined = joined.sort_by(_ROW)
    marker = f"__rl_match_{join.table}"
    unmatched = pc.is_null(joined.column(marker)).to_numpy(zero_copy_only=False)
    out = batch
    for c in joined.column_names:
        if c in (_ROW, marker) or c in right_keys:
            continue
        if c in out.column_names:
            raise InputError(f"join with {join.table!r}: column {c!r} already exists in the primary table; "
                             f"give it another name with joins[].rename")
        out = out.append_column(c, joined.column(c))
    return out, unmatched
