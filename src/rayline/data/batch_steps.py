"""The per-batch work of the ingest: validate, join, split, then gather statistics or transform.

Pure functions over Arrow tables (no Ray here), so they are unit-tested directly and run
unchanged inside Ray Data tasks, which receive the compiled `IngestPlan` (data/plan.py), not the
config. Validation, joins and the split are deterministic functions of a row, so the ingest runs
them twice over the raw input instead of staging the joined rows: pass 1 (:class:`StatisticsPass`)
returns the batch's partial statistics and its quarantined rows; pass 2 (:class:`ReadyPass`,
with the fitted spec) returns the clean rows in the model-ready layout, tagged with their split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayline.features.lookups import attach, join_name
from rayline.data.plan import IngestPlan
from rayline.data.sources import PATH_COLUMN, unreadable_records
from rayline.data.split import SPLITS, TRAIN_CODE, assign, outside_window
from rayline.data.validate import QUARANTINE_SCHEMA, Failures, apply_rules
from rayline.features.coerce import coerce
from rayline.features.fit import partial_stats
from rayline.features.spec import FeatureSpec, compare

READY_SPLIT_COL = "split"  # the model-ready output is partitioned by it: ready/split=<name>/
STATS_COL = "rl__stats"
QUARANTINE = "quarantine"
SPLIT_NAMES = [*SPLITS, QUARANTINE]  # index = split code
QUARANTINE_CODE = len(SPLITS)
OUTSIDE_CODE = QUARANTINE_CODE + 1  # clean rows outside the split's data window (counted, not used)
Q_PREFIX = "q_"  # quarantine columns in pass 1's output: q_rule, q_column, ...


@dataclass
class _Pass:
    """What both passes do to a batch: rules, joins, counts, split. `dims_ref` is an ObjectRef of
    {join index or count name: prepared table} (fetched once per task process), or the dict itself."""

    plan: IngestPlan
    dims_ref: object | None = None
    _dims: dict | None = field(default=None, init=False, repr=False)

    def dims(self) -> dict:
        if self._dims is None:
            ref = self.dims_ref
            if ref is not None and not isinstance(ref, dict):
                import ray

                ref = ray.get(ref)
            self._dims = ref or {}
        return self._dims

    def prepare(self, batch: pa.Table, details: bool) -> tuple[pa.Table, np.ndarray, Failures]:
        """Typed + joined columns, split code per row (QUARANTINE_CODE for bad rows), failures."""
        p = self.plan
        failures = Failures(batch.num_rows, details=details)
        unreadable_records(batch, failures)
        typed = apply_rules(batch, p.rules, failures)
        # the joins and counts, with the code serving and batch inference run (features/lookups.py)
        typed, missed = attach(typed, batch, p.joins, self.dims(), p.counts)
        for j in p.joins:
            if j.required:
                key = next(iter(j.keys))
                failures.add(missed[join_name(j)], "join", f"{j.table}({','.join(j.keys)})", batch.column(key).combine_chunks())
        split, undecided = assign(typed, p.split)
        if p.split.method == "time":
            failures.add(undecided & ~failures.bad, "split", p.split.column, batch.column(p.split.column).combine_chunks())
        split[failures.bad] = QUARANTINE_CODE
        outside = outside_window(typed, p.split)
        if outside is not None:
            split[outside & ~failures.bad] = OUTSIDE_CODE
        return typed, split, failures


@dataclass
class StatisticsPass(_Pass):
    """Pass 1, for `Dataset.map_batches` (pyarrow in, pyarrow out): a batch becomes one row of
    partial statistics plus its quarantined rows (:func:`stats_table`)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        p = self.plan
        typed, split, failures = self.prepare(batch, details=True)
        train = typed.select(list(p.stats)).filter(pa.array(split == TRAIN_CODE))
        stats = partial_stats(train, p.features, compare_label(train, p),
                              learned_log1p=p.label.transform == "log1p").to_dict()
        stats["rows_in"] = batch.num_rows
        counts = np.bincount(split, minlength=OUTSIDE_CODE + 1)
        stats["split_rows"] = {name: int(counts[i]) for i, name in enumerate(SPLIT_NAMES[:-1])}
        stats["outside_window"] = int(counts[OUTSIDE_CODE])
        if p.task != "regression":
            stats["split_classes"] = split_classes(typed, split, p)
        return stats_table(json.dumps(stats), failures.quarantine(batch, p.primary, PATH_COLUMN))


@dataclass
class ReadyPass(_Pass):
    """Pass 2: a batch's clean rows in the model-ready layout (the fitted `spec`), plus a `split` column."""

    spec: FeatureSpec | None = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        typed, split, failures = self.prepare(batch, details=False)
        keep = ~failures.bad & (split != OUTSIDE_CODE)
        ready = self.spec.to_model_table(typed.select(list(self.plan.staged)).filter(pa.array(keep)))
        names = pa.DictionaryArray.from_arrays(pa.array(split[keep]), pa.array(SPLIT_NAMES[:-1]))
        return ready.append_column(READY_SPLIT_COL, names.cast(pa.string()))


def split_classes(typed: pa.Table, split: np.ndarray, plan: IngestPlan) -> dict[str, dict[str, int]]:
    """Rows per label class per split (clean rows only): a split with one class cannot train or
    be scored, and the ingest says so before any training starts."""
    lab = plan.label
    col = typed.column(lab.column)
    if lab.positive_if:
        (op, value), = lab.positive_if.items()
        names, codes = ["negative", "positive"], np.asarray(compare(col, op, value), dtype=bool).astype(np.int64)
    elif plan.task == "binary":
        x = np.nan_to_num(coerce(col, "float")[0].to_numpy(zero_copy_only=False))
        names, codes = ["0", "1"], (x > 0.5).astype(np.int64)
    else:
        names = list(lab.classes or [])
        idx = pc.index_in(coerce(col, "string")[0], value_set=pa.array(names, pa.string()))
        codes = pc.fill_null(idx, len(names)).to_numpy(zero_copy_only=False).astype(np.int64)
    # one bincount over (split, class) pairs: no per-row Python work in the ingest's hot loop
    k = len(names) + 1  # the last: a class not declared (only on quarantined rows)
    table = np.bincount(split.astype(np.int64) * k + codes, minlength=(OUTSIDE_CODE + 1) * k).reshape(-1, k)
    return {name: {c: int(n) for c, n in zip(names, table[code]) if n}
            for code, name in enumerate(SPLIT_NAMES[:-1])}


def compare_label(train: pa.Table, plan: IngestPlan) -> np.ndarray | None:
    lab = plan.label
    if plan.task == "multiclass":
        return None
    if lab.positive_if:
        (op, value), = lab.positive_if.items()
        return compare(train.column(lab.column), op, value).astype(np.float64)
    return train.column(lab.column).to_numpy(zero_copy_only=False).astype(np.float64)


def stats_table(stats_json: str, quarantine: pa.Table) -> pa.Table:
    """Pass 1's output for a batch: row 0 carries the statistics, the other rows the quarantined
    rows (QUARANTINE_SCHEMA columns, prefixed with Q_PREFIX)."""
    nq = quarantine.num_rows
    cols = {STATS_COL: pa.concat_arrays([pa.array([stats_json], pa.string()), pa.nulls(nq, pa.string())])}
    for f in QUARANTINE_SCHEMA:
        col = quarantine.column(f.name).combine_chunks() if nq else pa.array([], f.type)
        cols[Q_PREFIX + f.name] = pa.concat_arrays([pa.nulls(1, f.type), col.cast(f.type)])
    return pa.table(cols)
