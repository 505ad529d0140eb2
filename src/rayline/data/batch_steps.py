"""The per-batch work of the ingest: validate, join, split, then gather statistics or transform.

Pure functions over Arrow tables (no Ray here), so they are unit-tested directly and run
unchanged inside Ray Data tasks. Validation, joins and the split are deterministic functions
of a row, so the ingest runs them twice over the raw input instead of staging the joined
rows: pass 1 (:class:`BatchProcessor` without a spec) returns the batch's partial statistics
and its quarantined rows; pass 2 (with the fitted spec) returns the clean rows in the
model-ready layout, tagged with their split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import ColumnRule, RaylineConfig
from rayline.data.counts import add_counts
from rayline.data.join import left_join
from rayline.data.sources import PATH_COLUMN, unreadable_records
from rayline.data.split import SPLITS, TRAIN_CODE, assign
from rayline.data.validate import QUARANTINE_SCHEMA, Failures, apply_rules
from rayline.features.coerce import coerce
from rayline.features.fit import partial_stats
from rayline.features.spec import FeatureSpec, compare

READY_SPLIT_COL = "split"  # the model-ready output is partitioned by it: ready/split=<name>/
STATS_COL = "rl__stats"
QUARANTINE = "quarantine"
SPLIT_NAMES = [*SPLITS, QUARANTINE]  # index = split code
QUARANTINE_CODE = len(SPLITS)
Q_PREFIX = "q_"  # quarantine columns in pass 1's output: q_rule, q_column, ...


def label_rule(cfg: RaylineConfig) -> ColumnRule:
    lab = cfg.data.label
    if cfg.task == "multiclass":
        return ColumnRule(type="string", nullable=False, allowed=lab.classes)
    if cfg.task == "binary" and lab.positive_if:
        (_, value), = lab.positive_if.items()
        return ColumnRule(type="string" if isinstance(value, str) else "float", nullable=False)
    if cfg.task == "binary":
        return ColumnRule(type="float", nullable=False, min=0, max=1)
    if lab.transform == "log1p":
        return ColumnRule(type="float", nullable=False, min=0)
    return ColumnRule(type="float", nullable=False)


def joined_columns(cfg: RaylineConfig) -> set[str]:
    """Columns that come from joins or count features, not from the primary table's files."""
    return {j.output_name(c) for j in cfg.data.joins for c in j.columns} | {c.name for c in cfg.data.counts}


def primary_rules(cfg: RaylineConfig) -> dict[str, ColumnRule]:
    """Declared rules of the primary table, plus the types its features and label imply."""
    d = cfg.data
    rules = dict(d.sources[d.primary].columns)
    from_joins = joined_columns(cfg)
    implied = {f.name: "float" for f in d.features.numeric}
    implied.update({f.name: "string" for f in d.features.categorical})
    implied.update({f.name: "timestamp" for f in d.features.time})
    for name, kind in implied.items():
        if name in from_joins:
            continue
        rule = rules.get(name, ColumnRule())
        if rule.type is None:
            rules[name] = rule.model_copy(update={"type": kind})
    declared_label = rules.get(d.label.column)
    rules[d.label.column] = _merge(label_rule(cfg), declared_label)
    if d.split.method == "time" and d.split.column not in from_joins:
        rules[d.split.column] = _merge(ColumnRule(type="timestamp", nullable=False), rules.get(d.split.column))
    return rules


def _merge(base: ColumnRule, declared: ColumnRule | None) -> ColumnRule:
    if declared is None:
        return base
    update = {k: v for k, v in declared.model_dump().items() if v is not None and k != "nullable"}
    return base.model_copy(update={**update, "nullable": base.nullable and declared.nullable})


def feature_constraints(cfg: RaylineConfig) -> dict[str, dict]:
    """Validation rules of the feature columns, wherever they come from (primary or a join)."""
    d = cfg.data
    rules = primary_rules(cfg)
    for j in d.joins:
        for col, rule in d.sources[j.table].columns.items():
            if col in j.columns:
                # A joined value is looked up, not sent as is; its range still says what is valid.
                rules.setdefault(j.output_name(col), rule.model_copy(update={"nullable": True}))
    out = {}
    for name in d.features.columns():
        r = rules.get(name)
        if r is None:
            continue
        c = {"required": not r.nullable, "min": r.min, "max": r.max, "allowed": r.allowed,
             "format": r.format or None, "timezone": r.timezone}
        out[name] = {k: v for k, v in c.items() if v is not None and v is not False}  # keep min: 0
    return out


def required_primary_columns(cfg: RaylineConfig) -> list[str]:
    """Columns every file of the primary table must have (anything else is a whole-file error)."""
    d = cfg.data
    from_joins = joined_columns(cfg)
    needed = list(primary_rules(cfg)) + [k for j in d.joins for k in j.keys] + d.passthrough + d.split.key \
        + [k for c in d.counts for k in c.by]
    return sorted({c for c in needed if c not in from_joins})


def stats_columns(cfg: RaylineConfig) -> list[str]:
    """What the partial statistics read: the numeric and categorical features and the label."""
    f = cfg.data.features
    return list(dict.fromkeys([x.name for x in f.numeric] + [x.name for x in f.categorical] + [cfg.data.label.column]))


def staged_columns(cfg: RaylineConfig) -> list[str]:
    d = cfg.data
    cols = d.features.columns() + [d.label.column] + [c for c in d.passthrough]
    return list(dict.fromkeys(cols))


@dataclass
class BatchProcessor:
    """Callable for `Dataset.map_batches` (pyarrow in, pyarrow out).

    Without `spec_json` (pass 1) a batch becomes one row of partial statistics plus its
    quarantined rows (:func:`stats_table`); with it (pass 2) its clean rows in the model-ready
    layout plus a `split` column.
    """

    cfg: RaylineConfig
    dims_ref: object | None = None  # ObjectRef of {join index or count name: prepared table}, or the dict itself
    spec_json: str | None = None
    _dims: dict | None = field(default=None, init=False, repr=False)
    _spec: FeatureSpec | None = field(default=None, init=False, repr=False)

    def dims(self) -> dict:
        if self._dims is None:
            ref = self.dims_ref
            if ref is not None and not isinstance(ref, dict):
                import ray

                ref = ray.get(ref)
            self._dims = ref or {}
        return self._dims

    def __call__(self, batch: pa.Table) -> pa.Table:
        typed, split, failures = self.prepare(batch)
        if self.spec_json is None:
            return self.statistics(batch, typed, split, failures)
        if self._spec is None:
            self._spec = FeatureSpec.from_json(self.spec_json)
        keep = ~failures.bad
        ready = self._spec.to_model_table(typed.select(staged_columns(self.cfg)).filter(pa.array(keep)))
        names = pa.DictionaryArray.from_arrays(pa.array(split[keep]), pa.array(SPLIT_NAMES[:-1]))
        return ready.append_column(READY_SPLIT_COL, names.cast(pa.string()))

    def prepare(self, batch: pa.Table) -> tuple[pa.Table, np.ndarray, Failures]:
        """Typed + joined columns, split code per row (QUARANTINE_CODE for bad rows), failures."""
        d = self.cfg.data
        failures = Failures(batch.num_rows, details=self.spec_json is None)
        unreadable_records(batch, failures)
        typed = apply_rules(batch, primary_rules(self.cfg), failures)
        dims = self.dims()
        for i, j in enumerate(d.joins):
            typed, unmatched = left_join(typed, dims[i], j)
            if j.required:
                key = next(iter(j.keys))
                failures.add(unmatched, "join", f"{j.table}({','.join(j.keys)})", batch.column(key).combine_chunks())
        if d.counts:
            typed = add_counts(typed, batch, {c.name: dims[c.name] for c in d.counts}, self.cfg)
        split, undecided = assign(typed, d.split)
        if d.split.method == "time":
            failures.add(undecided & ~failures.bad, "split", d.split.column, batch.column(d.split.column).combine_chunks())
        split[failures.bad] = QUARANTINE_CODE
        return typed, split, failures

    def statistics(self, batch: pa.Table, typed: pa.Table, split: np.ndarray, failures: Failures) -> pa.Table:
        cfg = self.cfg
        train = typed.select(stats_columns(cfg)).filter(pa.array(split == TRAIN_CODE))
        stats = partial_stats(train, cfg, compare_label(train, cfg)).to_dict()
        stats["rows_in"] = batch.num_rows
        counts = np.bincount(split, minlength=len(SPLIT_NAMES))
        stats["split_rows"] = {name: int(counts[i]) for i, name in enumerate(SPLIT_NAMES[:-1])}
        if cfg.task != "regression":
            stats["split_classes"] = split_classes(typed, split, cfg)
        return stats_table(json.dumps(stats), failures.quarantine(batch, cfg.data.primary, PATH_COLUMN))


def split_classes(typed: pa.Table, split: np.ndarray, cfg: RaylineConfig) -> dict[str, dict[str, int]]:
    """Rows per label class per split (clean rows only): a split with one class cannot train or
    be scored, and the ingest says so before any training starts."""
    lab = cfg.data.label
    col = typed.column(lab.column)
    if lab.positive_if:
        (op, value), = lab.positive_if.items()
        names, codes = ["negative", "positive"], np.asarray(compare(col, op, value), dtype=bool).astype(np.int64)
    elif cfg.task == "binary":
        x = np.nan_to_num(coerce(col, "float")[0].to_numpy(zero_copy_only=False))
        names, codes = ["0", "1"], (x > 0.5).astype(np.int64)
    else:
        names = list(lab.classes or [])
        idx = pc.index_in(coerce(col, "string")[0], value_set=pa.array(names, pa.string()))
        codes = pc.fill_null(idx, len(names)).to_numpy(zero_copy_only=False).astype(np.int64)
    # one bincount over (split, class) pairs: no per-row Python work in the ingest's hot loop
    k = len(names) + 1  # the last: a class not declared (only on quarantined rows)
    table = np.bincount(split.astype(np.int64) * k + codes, minlength=len(SPLIT_NAMES) * k).reshape(-1, k)
    return {name: {c: int(n) for c, n in zip(names, table[code]) if n}
            for code, name in enumerate(SPLIT_NAMES[:-1])}


def compare_label(train: pa.Table, cfg: RaylineConfig) -> np.ndarray | None:
    lab = cfg.data.label
    if cfg.task == "multiclass":
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
