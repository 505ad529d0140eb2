"""Count features: how many rows of the primary table share a key (e.g. departures planned at
an airport in an hour). A schedule is known before the event, so these counts are features a
prediction may use: they are computed over every row of the table (all splits, no labels) and
joined back like a dimension; serving and batch inference look them up in the ingest's lookup
snapshot (`features/lookups.py`), a client's own value winning.

Computed in one extra read of the key columns only: each batch is grouped with Arrow and the
partial counts are summed on the driver (no Ray Data shuffle).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import CountFeature, RaylineConfig
from rayline.features.lookups import PreparedDimension, add_counts, count_join, prepare_dimension

COUNT = "__count"


def key_columns(cfg: RaylineConfig) -> list[str]:
    return sorted({k for c in cfg.data.counts for k in c.by})


@dataclass
class PartialCounts:
    """map_batches callable: per-batch counts of every count feature, stacked in one table."""

    counts: list[CountFeature]

    def __call__(self, batch: pa.Table) -> pa.Table:
        parts = []
        for i, c in enumerate(self.counts):
            g = batch.select(c.by).group_by(c.by).aggregate([([], "count_all")])
            parts.append(_stack(i, c, g.rename_columns([*c.by, COUNT])))
        return pa.concat_tables(parts, promote_options="permissive")


def _stack(i: int, c: CountFeature, t: pa.Table) -> pa.Table:
    """One table shape for all features: feature index, keys as strings in k0..kn, count."""
    cols = {"feature": pa.array([i] * t.num_rows, pa.int32())}
    for j, k in enumerate(c.by):
        cols[f"k{j}"] = pc.cast(t.column(k), pa.string())
    cols[COUNT] = t.column(COUNT).cast(pa.int64())
    return pa.table(cols)


def finish(cfg: RaylineConfig, partial: pa.Table) -> dict[str, PreparedDimension]:
    """Sum the partial counts per key and index each feature's table for lookups."""
    out = {}
    for i, c in enumerate(cfg.data.counts):
        t = partial.filter(pc.equal(partial.column("feature"), i))
        keys = [f"k{j}" for j in range(len(c.by))]
        t = t.select([*keys, COUNT]).group_by(keys).aggregate([(COUNT, "sum")])
        # Grouping's output order follows the tasks' finishing order: sorted, the snapshot's
        # bytes (and its fingerprint) are the same for the same input.
        t = t.sort_by([(k, "ascending") for k in keys])
        t = t.rename_columns([*c.by, c.name])
        out[c.name] = prepare_dimension(t, count_join(c))
    return out


__all__ = ["PartialCounts", "add_counts", "finish", "key_columns"]
