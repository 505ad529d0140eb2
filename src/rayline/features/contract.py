"""The row contract: one validator for ingest rows, online requests and batch inference.

Rules are vectorised over Arrow columns. A value that breaks a rule marks its row with the
first rule that failed, the column and the value (`Failures`), so ingest and batch inference
can quarantine the row and the endpoint can answer 4xx naming the field, and all three judge
a value with the same code.

The model's contract (`Contract`) comes from the FeatureSpec: each input column's kind
(number, category, time), whether it is required, its range and allowed values from the config's
validation rules, plus limits every input gets (finite numbers, categories of at most
`MAX_TEXT` characters). JSON records (online) are first turned into typed Arrow columns by
`Contract.check_records`, value by value because JSON values are Python objects, catching
what Arrow would choke on (integers beyond 64 bits, lone UTF-16 surrogates, nested objects);
from there on, a request and a batch row go through exactly the same checks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import EPOCH_FORMATS, ColumnRule
from rayline.features.coerce import ARROW_TYPES, ISO_UTC, SMALL_BATCH, TIME_RANGE_TEXT, TimeParsing, as_array, coerce

MAX_TEXT = 256          # characters in a category value
INTERNAL = "__rl_"      # prefix of the columns rayline's readers add (a row's file, a broken line's note)
MAX_TIME_TEXT = 40      # characters in a time stamp
_FLOAT_MAX_INT = int(np.finfo(np.float64).max)  # the largest integer a number field accepts (the published maximum)
_KIND_TYPE = {"float": "float", "string": "string", "timestamp": "timestamp"}

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

    def add(self, mask: np.ndarray, rule: str, column: str, raw: pa.Array | list | None) -> None:
        if not mask.any():  # the common case: nothing to record
            return
        if not self.details:
            self.bad |= mask
            return
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        if raw is None:
            values = [None] * idx.size
        elif isinstance(raw, list):
            values = [raw[i] for i in idx.tolist()]
        else:
            values = raw.take(pa.array(idx)).to_pylist()
        for i, v in zip(idx.tolist(), values):
            text = None if v is None else shown(v)
            if not self.bad[i]:
                self.bad[i] = True
                self.rule[i], self.column[i], self.value[i] = rule, column, text
            self.all.setdefault(i, []).append(f"{rule}:{column}={text}")

    def first(self, i: int) -> tuple[str, str, str | None]:
        """(rule, column, value) of row i's first failure."""
        return self.rule[i], self.column[i], self.value[i]

    def quarantine(self, raw: pa.Table, table_name: str, source_col: str | None) -> pa.Table:
        if not self.details:
            raise ValueError("Failures(details=False) records no reasons to quarantine with")
        idx = np.flatnonzero(self.bad)
        bad_rows = raw.take(pa.array(idx))
        src = bad_rows.column(source_col).to_pylist() if source_col and source_col in raw.schema.names else [None] * idx.size
        return pa.table({
            "table": pa.array([table_name] * idx.size, pa.string()),
            "rule": pa.array(self.rule[idx].tolist(), pa.string()),
            "column": pa.array(self.column[idx].tolist(), pa.string()),
            "value": pa.array(self.value[idx].tolist(), pa.string()),
            "failures": pa.array(["; ".join(self.all[i]) for i in idx.tolist()], pa.string()),
            "source_file": pa.array(src, pa.string()),
            # the row as read, without rayline's own columns (its file, a reader's note on a broken line)
            "row": pa.array(_json_rows(bad_rows.drop_columns([c for c in raw.schema.names if c == source_col or c.startswith(INTERNAL)])), pa.string()),
        }, schema=QUARANTINE_SCHEMA)


def shown(v: Any, limit: int = 120) -> str:
    """A value as text for a message or a quarantine row: bounded, never recursing, never raising
    (a nested object becomes its type and size; lone surrogates are escaped)."""
    if isinstance(v, dict):
        return f"an object with {len(v)} key(s)"
    if isinstance(v, (list, tuple)):
        return f"an array of {len(v)}"
    if isinstance(v, str):
        text = v[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
        return text + ("..." if len(v) > limit else "")
    try:
        text = str(v)
    except (ValueError, OverflowError):  # int too long to print (Python's digit limit)
        return f"<{type(v).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def described(v: Any) -> str:
    """A JSON value with its JSON type, for 'expected X, got Y' messages."""
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, str):
        return f'string "{shown(v)}"'
    if isinstance(v, (int, float)):
        return f"number {shown(v)}"
    return shown(v)


def _json_rows(table: pa.Table) -> list[str]:
    """Each row as a JSON object (pandas' C encoder: quarantines can be large)."""
    if table.num_rows == 0:
        return []
    try:
        return table.to_pandas(types_mapper=pd.ArrowDtype).to_json(orient="records", lines=True, date_format="iso").splitlines()
    except (ValueError, TypeError, OverflowError):
        return [json.dumps(r, default=str) for r in table.to_pylist()]


# ---------------------------------------------------------------------- rules over Arrow columns
def apply_rules(table: pa.Table, rules: dict[str, ColumnRule], failures: Failures) -> pa.Table:
    """Coerce each ruled column to its type and record every rule violation in `failures`.

    Kernels run only where they can find something (a column without nulls needs no null
    check), and the output table is assembled once. An online request is a one-row table, where
    per-call overhead, not data, is the cost: float columns are checked together as one matrix,
    and text rules on a few rows run over Python values (same verdicts, tested both ways)."""
    n = table.num_rows
    present = set(table.schema.names)
    lane = _FloatLane(table, rules)
    typed_cols: dict[str, pa.Array] = {}
    for name, rule in rules.items():
        if name in lane.index:
            typed_cols[name] = lane.apply(name, rule, failures)
            continue
        if name not in present:
            # A row-level check cannot fix a missing column; sources.check_files reports it
            # per file. Here (joined columns, JSON lines without the key, the fields a request
            # left out) it is all-null: typed without a kernel (no null breaks a type, range or
            # allowed rule), missing where it is required.
            typed = pa.nulls(n, ARROW_TYPES[rule.type]) if rule.type is not None else pa.nulls(n)
            if not rule.nullable:
                failures.add(np.ones(n, dtype=bool), "not_null", name, typed)
            typed_cols[name] = typed
            continue
        raw = as_array(table.column(name))
        typed, type_bad = raw, np.zeros(n, dtype=bool)
        if rule.type is not None:
            typed, type_bad = coerce(raw, rule.type, time_parsing(rule))
            failures.add(type_bad, "type", name, raw)
        if not rule.nullable and typed.null_count:
            # Values that failed the type rule are null now but were not missing.
            failures.add(pc.is_null(typed).to_numpy(zero_copy_only=False) & ~type_bad, "not_null", name, raw)
        if rule.min is not None or rule.max is not None:
            failures.add(_out_of_range(typed, rule), "range", name, raw)
        if rule.allowed is not None or rule.max_length is not None:
            as_str = coerce(typed, "string")[0]
            long, outside = (_text_rules_small if n <= SMALL_BATCH else _text_rules)(as_str, rule)
            if long is not None:
                failures.add(long, "too_long", name, raw)
            if outside is not None:
                failures.add(outside, "allowed", name, raw)
        typed_cols[name] = typed
    cols = {c: typed_cols.pop(c, table.column(c)) for c in table.schema.names}  # input order kept
    return pa.table({**cols, **typed_cols})


def time_parsing(rule: ColumnRule) -> TimeParsing:
    """How a timestamp column's text is read: its declared formats and zone, else ISO 8601 in UTC."""
    if not rule.format and not rule.timezone:
        return ISO_UTC
    return TimeParsing(tuple(rule.format or ()), rule.timezone)


def _text_rules(as_str: pa.Array, rule: ColumnRule) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(too long, not allowed) masks over a string column, with Arrow kernels."""
    long = outside = None
    if rule.max_length is not None:
        long = pc.fill_null(pc.greater(pc.utf8_length(as_str), rule.max_length), False).to_numpy(zero_copy_only=False)
    if rule.allowed is not None:
        ok = pc.is_in(as_str, value_set=pa.array(rule.allowed, pa.string()))
        outside = pc.and_(pc.is_valid(as_str), pc.invert(pc.fill_null(ok, False))).to_numpy(zero_copy_only=False)
    return long, outside


def _text_rules_small(as_str: pa.Array, rule: ColumnRule) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The same masks as `_text_rules`, over Python strings (len counts code points, as utf8_length)."""
    values = as_str.to_pylist()
    long = outside = None
    if rule.max_length is not None:
        long = np.array([v is not None and len(v) > rule.max_length for v in values], dtype=bool)
    if rule.allowed is not None:
        allowed = set(rule.allowed)
        outside = np.array([v is not None and v not in allowed for v in values], dtype=bool)
    return long, outside


class _FloatLane:
    """The float64 columns ruled as plain floats, checked as one (n, k) matrix: the same verdicts
    as `coerce` + the null and range rules per column (infinity: type; NaN or null: missing;
    bounds on finite values), in a handful of numpy calls instead of ~10 kernels a column."""

    def __init__(self, table: pa.Table, rules: dict[str, ColumnRule]) -> None:
        types = dict(zip(table.schema.names, table.schema.types))
        f64 = pa.float64()
        names = [name for name, r in rules.items() if r.type == "float" and r.allowed is None and r.max_length is None
                 and types.get(name) == f64]
        self.index = {name: j for j, name in enumerate(names)}
        if not names:
            return
        self.arrays = [as_array(table.column(name)) for name in names]
        x = np.empty((table.num_rows, len(names)), dtype=np.float64)
        for j, a in enumerate(self.arrays):
            x[:, j] = a.to_numpy(zero_copy_only=False)  # nulls read as NaN
        self.x = x
        self.inf = np.isinf(x)
        self.missing = np.isnan(x)
        lo = np.array([-np.inf if rules[n].min is None else rules[n].min for n in names])
        hi = np.array([np.inf if rules[n].max is None else rules[n].max for n in names])
        with np.errstate(invalid="ignore"):
            self.out = ((x < lo) | (x > hi)) & ~self.inf
        self.any_inf, self.any_missing, self.any_out = self.inf.any(axis=0), self.missing.any(axis=0), self.out.any(axis=0)

    def apply(self, name: str, rule: ColumnRule, failures: Failures) -> pa.Array:
        j, raw = self.index[name], self.arrays[self.index[name]]
        if self.any_inf[j]:
            failures.add(self.inf[:, j], "type", name, raw)
        if not rule.nullable and self.any_missing[j]:
            failures.add(self.missing[:, j], "not_null", name, raw)
        if self.any_out[j]:
            failures.add(self.out[:, j], "range", name, raw)
        if self.any_inf[j] or (self.any_missing[j] and int(self.missing[:, j].sum()) != raw.null_count):
            # NaN is how many writers spell "missing" and infinity is bad input: both null.
            return pa.array(self.x[:, j], pa.float64(), mask=self.missing[:, j] | self.inf[:, j])
        return raw


def _out_of_range(typed: pa.Array, rule: ColumnRule) -> np.ndarray:
    if pa.types.is_timestamp(typed.type):
        vals = pc.cast(typed, pa.int64()).to_numpy(zero_copy_only=False)  # only numeric bounds make sense
        vals = vals.astype(np.float64) / 1e6
    elif pa.types.is_floating(typed.type):
        vals = typed.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)  # nulls read as NaN
    else:
        vals = pc.fill_null(pc.cast(typed, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    bad = np.zeros(len(vals), dtype=bool)
    with np.errstate(invalid="ignore"):
        if rule.min is not None:
            bad |= vals < rule.min
        if rule.max is not None:
            bad |= vals > rule.max
    return bad


# ---------------------------------------------------------------------- the model's contract
class Contract:
    """What a model accepts, derived from its FeatureSpec: used online and in batch alike."""

    def __init__(self, spec) -> None:
        self.kinds: dict[str, str] = spec.raw_kinds()
        self.kinds.update({k: v for k, v in spec.keys.items() if k not in self.kinds})  # lookup keys
        # every field a record may carry: the inputs, and the primary table's other columns (ignored)
        self.accepts: frozenset[str] = frozenset(self.kinds) | frozenset(spec.accepted)
        self.rules: dict[str, ColumnRule] = {}
        for name, kind in self.kinds.items():
            c = spec.constraints.get(name)
            self.rules[name] = ColumnRule(
                type=_KIND_TYPE[kind], nullable=not (c and c.required),
                min=c.min if c and kind != "string" else None, max=c.max if c and kind != "string" else None,
                allowed=c.allowed if c else None, max_length=MAX_TEXT if kind == "string" else None,
                format=c.format if c and kind == "timestamp" else None,
                timezone=c.timezone if c and kind == "timestamp" else None)
        # timestamp fields a number may spell (an epoch format)
        self.epoch: frozenset[str] = frozenset(n for n, r in self.rules.items() if set(r.format or ()) & set(EPOCH_FORMATS))

    def check_table(self, table: pa.Table, failures: Failures | None = None) -> tuple[pa.Table, Failures]:
        """Raw Arrow columns (batch inference) -> (input columns of the declared types, verdicts)."""
        failures = failures or Failures(table.num_rows)
        types = dict(zip(table.schema.names, table.schema.types))
        for name, kind in self.kinds.items():
            if kind == "string" and name in types and pa.types.is_floating(types[name]):
                # A number names a category only when it is a whole number a float holds exactly.
                x = pc.fill_null(pc.cast(table.column(name), pa.float64()), 0.0).to_numpy(zero_copy_only=False)
                with np.errstate(invalid="ignore"):
                    failures.add(~((np.floor(x) == x) & (np.abs(x) < 2.0 ** 53)), "type", name, table.column(name).combine_chunks())
        typed = apply_rules(table, self.rules, failures)
        return typed.select(list(self.kinds)), failures

    def check_records(self, records: list[dict]) -> tuple[pa.Table, Failures]:
        """JSON records (online) -> (typed input columns, verdicts). Never raises on values."""
        n = len(records)
        failures = Failures(n)
        cols = {}
        # Most of a request's declared fields are left out (those a lookup provides, for one):
        # a field no record names is typed as all-null by the rules, not built value by value.
        named = set().union(*records)
        for name, kind in self.kinds.items():
            if name not in named:
                continue
            values = [r.get(name) for r in records]
            cols[name], bad = _json_column(values, kind, name in self.epoch)
            if bad.any():
                failures.add(bad, "type", name, [described(v) for v in values])
        table = pa.table(cols) if cols else pa.table({"": pa.nulls(n)}).drop_columns([""])  # n rows, no field
        return self.check_table(table, failures)

    def message(self, rule: str, column: str, value: str | None) -> str:
        """What a failure means, naming the field and what was expected."""
        kind, r = self.kinds.get(column), self.rules.get(column)
        if rule == "type":
            formats = " or ".join(f'"{f}"' for f in r.format if f not in EPOCH_FORMATS) if r and r.format else ""
            epoch = next((f for f in (r.format or ()) if f in EPOCH_FORMATS), None) if r else None
            unit = {"epoch_s": "seconds", "epoch_ms": "milliseconds", "epoch_us": "microseconds"}.get(epoch or "")
            since = f", or a number of {unit} since 1970-01-01 UTC ({epoch})" if epoch else ""
            expected = {"float": "a finite number (float64 range)", "string": "a string or an integer (a category)",
                        "timestamp": f"an ISO 8601 date-time string{' (or in format ' + formats + ')' if formats else ''}{since} "
                                     f"between {TIME_RANGE_TEXT}, of at most {MAX_TIME_TEXT} characters"
                        }.get(kind, kind)
            return f"{column} must be {expected}, got {value}"
        if rule == "not_null":
            return f"{column} is required"
        if rule == "range":
            return f"{column} = {value} is outside the allowed range [{r.min}, {r.max}]"
        if rule == "allowed":
            return f"{column} = {value} is not one of the allowed values {(r.allowed or [])[:20]}"
        if rule == "too_long":
            return f"{column} is longer than {MAX_TEXT} characters ({value})"
        return f"{column}: {rule} ({value})"


def _json_column(values: list, kind: str, epoch: bool = False) -> tuple[pa.Array, np.ndarray]:
    """JSON values of one field -> an Arrow column (raw spelling kept where the shared rules
    convert it) and the values no rule could even look at."""
    n = len(values)
    bad = np.zeros(n, dtype=bool)
    if kind == "float":
        # Through numpy: pa.array over a Python list costs ~17 us even for one value.
        x = np.zeros(n, dtype=np.float64)
        null = np.ones(n, dtype=bool)
        for i, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                bad[i] = True
                continue
            if isinstance(v, int) and not -_FLOAT_MAX_INT <= v <= _FLOAT_MAX_INT:
                bad[i] = True  # beyond float64's range, though float() would round it down to the edge
                continue
            x[i] = float(v)
            null[i] = False
        return pa.array(x, pa.float64(), mask=null), bad
    if kind == "string":
        # Categories: text as it is; integers and floats spelled as the shared coercion spells
        # them in a batch column (1545 and 1545.0 -> "1545"), so both paths agree.
        text: list = [None] * n
        ints: list = [None] * n
        floats: list = [None] * n
        for i, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, str):
                if _utf8(v):
                    text[i] = v
                else:
                    bad[i] = True
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                bad[i] = True
            elif isinstance(v, int) and -2 ** 63 <= v < 2 ** 63:
                ints[i] = v
            elif isinstance(v, float) and v.is_integer() and abs(v) < 2.0 ** 53:
                floats[i] = v  # 1545.0: the category "1545", as in a batch column
            else:
                bad[i] = True  # 1.5, 1e20, 2**64: not a category name
        arr = pa.array(text, pa.string())
        if any(x is not None for x in ints):
            arr = pc.coalesce(arr, pa.array(ints, pa.int64()).cast(pa.string()))
        if any(x is not None for x in floats):
            arr = pc.coalesce(arr, coerce(pa.array(floats, pa.float64()), "string")[0])
        return arr, bad
    # timestamp: text only, bounded, valid UTF-8 (or, with an epoch format, a finite number, as
    # the text the shared rules read: 1356994800 and "1356994800" are one instant); the rules parse it
    text = [None] * n
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, str) and len(v) <= MAX_TIME_TEXT and _utf8(v):
            text[i] = v
        elif epoch and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
                and abs(v) < 1e30:
            text[i] = repr(float(v)) if isinstance(v, float) else str(v)
        else:
            bad[i] = True
    return pa.array(text, pa.string()), bad


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
        return False
