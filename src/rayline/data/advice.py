"""What the ingest tells a user whose data does not fit the config: which rule rejected most of a
column, with a few of the values and the rule to change; and a stop before training on a split
that cannot be trained or scored. Pure functions of counts and samples (no Ray)."""

from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import RaylineConfig
from rayline.data.plan import primary_rules
from rayline.errors import InputError

# Date spellings common in public data sets, tried on a column's rejected values to suggest a
# `format:` (the first that reads them all; day/month order cannot be told from days <= 12).
COMMON_FORMATS = ("%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%m/%d/%Y", "%m/%d/%Y %H:%M:%S",
                  "%m/%d/%Y %H:%M", "%d/%m/%Y", "%d/%m/%Y %H:%M:%S", "%d.%m.%Y", "%d.%m.%Y %H:%M:%S", "%Y%m%d",
                  "%d-%m-%Y", "%m-%d-%Y", "%d %b %Y", "%b %d %Y", "%d-%b-%Y", "%Y-%m-%d %H:%M:%S %z")
_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")
MOSTLY = 0.5  # a rule that rejects more than this share of a table's rows is probably the wrong rule
SAMPLES = 3


def declared_type(cfg: RaylineConfig, table: str, column: str) -> str | None:
    rules = primary_rules(cfg) if table == cfg.data.primary else dict(cfg.data.sources[table].columns) \
        if table in cfg.data.sources else {}
    rule = rules.get(column)
    return rule.type if rule else None


def suggest_format(values: list[str]) -> str | None:
    """A strptime format that reads every sample, or None."""
    text = pa.array([v.strip() for v in values if isinstance(v, str) and v.strip()], pa.string())
    if len(text) == 0:
        return None
    for fmt in COMMON_FORMATS:
        if pc.strptime(text, format=fmt, unit="us", error_is_null=True).null_count == 0:
            return fmt
    return None


def suggest_epoch(values: list[str]) -> str | None:
    """An epoch unit for numbers that look like instants since 1970 (years ~1973-2286 in that
    unit), or None."""
    try:
        x = [abs(float(v)) for v in values if isinstance(v, str) and v.strip()]
    except ValueError:
        return None
    for unit, lo in (("epoch_s", 1e8), ("epoch_ms", 1e11), ("epoch_us", 1e14)):
        if x and all(lo <= v < lo * 100 for v in x):
            return unit
    return None


def rule_advice(cfg: RaylineConfig, key: str, samples: list[str]) -> str:
    """One line for a rule that rejected most rows: the values, and what to change."""
    table, _, rest = key.partition(".")
    column, _, rule = rest.rpartition(":")
    shown = ", ".join(repr(v) for v in samples[:SAMPLES])
    where = f"data.sources.{table}.columns.{column}"
    if rule != "type":
        return f"e.g. {shown}: check the {rule} rule of {where}"
    kind = declared_type(cfg, table, column)
    if table == cfg.data.primary and column == cfg.data.label.column and kind == "float":
        return _label_advice(cfg, shown, samples)
    if kind == "timestamp":
        fmt = suggest_epoch(samples) or suggest_format(samples)
        if fmt:
            return f"e.g. {shown}: these read as format {fmt!r}; declare `format: \"{fmt}\"` in {where}"
        return f"e.g. {shown}: not ISO 8601; declare their `format:` (strptime, e.g. \"%Y/%m/%d\") in {where}"
    if kind in ("float", "int") and samples and all(_DECIMAL_COMMA.match(v.strip()) for v in samples):
        return (f"e.g. {shown}: numbers with a decimal comma; declare `decimal: \",\"` in data.sources.{table} "
                f"(rayline predict: --decimal ,)")
    return f"e.g. {shown}: not {kind or 'the declared type'} values; change `type:` in {where} or fix the data"


def mostly_rejected(cfg: RaylineConfig, by_rule: Counter, samples: dict[str, list[str]], rows: dict[str, int]) -> list[str]:
    """Lines naming each rule that rejected more than MOSTLY of its table's rows."""
    lines = []
    for key, n in by_rule.most_common():
        table = key.partition(".")[0]
        total = rows.get(table, 0)
        if total and n > MOSTLY * total:
            lines.append(f"{n:,} of {total:,} rows of {table!r} failed {key.partition('.')[2]} "
                         f"({rule_advice(cfg, key, samples.get(key, []))})")
    return lines


IDENTIFIER_SHARE = 0.5  # a categorical with more distinct values than this share of its rows names rows, not groups
IDENTIFIER_MIN_ROWS = 200


def identifier_like(spec, train_rows: int) -> list[str]:
    """Lines naming each categorical feature whose training values are mostly distinct (an id, a
    timestamp or free text listed as a category): each value is seen about once, so the model
    learns nothing it can use on a new row, and the vocabulary grows with the data."""
    lines = []
    if train_rows < IDENTIFIER_MIN_ROWS:
        return lines
    for c in spec.categorical:
        if len(c.vocabulary) > IDENTIFIER_SHARE * train_rows:
            lines.append(f"categorical feature {c.name!r} has {len(c.vocabulary):,} distinct values in "
                         f"{train_rows:,} training rows: values seen about once cannot be learned; drop it if it "
                         f"is an identifier, or set data.features.categorical min_frequency (e.g. 5) or max_size")
    return lines


def check_splits(cfg: RaylineConfig, rows_read: int, split_rows: Counter, split_classes: dict[str, Counter],
                 by_rule: Counter, samples: dict[str, list[str]]) -> None:
    """Stop (InputError) when a split is too small or the training split has too few classes to
    learn from, naming the split, the counts and the top quarantine reasons."""
    sc = cfg.data.split
    problems = []
    for split in ("train", "valid", "test"):
        n = split_rows.get(split, 0)
        if sc.expects_rows(split) and n < sc.min_rows:
            problems.append(f"split {split!r} has {n:,} rows (data.split.min_rows: {sc.min_rows})")
    if cfg.task != "regression" and not problems:
        classes = {c: n for c, n in split_classes.get("train", Counter()).items() if n}
        if len(classes) < sc.min_classes:
            shown = ", ".join(f"{c}: {n:,}" for c, n in sorted(classes.items())) or "none"
            problems.append(f"split 'train' has {len(classes)} label class(es) ({shown}; data.split.min_classes: "
                            f"{sc.min_classes})")
    if not problems:
        return
    clean = sum(split_rows.values())
    counts = ", ".join(f"{s} {split_rows.get(s, 0):,}" for s in ("train", "valid", "test"))
    reasons = "; ".join(f"{key} {n:,} ({rule_advice(cfg, key, samples.get(key, []))})" for key, n in by_rule.most_common(3))
    raise InputError(f"{'; '.join(problems)}: stopping before training. {rows_read:,} rows read, {clean:,} clean ({counts}), "
                     f"{rows_read - clean:,} quarantined" + (f"; top reasons: {reasons}" if reasons else ""))


def _label_advice(cfg: RaylineConfig, shown: str, samples: list[str]) -> str:
    """A label read as a number that is not one: say which label setting reads it."""
    first = next((v for v in samples if isinstance(v, str) and v.strip()), None)
    if cfg.task == "binary":
        example = f"{{'==': {first!r}}}" if first is not None else "{'==': 'yes'}"
        return (f"e.g. {shown}: a binary label without data.label.positive_if must be 0/1 or true/false; "
                f"for these declare data.label.positive_if: {example} (the positive class)")
    return (f"e.g. {shown}: a regression label must be a number; for named classes use task: multiclass "
            "with data.label.classes")
