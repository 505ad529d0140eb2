"""The per-batch work of the ingest's single pass: validate, join, split, gather statistics.

Pure functions over Arrow tables (no Ray here), so they are unit-tested directly and run
unchanged inside Ray Data tasks. One call turns a raw batch of the primary table into one
staged table holding both the clean rows (typed, tagged with their split) and the quarantined
rows (tagged `quarantine`), plus the batch's partial statistics in a side column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from rayline.config import ColumnRule, RaylineConfig
from rayline.data.join import left_join
from rayline.data.sources import PATH_COLUMN
from rayline.data.split import TRAIN, assign
from rayline.data.validate import QUARANTINE_SCHEMA, Failures, apply_rules
from rayline.features.fit import partial_stats
from rayline.features.spec import compare

SPLIT_COL = "rl__split"  # no leading "_": Arrow and Ray skip such directories
STATS_COL = "rl__stats"
QUARANTINE = "quarantine"
SPLIT_NAMES = ["train", "valid", "test", QUARANTINE]
Q_PREFIX = "q_"  # quarantine columns in the staged table: q_rule, q_column, ...


def label_rule(cfg: RaylineConfig) -> ColumnRule:
    lab = cfg.data.label
    if cfg.task == "multiclass":
        return ColumnRule(type="string", nullable=False, allowed=lab.classes)
    if cfg.task == "binary" and lab.positive_if:
        (_, value), = lab.positive_if.items()
        return ColumnRule(type="string" if isinstance(value, str) else "float", nullable=False)
    if cfg.task == "binary":
        return ColumnRule(type="float", nullable=False, min=0, max=1)
    return ColumnRule(type="float", nullable=False)


def joined_columns(cfg: RaylineConfig) -> set[str]:
    return {j.output_name(c) for j in cfg.data.joins for c in j.columns}


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
        c = {"required": not r.nullable, "min": r.min, "max": r.max, "allowed": r.allowed}
        out[name] = {k: v for k, v in c.items() if v is not None and v is not False}  # keep min: 0
    return out


def required_primary_columns(cfg: RaylineConfig) -> list[str]:
    """Columns every file of the primary table must have (anything else is a whole-file error)."""
    d = cfg.data
    from_joins = joined_columns(cfg)
    needed = list(primary_rules(cfg)) + [k for j in d.joins for k in j.keys] + d.passthrough + d.split.key
    return sorted({c for c in needed if c not in from_joins})


def staged_columns(cfg: RaylineConfig) -> list[str]:
    d = cfg.data
    cols = d.features.columns() + [d.label.column] + [c for c in d.passthrough]
    return list(dict.fromkeys(cols))


@dataclass
class BatchProcessor:
    """Callable for `Dataset.map_batches` (pyarrow in, pyarrow out)."""

    cfg: RaylineConfig
    dims_ref: object | None = None  # ObjectRef of {join index: prepared dimension}, or the dict itself
    _dims: dict | None = field(default=None, init=False, repr=False)

    def dims(self) -> dict[int, pa.Table]:
        if self._dims is None:
            ref = self.dims_ref
            if ref is not None and not isinstance(ref, dict):
                import ray

                ref = ray.get(ref)
            self._dims = ref or {}
        return self._dims

    def __call__(self, batch: pa.Table) -> pa.Table:
        cfg, d = self.cfg, self.cfg.data
        n = batch.num_rows
        failures = Failures(n)
        typed = apply_rules(batch, primary_rules(cfg), failures)
        dims = self.dims()
        for i, j in enumerate(d.joins):
            typed, unmatched = left_join(typed, dims[i], j)
            if j.required:
                key = next(iter(j.keys))
                failures.add(unmatched, "join", f"{j.table}({','.join(j.keys)})", batch.column(key).combine_chunks())
        split, undecided = assign(typed, d.split)
        if d.split.method == "time":
            failures.add(undecided & ~failures.bad, "split", d.split.column, batch.column(d.split.column).combine_chunks())

        keep = ~failures.bad
        clean = typed.filter(pa.array(keep)).select(staged_columns(cfg))
        clean_split = split[keep]
        is_train = clean_split == TRAIN
        train = clean.filter(pa.array(is_train))
        label = compare_label(train, cfg)
        stats = partial_stats(train, cfg, label).to_dict()
        stats["rows_in"] = n
        stats["split_rows"] = {s: int((clean_split == s).sum()) for s in ("train", "valid", "test")}
        stats["files"] = _file_counts(batch)

        quarantine = failures.quarantine(batch, d.primary, PATH_COLUMN)
        return stage_table(clean, clean_split, quarantine, json.dumps(stats))


def compare_label(train: pa.Table, cfg: RaylineConfig) -> np.ndarray | None:
    lab = cfg.data.label
    if cfg.task == "multiclass":
        return None
    if lab.positive_if:
        (op, value), = lab.positive_if.items()
        return compare(train.column(lab.column), op, value).astype(np.float64)
    return train.column(lab.column).to_numpy(zero_copy_only=False).astype(np.float64)


def _file_counts(batch: pa.Table) -> dict[str, int]:
    if PATH_COLUMN not in batch.column_names:
        return {}
    vc = batch.column(PATH_COLUMN).value_counts()
    return {v: c for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def stage_table(clean: pa.Table, split: np.ndarray, quarantine: pa.Table, stats_json: str) -> pa.Table:
    """One table with clean and quarantined rows side by side (each side's columns null on the other)."""
    nc, nq = clean.num_rows, quarantine.num_rows
    cols: dict[str, pa.Array] = {}
    for name in clean.column_names:
        col = clean.column(name)
        cols[name] = pa.concat_arrays([*col.chunks, pa.nulls(nq, col.type)]) if col.num_chunks else pa.nulls(nc + nq, col.type)
    for f in QUARANTINE_SCHEMA:
        cols[Q_PREFIX + f.name] = pa.concat_arrays([pa.nulls(nc, f.type), quarantine.column(f.name).combine_chunks()])
    # Split names as a dictionary array built from integer codes: no per-row Python objects.
    codes = np.full(nc + nq, len(SPLIT_NAMES) - 1, dtype=np.int8)
    for i, name in enumerate(SPLIT_NAMES[:-1]):
        codes[:nc][split == name] = i
    cols[SPLIT_COL] = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(SPLIT_NAMES)).cast(pa.string())
    stats = pa.concat_arrays([pa.array([stats_json], pa.string()), pa.nulls(nc + nq - 1, pa.string())]) if nc + nq else pa.nulls(0, pa.string())
    cols[STATS_COL] = stats
    return pa.table(cols)
