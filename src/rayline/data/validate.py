"""Row-level validation of source tables: typed columns out, failing rows to quarantine.

The per-column rules live in `rayline.features.contract` (shared with serving and batch
inference); this module adds what only tables need (duplicate keys). Every rule is
vectorised over an Arrow batch. A row that fails any rule leaves the clean
output and becomes one quarantine row recording the first rule that failed, the column, the
offending value, every failure as text, its source file and the original row as JSON, so
nothing is silently dropped and a person can fix and replay it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# The rule engine is the feature contract's: ingest, serving and batch judge a value alike.
from rayline.features.contract import QUARANTINE_SCHEMA, Failures, apply_rules

__all__ = ["QUARANTINE_SCHEMA", "Failures", "apply_rules", "duplicate_mask"]


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
