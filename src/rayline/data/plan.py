"""The ingest's plan: what its Ray Data tasks need, compiled once from the config on the driver.

The tasks receive this small typed object, never the config: the primary table's rules (the
declared ones, plus what the features, the label and the split imply), the joins and counts, the
split and the column lists. Deriving the rules per batch, in every task, is what it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayline.config import (ColumnRule, CountFeature, FeaturesConfig, JoinConfig, LabelConfig, RaylineConfig,
                            SplitConfig)


@dataclass(frozen=True)
class IngestPlan:
    task: str
    primary: str                    # the primary table's source name (its quarantine rows say so)
    rules: dict[str, ColumnRule]    # the primary table's rules, label and split column included
    label: LabelConfig
    features: FeaturesConfig
    joins: tuple[JoinConfig, ...]
    counts: tuple[CountFeature, ...]
    split: SplitConfig
    staged: tuple[str, ...]         # what pass 2 transforms: features, label, passthrough
    stats: tuple[str, ...]          # what pass 1's statistics read
    required: tuple[str, ...]       # primary columns every file must have (pass 2 reads only these)
    block_rows: int

    @classmethod
    def compile(cls, cfg: RaylineConfig) -> "IngestPlan":
        d = cfg.data
        required = required_primary_columns(cfg)
        # A split hashed over "all columns" must hash the same columns in the same order in both
        # passes: pass 1 reads every column of the files, pass 2 only the required ones (sorted).
        split = d.split if d.split.key else d.split.model_copy(update={"key": list(required)})
        return cls(task=cfg.task, primary=d.primary, rules=primary_rules(cfg), label=d.label, features=d.features,
                   joins=tuple(d.joins), counts=tuple(d.counts), split=split, staged=tuple(staged_columns(cfg)),
                   stats=tuple(stats_columns(cfg)), required=tuple(required), block_rows=d.block_rows)


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


def column_kinds(cfg: RaylineConfig, source: str) -> dict[str, str]:
    """The columns of `source` with a type: declared, or implied by a feature, the label or the
    time split (a CSV reads them as text, for their rules to type value by value)."""
    rules = primary_rules(cfg) if source == cfg.data.primary else cfg.data.sources[source].columns
    return {c: r.type for c, r in rules.items() if r.type is not None}


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


def used_columns(cfg: RaylineConfig, source: str) -> set[str]:
    """The columns of `source` a run uses (the primary's required ones; a dimension's keys, joined
    columns, unique key and declared columns); the others are only carried to the quarantine."""
    d = cfg.data
    if source == d.primary:
        return set(required_primary_columns(cfg))
    joins = [j for j in d.joins if j.table == source]
    src = d.sources[source]
    return {k for j in joins for k in j.keys.values()} | {c for j in joins for c in j.columns} | \
        set(src.unique or []) | set(src.columns)


def stats_columns(cfg: RaylineConfig) -> list[str]:
    """What the partial statistics read: the numeric and categorical features and the label."""
    f = cfg.data.features
    return list(dict.fromkeys([x.name for x in f.numeric] + [x.name for x in f.categorical] + [cfg.data.label.column]))


def staged_columns(cfg: RaylineConfig) -> list[str]:
    d = cfg.data
    cols = d.features.columns() + [d.label.column] + [c for c in d.passthrough]
    return list(dict.fromkeys(cols))


def lookup_fields(cfg: RaylineConfig, file_columns: list[str] | None = None) -> dict:
    """What the FeatureSpec records so that serving and batch join and count like the ingest: the
    joins and counts, the primary keys they need that are not features (with the kind the
    contract types them as), and the primary table's other columns (declared in the config or
    present in its files), which a client may send and which are then ignored."""
    d = cfg.data
    features = set(d.features.columns())
    rules = primary_rules(cfg)
    keys: dict[str, str] = {}
    for k in dict.fromkeys([*(k for j in d.joins for k in j.keys), *(k for c in d.counts for k in c.by)]):
        if k not in features:
            t = rules.get(k, ColumnRule()).type
            keys[k] = "timestamp" if t == "timestamp" else "float" if t in ("int", "float") else "string"
    declared = [*d.sources[d.primary].columns, *d.passthrough, *d.split.key, d.label.column, *(file_columns or [])]
    if d.split.method == "time":
        declared.append(d.split.column)
    lookups = set(joined_columns(cfg))
    accepted = [c for c in dict.fromkeys(declared) if c not in features and c not in keys and c not in lookups]
    return {"joins": list(d.joins), "counts": list(d.counts), "keys": keys, "accepted": accepted}
