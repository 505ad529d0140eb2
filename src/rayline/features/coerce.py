"""Turn raw Arrow columns into the declared types, value by value.

Shared by ingestion (CSV columns that arrive as strings, JSON lines with mixed types) and by
serving (JSON records). A value that cannot be converted is reported in a mask instead of
failing the whole column, so the row can be quarantined with the offending value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


# Rows: below this, a loop over Python values beats Arrow's ~10-20 us per kernel call (one-row
# requests pay per call, not per value). The contract and the transform both switch on it.
SMALL_BATCH = 64


def as_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _no_bad(n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool)


def coerce(arr: pa.Array | pa.ChunkedArray, kind: str) -> tuple[pa.Array, np.ndarray]:
    """Return (array of the declared kind, mask of values that could not be converted).

    Null stays null. Unconvertible values become null in the output and True in the mask.
    """
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

    if kind == "string":
        if pa.types.is_floating(t):
            # 1545.0 and 1545 name the same category (only where int64 holds the value: 1e20
            # keeps its float spelling instead of wrapping around).
            whole = pc.and_(pc.equal(pc.floor(arr), arr), pc.less(pc.abs(arr), 2.0 ** 62))
            as_int = pc.cast(pc.if_else(whole, arr, None), pa.int64(), safe=False).cast(pa.string())
            return pc.coalesce(as_int, arr.cast(pa.string())), _no_bad(n)
        return arr.cast(pa.string()), _no_bad(n)

    if pa.types.is_string(t):
        return _from_string(arr, kind)

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
        if pa.types.is_timestamp(t):
            if t.tz is None:
                arr = pc.assume_timezone(arr, "UTC")
            return arr.cast(target), _no_bad(n)
        if pa.types.is_date(t):
            return pc.assume_timezone(arr.cast(pa.timestamp("us")), "UTC").cast(target), _no_bad(n)

    # Anything else (a list where a number was expected, ...) is bad for every non-null value.
    bad = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    return pa.nulls(n, target), bad


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


def _from_string(arr: pa.Array, kind: str) -> tuple[pa.Array, np.ndarray]:
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
    # timestamp: ISO 8601, with or without a zone (no zone means UTC).
    clean = pc.if_else(nullish, pa.scalar(None, pa.string()), arr)
    try:
        return clean.cast(target), nullish.to_numpy(zero_copy_only=False) & False
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values, bad = [], np.zeros(len(arr), dtype=bool)
    for i, v in enumerate(clean.to_pylist()):
        values.append(_parse_timestamp(v))
        bad[i] = v is not None and values[-1] is None
    return pa.array(values, type=target), bad


def _parse_timestamp(v: str | None):
    if v is None:
        return None
    for typ in (pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
        try:
            s = pa.array([v.strip()]).cast(typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if typ.tz is None:
            s = pc.assume_timezone(s, "UTC")
        return s[0].as_py()
    return None
