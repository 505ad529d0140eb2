"""Turn raw Arrow columns into the declared types, value by value.

Shared by ingestion (CSV columns that arrive as strings, JSON lines with mixed types) and by
serving (JSON records). A value that cannot be converted is reported in a mask instead of
failing the whole column, so the row can be quarantined with the offending value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import EPOCH_FORMATS

ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

# Spellings of "no value" in text files; they become null, not type errors.
NULL_TOKENS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
_NUMBER = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_INTEGER = r"^\s*[+-]?\d+(\.0*)?\s*$"
_TRUE = ["true", "True", "TRUE", "1", "yes"]
_FALSE = ["false", "False", "FALSE", "0", "no"]


# The instants a timestamp may name: the range pandas' datetime64[ns] holds, so every accepted
# value survives a conversion to pandas and the holiday table covers it (features/calendar.py).
# Outside it a value is a type error naming the range, judged alone (never by its batch-mates).
TIME_MIN = np.datetime64("1678-01-01T00:00:00", "us").astype(np.int64).item()
TIME_MAX = np.datetime64("2261-12-31T23:59:59.999999", "us").astype(np.int64).item()
TIME_RANGE_TEXT = "1678-01-01 and 2261-12-31"
# Fractional seconds beyond microseconds (JavaScript sends 3 digits, some clients 9): truncated.
_SUB_MICRO = r"(\.\d{6})\d+"


@dataclass(frozen=True)
class TimeParsing:
    """How text becomes an instant: the declared strptime formats, tried in order before
    ISO 8601 (always accepted), and the zone of values that name none (default UTC)."""

    formats: tuple[str, ...] = ()
    timezone: str | None = None

    @property
    def epoch(self) -> int | None:
        """Microseconds per unit when numbers are declared as epoch time (`epoch_s`, ...)."""
        return next((EPOCH_FORMATS[f] for f in self.formats if f in EPOCH_FORMATS), None)


ISO_UTC = TimeParsing()


# Rows: below this, a loop over Python values beats Arrow's ~10-20 us per kernel call (one-row
# requests pay per call, not per value). The contract and the transform both switch on it.
SMALL_BATCH = 64


def as_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _no_bad(n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool)


def coerce(arr: pa.Array | pa.ChunkedArray, kind: str, time: TimeParsing = ISO_UTC) -> tuple[pa.Array, np.ndarray]:
    """Return (array of the declared kind, mask of values that could not be converted).

    Null stays null. Unconvertible values become null in the output and True in the mask.
    Timestamps outside [TIME_MIN, TIME_MAX] are unconvertible.
    """
    typed, bad = _coerce(arr, kind, time)
    if kind == "timestamp":
        typed, bad = _in_time_range(typed, bad)
    return typed, bad


def _coerce(arr: pa.Array | pa.ChunkedArray, kind: str, time: TimeParsing) -> tuple[pa.Array, np.ndarray]:
    arr = as_array(arr)
    target = ARROW_TYPES[kind]
    n = len(arr)
    t = arr.type
    if t == target:
        return (_finite(arr) if kind == "float" else (arr, _no_bad(n)))
    if pa.types.is_null(t):
        return pa.nulls(n, target), _no_bad(n)
    if pa.types.is_dictionary(t):
        arr, t = arr.dictionary_decode(), t.value_type
    if pa.types.is_large_string(t):
        arr, t = arr.cast(pa.string()), pa.string()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        # bytes are read as the text they spell; bytes that are not UTF-8 are bad values, not a crash
        text, undecodable = _utf8(arr)
        typed, bad = _coerce(text, kind, time)
        return typed, bad | undecodable
    if pa.types.is_decimal(t):
        # databases and Spark write numbers as DECIMAL: a number like any other (a float64 is
        # ~16 digits; a whole decimal naming a category keeps all of its digits)
        if kind == "string" and t.scale <= 0:
            return arr.cast(pa.string()), _no_bad(n)
        return _coerce(arr.cast(pa.float64(), safe=False), kind, time)

    if kind == "string":
        if pa.types.is_floating(t):
            # 1545.0 and 1545 name the same category (only where int64 holds the value: 1e20
            # keeps its float spelling instead of wrapping around).
            whole = pc.and_(pc.equal(pc.floor(arr), arr), pc.less(pc.abs(arr), 2.0 ** 62))
            as_int = pc.cast(pc.if_else(whole, arr, None), pa.int64(), safe=False).cast(pa.string())
            return pc.coalesce(as_int, arr.cast(pa.string())), _no_bad(n)
        return arr.cast(pa.string()), _no_bad(n)

    if pa.types.is_string(t):
        return _from_string(arr, kind, time)

    if kind in ("float", "int") and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        if kind == "int" and pa.types.is_floating(t):
            bad = pc.and_(pc.is_valid(arr), pc.or_(pc.is_nan(arr), pc.not_equal(pc.floor(arr), arr)))
            bad = pc.fill_null(bad, False)
            clean = pc.if_else(bad, pa.scalar(None, t), arr)
            return pc.cast(clean, target, safe=False), bad.to_numpy(zero_copy_only=False)
        out = pc.cast(arr, target, safe=False)
        return _finite(out) if kind == "float" else (out, _no_bad(n))

    if kind == "bool" and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        ok = pc.is_in(arr, value_set=pa.array([0, 1], type=t))
        bad = pc.fill_null(pc.and_(pc.is_valid(arr), pc.invert(ok)), False)
        out = pc.cast(pc.if_else(bad, pa.scalar(None, t), arr), pa.bool_())
        return out, bad.to_numpy(zero_copy_only=False)

    if kind == "timestamp":
        if time.epoch and (pa.types.is_integer(t) or pa.types.is_floating(t)):
            return _from_epoch(arr, time.epoch)
        if pa.types.is_timestamp(t):
            if t.tz is None:
                arr = _assume_zone(arr, time.timezone)
            # Nanoseconds truncate to microseconds (the documented rounding), never an error.
            return arr.cast(target, safe=False), _no_bad(n)
        if pa.types.is_date(t):
            return _assume_zone(arr.cast(pa.timestamp("us")), time.timezone).cast(target), _no_bad(n)

    # Anything else (a list where a number was expected, ...) is bad for every non-null value.
    bad = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    return pa.nulls(n, target), bad


def _utf8(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Binary values as text; those that are not UTF-8 become null and True in the mask."""
    try:
        return arr.cast(pa.string()), _no_bad(len(arr))
    except pa.ArrowInvalid:
        values, bad = [], np.zeros(len(arr), dtype=bool)
        for i, v in enumerate(arr.to_pylist()):
            try:
                values.append(None if v is None else v.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(None)
                bad[i] = True
        return pa.array(values, pa.string()), bad


def _finite(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """NaN is how many writers spell "missing": it becomes null. Infinity is bad input."""
    n = len(arr)
    if arr.null_count == n:
        return arr, _no_bad(n)
    x = arr.to_numpy(zero_copy_only=False)  # nulls read as NaN
    if not np.isinf(x).any() and int(np.isnan(x).sum()) == arr.null_count:
        return arr, _no_bad(n)  # the common case, without Arrow kernels
    nan = pc.fill_null(pc.is_nan(arr), False)
    inf = pc.fill_null(pc.is_inf(arr), False)
    if not pc.any(pc.or_(nan, inf)).as_py():
        return arr, _no_bad(n)
    out = pc.if_else(pc.or_(nan, inf), pa.scalar(None, arr.type), arr)
    return out, inf.to_numpy(zero_copy_only=False)


def _from_string(arr: pa.Array, kind: str, time: TimeParsing) -> tuple[pa.Array, np.ndarray]:
    target = ARROW_TYPES[kind]
    nullish = pc.or_(pc.is_null(arr), pc.fill_null(pc.is_in(arr, value_set=pa.array(NULL_TOKENS)), False))
    if kind in ("float", "int"):
        ok = pc.match_substring_regex(arr, _INTEGER if kind == "int" else _NUMBER)
        ok = pc.fill_null(ok, False)
        bad = pc.and_(pc.invert(ok), pc.invert(nullish))
        clean = pc.if_else(ok, pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string()))
        out = pc.cast(pc.cast(clean, pa.float64()), target, safe=False) if kind == "int" else pc.cast(clean, target)
        return out, bad.to_numpy(zero_copy_only=False)
    if kind == "bool":
        is_t = pc.is_in(arr, value_set=pa.array(_TRUE))
        is_f = pc.is_in(arr, value_set=pa.array(_FALSE))
        ok = pc.or_(is_t, is_f)
        bad = pc.fill_null(pc.and_(pc.invert(ok), pc.invert(nullish)), False)
        out = pc.if_else(ok, is_t, pa.scalar(None, pa.bool_()))
        return out, bad.to_numpy(zero_copy_only=False)
    return _times_from_text(arr, nullish, time)


def _from_epoch(arr: pa.Array, us_per_unit: int) -> tuple[pa.Array, np.ndarray]:
    """Numbers of a unit since 1970-01-01 UTC -> instants (to the microsecond); NaN is missing,
    infinity and values beyond the int64 microsecond range are bad (the range check follows)."""
    x = arr.to_numpy(zero_copy_only=False).astype(np.float64) * us_per_unit  # nulls read as NaN
    valid = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        fits = np.isfinite(x) & (np.abs(x) < 9.2e18)
    us = np.round(np.where(fits, x, 0)).astype(np.int64)
    out = pa.array(us, pa.int64(), mask=~fits).cast(pa.timestamp("us", tz="UTC"))
    return out, valid & ~fits & ~np.isnan(x)


def _assume_zone(arr: pa.Array, zone: str | None) -> pa.Array:
    """Zone-less wall-clock values -> instants in `zone` (UTC by default). A wall-clock time that a
    daylight-saving change skips or repeats takes the earlier instant rather than failing."""
    return pc.assume_timezone(arr, zone or "UTC", ambiguous="earliest", nonexistent="earliest")


def _times_from_text(arr: pa.Array, nullish: pa.Array, time: TimeParsing) -> tuple[pa.Array, np.ndarray]:
    """Text -> UTC instants: each declared format in order, then ISO 8601 (with or without a zone,
    fractional seconds to microseconds; a value without a zone is in `time.timezone`)."""
    target = ARROW_TYPES["timestamp"]
    clean = pc.if_else(nullish, pa.scalar(None, pa.string()), pc.utf8_trim_whitespace(arr))
    parsed: pa.Array | None = None
    if time.epoch:  # "1356994800" as a number of the declared unit
        numeric = pc.fill_null(pc.match_substring_regex(clean, _NUMBER), False)
        parsed = _from_epoch(pc.cast(pc.if_else(numeric, clean, pa.scalar(None, pa.string())), pa.float64()),
                             time.epoch)[0]
        if parsed.null_count == clean.null_count:
            return parsed, _no_bad(len(arr))
    for fmt in time.formats:
        if fmt in EPOCH_FORMATS:
            continue
        out = pc.strptime(clean, format=fmt, unit="us", error_is_null=True)
        out = out.cast(target) if out.type.tz else _assume_zone(out, time.timezone).cast(target)
        parsed = out if parsed is None else pc.coalesce(parsed, out)
        if parsed.null_count == clean.null_count:
            return parsed, _no_bad(len(arr))
    rest = clean if parsed is None else pc.if_else(pc.is_null(parsed), clean, pa.scalar(None, pa.string()))
    iso = _iso(rest, time.timezone)
    out = iso if parsed is None else pc.coalesce(parsed, iso)
    bad = pc.and_(pc.is_valid(clean), pc.is_null(out)).to_numpy(zero_copy_only=False)
    return out, bad


def _iso(text: pa.Array, zone: str | None) -> pa.Array:
    """ISO 8601 text -> UTC instants, null where a value does not parse. Whole-column casts
    first (the common case: one spelling per column), then value by value (mixed spellings)."""
    target = ARROW_TYPES["timestamp"]
    if text.null_count == len(text):
        return pa.nulls(len(text), target)
    try:
        return text.cast(target)  # every value names its zone
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        return _assume_zone(text.cast(pa.timestamp("us")), zone).cast(target)  # none does
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = pc.replace_substring_regex(text, _SUB_MICRO, r"\1")
    return pa.array([_parse_timestamp(v, zone) for v in text.to_pylist()], type=target)


def _parse_timestamp(v: str | None, zone: str | None):
    if v is None:
        return None
    for typ in (pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
        try:
            s = pa.array([v]).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if typ.tz is None:
            try:
                s = _assume_zone(s, zone)
            except (pa.ArrowInvalid, ValueError):
                return None
        return s[0].value  # microseconds since the epoch: no Python datetime (years 1-9999 only)
    return None


def _in_time_range(typed: pa.Array, bad: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Instants outside [TIME_MIN, TIME_MAX] become null and bad."""
    if typed.null_count == len(typed):
        return typed, bad
    us = pc.fill_null(pc.cast(typed, pa.int64()), 0).to_numpy(zero_copy_only=False)
    outside = (us < TIME_MIN) | (us > TIME_MAX)  # a null reads as 0 (1970): inside
    if not outside.any():
        return typed, bad
    return pc.if_else(pa.array(outside), pa.scalar(None, typed.type), typed), bad | outside
