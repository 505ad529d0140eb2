"""Deterministic train / valid / test assignment.

A row's split depends only on its own values (a stable 64-bit hash of the key columns, or its
timestamp), never on file order or on how Ray cut the data into blocks, so a rerun, a larger
cluster or a re-sharded input gives every row the same split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rayline.config import SplitConfig
from rayline.features.coerce import coerce

TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)
TRAIN_CODE, VALID_CODE, TEST_CODE = 0, 1, 2
_M = np.uint64(0x9E3779B97F4A7C15)


def stable_hash(table: pa.Table, columns: list[str], seed: int = 0) -> np.ndarray:
    """uint64 per row from the given columns; the same values always give the same hash."""
    h = np.full(table.num_rows, np.uint64(seed) * _M + np.uint64(1), dtype=np.uint64)
    for name in columns:
        col = table.column(name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_timestamp(col.type):
            vals = pc.fill_null(col.cast(pa.float64()) if not pa.types.is_timestamp(col.type) else col.cast(pa.int64()), 0)
            hc = pd.util.hash_array(vals.to_numpy(zero_copy_only=False), categorize=False)
        else:
            enc = pc.dictionary_encode(coerce(col, "string")[0])
            dict_hash = pd.util.hash_array(np.asarray(enc.dictionary.to_pylist(), dtype=object), categorize=False)
            idx = enc.indices.to_numpy(zero_copy_only=False)
            hc = np.where(pc.is_null(enc.indices).to_numpy(zero_copy_only=False), np.uint64(0), dict_hash[np.nan_to_num(idx).astype(np.int64)] if len(dict_hash) else np.uint64(0))
        with np.errstate(over="ignore"):
            h = (h ^ hc.astype(np.uint64)) * _M
            h ^= h >> np.uint64(31)
    return h


def unit_interval(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _utc(text: str) -> pa.Scalar:
    t = pd.Timestamp(text)
    return pa.scalar(t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC"), pa.timestamp("us", tz="UTC"))


def assign(table: pa.Table, cfg: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Return (split code per row: an index into SPLITS, as int8; mask of rows whose split cannot
    be decided). Codes rather than names: comparing object arrays of strings cost more than the
    rest of the split."""
    n = table.num_rows
    out = np.zeros(n, dtype=np.int8)  # TRAIN
    undecided = np.zeros(n, dtype=bool)
    if cfg.method == "time":
        ts, _ = coerce(table.column(cfg.column), "timestamp")
        is_test = pc.greater_equal(ts, _utc(cfg.test_from))
        undecided = pc.is_null(is_test).to_numpy(zero_copy_only=False)
        is_test = pc.fill_null(is_test, False).to_numpy(zero_copy_only=False)
        if cfg.valid_from:
            out[pc.fill_null(pc.greater_equal(ts, _utc(cfg.valid_from)), False).to_numpy(zero_copy_only=False)] = VALID_CODE
        else:
            out[_unit(table, cfg) < cfg.valid_fraction] = VALID_CODE
        out[is_test] = TEST_CODE
    else:
        u = _unit(table, cfg)
        out[u < cfg.test_fraction + cfg.valid_fraction] = VALID_CODE
        out[u < cfg.test_fraction] = TEST_CODE
    return out, undecided


def outside_window(table: pa.Table, cfg: SplitConfig) -> np.ndarray | None:
    """Rows before `train_from` or at/after `until` (a time split's data window); None without one.
    A row whose time is missing is not outside: it is quarantined by the split rule."""
    if cfg.method != "time" or not (cfg.train_from or cfg.until):
        return None
    ts, _ = coerce(table.column(cfg.column), "timestamp")
    out = np.zeros(table.num_rows, dtype=bool)
    if cfg.train_from:
        out |= pc.fill_null(pc.less(ts, _utc(cfg.train_from)), False).to_numpy(zero_copy_only=False)
    if cfg.until:
        out |= pc.fill_null(pc.greater_equal(ts, _utc(cfg.until)), False).to_numpy(zero_copy_only=False)
    return out


def _unit(table: pa.Table, cfg: SplitConfig) -> np.ndarray:
    key = cfg.key or [c for c in table.column_names if not c.startswith("__rl_")]
    return unit_interval(stable_hash(table, key, cfg.seed))


def split_names(codes: np.ndarray) -> np.ndarray:
    """Codes from `assign` -> split names (object array), for people and tests."""
    return np.asarray(SPLITS, dtype=object)[codes]
