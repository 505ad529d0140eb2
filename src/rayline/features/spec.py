"""The FeatureSpec: fitted preprocessing, the contract between training and serving.

It is plain JSON (no pickle), versioned, and readable by a person. The same
:meth:`FeatureSpec.transform` turns an Arrow table (ingest, batch inference), a pandas frame,
or a list of JSON records (serving) into model inputs, so all three paths agree exactly.

Model inputs are two matrices:
- ``num`` float32 (n, len(numeric_inputs)): standardized numerics, missing indicators and
  cyclical time parts;
- ``cat`` int64 (n, len(categorical)): vocabulary indices, 0 = missing, 1 = out of vocabulary.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from rayline.config import CountFeature, JoinConfig
from rayline.features.coerce import SMALL_BATCH, coerce

SPEC_VERSION = 1
MISSING_INDEX = 0
OOV_INDEX = 1
TIME_PERIODS = {"hour": 24, "dow": 7, "month": 12, "day": 31, "minute": 60}
LINEAR_PARTS = {"us_holiday"}  # one column each, scaled to [0, 1]
# The model-ready layout's columns (the ingest writes them, training, evaluation and batch read them).
X_NUM, X_CAT, Y = "x_num", "x_cat", "y"
MODEL_COLUMNS = [X_NUM, X_CAT, Y]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericSpec(_Spec):
    name: str
    mean: float
    std: float
    impute: float
    min: float | None
    max: float | None
    null_fraction: float
    missing_indicator: bool
    clip: tuple[float, float] | None = None
    # The training distribution, for drift (PSI): interior bin edges (training deciles, ties
    # merged) and the share of present training values per bin (len(bins) + 1). Empty in specs
    # fitted before they existed: PSI is then not computed for the feature.
    bins: list[float] = Field(default_factory=list)
    bin_shares: list[float] = Field(default_factory=list)


class CategoricalSpec(_Spec):
    name: str
    vocabulary: list[str]
    frequencies: list[float] = Field(description="share of training rows per vocabulary entry")
    oov_fraction: float = 0.0
    null_fraction: float = 0.0

    @property
    def cardinality(self) -> int:
        return len(self.vocabulary) + 2  # + missing + out-of-vocabulary

    @functools.cached_property
    def codes(self) -> dict[str, int]:
        """value -> model code (past MISSING_INDEX and OOV_INDEX), for a few rows at a time."""
        return {v: i + OOV_INDEX + 1 for i, v in reversed(list(enumerate(self.vocabulary)))}


class TimeSpec(_Spec):
    name: str
    parts: list[str]
    timezone: str | None = None


class Constraint(_Spec):
    """What a valid raw value looks like, from the config's validation rules (checked by serving)."""

    required: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    format: list[str] | None = Field(None, description="timestamp: strptime formats tried before ISO 8601")
    timezone: str | None = Field(None, description="timestamp: the zone of values that name none")


class LabelSpec(_Spec):
    column: str
    task: Literal["binary", "regression", "multiclass"]
    positive_if: dict[str, float | str] | None = None
    classes: list[str] | None = None
    train_mean: float | None = Field(None, description="base rate (binary) or mean (regression)")
    train_std: float | None = None
    standardized: bool = Field(False, description="regression: the network predicts (y - train_mean) / train_std")
    transform: Literal["none", "log1p"] = "none"
    learned_mean: float | None = Field(None, description="log1p: mean of log1p(y) on the training split")
    learned_std: float | None = None

    def target_scale(self) -> tuple[float, float] | None:
        """(mean, std) of the units a regression model works in (of log1p(y) when transformed); None
        where it predicts raw values (classification, and regression models trained before
        standardization). train_mean stays the target's own mean: the trivial baseline's."""
        if self.task != "regression" or not self.standardized or self.train_mean is None:
            return None
        if self.transform == "log1p":
            return (self.learned_mean or 0.0), (self.learned_std or 1.0)
        return self.train_mean, (self.train_std or 1.0)

    @property
    def num_outputs(self) -> int:
        return len(self.classes or []) if self.task == "multiclass" else 1


@dataclass
class ModelInputs:
    num: np.ndarray  # float32 (n, n_num)
    cat: np.ndarray  # int64 (n, n_cat)

    def __len__(self) -> int:
        return self.num.shape[0]


class FeatureSpec(_Spec):
    version: int = SPEC_VERSION
    numeric: list[NumericSpec]
    categorical: list[CategoricalSpec]
    time: list[TimeSpec]
    label: LabelSpec
    passthrough: list[str] = Field(default_factory=list)
    constraints: dict[str, Constraint] = Field(default_factory=dict)
    train_rows: int = 0
    # The lookups the features came through in the ingest, run again for every record served
    # or scored (features/lookups.py); the primary-table keys they need that are not features,
    # with their kinds; and the primary table's other columns, accepted from a client and unused.
    joins: list[JoinConfig] = Field(default_factory=list)
    counts: list[CountFeature] = Field(default_factory=list)
    keys: dict[str, Literal["float", "string", "timestamp"]] = Field(default_factory=dict)
    accepted: list[str] = Field(default_factory=list)

    # ------------------------------------------------------------------ layout
    @property
    def numeric_inputs(self) -> list[str]:
        """Names of the columns of the ``num`` matrix, in order."""
        names: list[str] = []
        for f in self.numeric:
            names.append(f.name)
            if f.missing_indicator:
                names.append(f"{f.name}__missing")
        for t in self.time:
            for p in t.parts:
                names += [f"{t.name}__{p}"] if p in LINEAR_PARTS else [f"{t.name}__{p}_sin", f"{t.name}__{p}_cos"]
        return names

    @property
    def input_columns(self) -> list[str]:
        """Raw columns a caller provides to get a prediction."""
        return [f.name for f in self.numeric] + [f.name for f in self.categorical] + [t.name for t in self.time]

    @property
    def lookup_columns(self) -> list[str]:
        """The feature columns a lookup provides (a client may still send them: its value wins)."""
        cols = [j.output_name(c) for j in self.joins for c in j.columns if c not in j.keys.values()]
        return cols + [c.name for c in self.counts]

    def raw_kinds(self) -> dict[str, str]:
        kinds = {f.name: "float" for f in self.numeric}
        kinds.update({f.name: "string" for f in self.categorical})
        kinds.update({t.name: "timestamp" for t in self.time})
        return kinds

    # ------------------------------------------------------------------ transforms
    @functools.cached_property
    def _numeric_plan(self) -> "_NumericPlan":
        return _NumericPlan.of(self.numeric)

    def transform(self, table: pa.Table, values: dict[str, list] | None = None) -> ModelInputs:
        """Raw columns -> model inputs. Columns that are absent count as all-null. `values`: a few
        rows' columns given as Python values instead (a request's looked-up features,
        `Lookups.values`), read as this reads those columns' values; they win over `table`'s."""
        n = table.num_rows
        cols = set(table.schema.names)
        # Filled one contiguous feature row at a time and transposed once: writing the columns
        # of an (n, k) matrix directly is strided.
        num = np.empty((len(self.numeric_inputs), n), dtype=np.float32)
        plan = self._numeric_plan
        if self.numeric:
            z = numeric_matrix(table, [f.name for f in self.numeric], values)  # a new matrix: worked in place
            # All numeric features at once (one-row requests pay per call, not per value), in
            # place: a batch of the ingest is tens of MB per temporary.
            missing = ~np.isfinite(z)
            with np.errstate(invalid="ignore", over="ignore"):
                np.clip(z, plan.clip_lo, plan.clip_hi, out=z)
                z -= plan.mean
                z /= plan.std
            # Values beyond what training saw count as its edge (a no-op on training rows): any
            # finite input, 1.7e308 included, gives a bounded input and a finite prediction.
            np.clip(z, plan.z_lo, plan.z_hi, out=z)
            np.copyto(z, np.broadcast_to(plan.z_impute, z.shape), where=missing)
            num[plan.z_rows] = z
            num[plan.flag_rows] = missing[plan.flagged]
        j = plan.next_row
        for t in self.time:
            ts = coerce(table.column(t.name), "timestamp")[0] if t.name in cols else pa.nulls(n, pa.timestamp("us", tz="UTC"))
            # Wall-clock time in the configured zone, converted once for all parts.
            local = pc.local_timestamp(ts.cast(pa.timestamp("us", tz=t.timezone))) if t.timezone else ts
            for p in t.parts:
                if p in LINEAR_PARTS:
                    num[j] = _linear_part(local, p)
                    j += 1
                    continue
                # Parts are small integers: look sin/cos up instead of computing them per row.
                sin, cos = _circle(p)
                k = _time_part(local, p)
                num[j] = sin[k]
                num[j + 1] = cos[k]
                j += 2
        cat = np.empty((len(self.categorical), n), dtype=np.int64)
        for k, c in enumerate(self.categorical):
            given = values.get(c.name) if values else None
            if given is not None:
                cat[k] = [MISSING_INDEX if v is None else c.codes.get(v, OOV_INDEX) for v in given]
                continue
            col = table.column(c.name) if c.name in cols else pa.nulls(n, pa.string())
            if n <= SMALL_BATCH and pa.types.is_string(col.type):  # dict lookups beat ~5 kernel calls
                cat[k] = [MISSING_INDEX if v is None else c.codes.get(v, OOV_INDEX) for v in col.to_pylist()]
            else:
                cat[k] = _category_index(col, c.vocabulary)
        return ModelInputs(num=np.ascontiguousarray(num.T), cat=np.ascontiguousarray(cat.T))

    def example_record(self) -> dict[str, Any]:
        """A typical request: each feature at its training mean or most frequent value (within its
        constraints), for smoke tests and documentation."""
        rec: dict[str, Any] = {f.name: round(f.mean, 3) for f in self.numeric}
        rec.update({c.name: c.vocabulary[0] for c in self.categorical if c.vocabulary})
        rec.update({t.name: "2013-06-01T12:00:00Z" for t in self.time})
        for name, c in self.constraints.items():
            if name in rec and c.allowed and str(rec[name]) not in c.allowed:
                rec[name] = c.allowed[0]
            if name in rec and isinstance(rec[name], float) and c.min is not None:
                rec[name] = max(rec[name], c.min)
        return rec

    def label_values(self, table: pa.Table) -> np.ndarray:
        """The training target: float32 0/1 (binary), float32 (regression), int64 index (multiclass)."""
        lab = self.label
        col = table.column(lab.column)
        if lab.task == "multiclass":
            idx = pc.index_in(coerce(col, "string")[0], value_set=pa.array(lab.classes or []))
            return idx.to_numpy(zero_copy_only=False).astype(np.int64)
        if lab.task == "binary" and lab.positive_if:
            (op, threshold), = lab.positive_if.items()
            return compare(col, op, threshold).astype(np.float32)
        return _float_column(table, lab.column, table.num_rows).astype(np.float32)

    def to_model_table(self, table: pa.Table, with_label: bool = True) -> pa.Table:
        """The model-ready layout written by ingest: x_num, x_cat, y, then passthrough columns."""
        inputs = as_model_table(self.transform(table))  # once: it is most of the ingest's second pass
        arrays = {c: inputs.column(c) for c in (X_NUM, X_CAT)}
        if with_label:
            arrays[Y] = pa.array(self.label_values(table))
        for c in self.passthrough:
            if c in table.schema.names:
                arrays[c] = table.column(c)
        return pa.table(arrays)

    # ------------------------------------------------------------------ (de)serialization
    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> "FeatureSpec":
        data = json.loads(text)
        if data.get("version") != SPEC_VERSION:
            raise ValueError(f"FeatureSpec version {data.get('version')} is not supported (expected {SPEC_VERSION})")
        return cls.model_validate(data)


# ---------------------------------------------------------------------- helpers
@dataclass(eq=False)  # identity equality: a spec's == (pydantic compares __dict__, where this is cached) stays
class _NumericPlan:     # about its fields, never an elementwise array comparison
    """Per-feature constants of the numeric transform as column vectors, and where each
    feature's standardized value and missing flag go in `num` (computed once per spec)."""

    clip_lo: np.ndarray
    clip_hi: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    z_lo: np.ndarray
    z_hi: np.ndarray
    z_impute: np.ndarray
    z_rows: list[int]
    flag_rows: list[int]
    flagged: list[int]
    next_row: int

    @classmethod
    def of(cls, numeric: list[NumericSpec]) -> "_NumericPlan":
        def col(values) -> np.ndarray:
            return np.array(values, dtype=np.float64).reshape(-1, 1)
        std = [f.std or 1.0 for f in numeric]
        bounded = [f.min is not None and f.max is not None for f in numeric]
        z_rows, flag_rows, flagged, j = [], [], [], 0
        for k, f in enumerate(numeric):
            z_rows.append(j)
            j += 1
            if f.missing_indicator:
                flag_rows.append(j)
                flagged.append(k)
                j += 1
        return cls(
            clip_lo=col([f.clip[0] if f.clip else -np.inf for f in numeric]),
            clip_hi=col([f.clip[1] if f.clip else np.inf for f in numeric]),
            mean=col([f.mean for f in numeric]), std=col(std),
            z_lo=col([(f.min - f.mean) / s if b else -np.inf for f, s, b in zip(numeric, std, bounded)]),
            z_hi=col([(f.max - f.mean) / s if b else np.inf for f, s, b in zip(numeric, std, bounded)]),
            z_impute=col([(f.impute - f.mean) / s for f, s in zip(numeric, std)]),
            z_rows=z_rows, flag_rows=flag_rows, flagged=flagged, next_row=j)


SMALL_ROWS = 8  # up to this many rows, numeric columns are read as Python values


def numeric_matrix(table: pa.Table, names: list[str], values: dict[str, list] | None = None) -> np.ndarray:
    """float64 (len(names), n): nulls and absent columns read as NaN; infinities may remain (the
    callers treat every non-finite value as missing). `values`: columns given as a few rows'
    Python ints and floats (winning over `table`'s), read as a few rows' Arrow values are."""
    n = table.num_rows
    x = np.empty((len(names), n), dtype=np.float64)
    types = dict(zip(table.schema.names, table.schema.types))
    for k, name in enumerate(names):
        given = values.get(name) if values else None
        if given is not None:
            x[k] = [math.nan if v is None or v in (math.inf, -math.inf) else v for v in given]
            continue
        t = types.get(name)
        if t is None:
            x[k] = np.nan
        elif n <= SMALL_ROWS and (pa.types.is_integer(t) or pa.types.is_floating(t)):
            # a request's few rows: Python values cost ~2 µs a column, Arrow's conversions ~10
            x[k] = [math.nan if v is None or v in (math.inf, -math.inf) else v for v in table.column(name).to_pylist()]
        elif t == pa.float64():
            x[k] = table.column(name).to_numpy()
        else:
            x[k] = _float_column(table, name, n)
    return x


def as_model_table(inputs: ModelInputs) -> pa.Table:
    """Model inputs as the model-ready list columns (x_num float32, x_cat int32 on disk)."""
    n = len(inputs)
    return pa.table({
        X_NUM: pa.FixedSizeListArray.from_arrays(pa.array(inputs.num.reshape(-1)), max(inputs.num.shape[1], 1))
        if inputs.num.shape[1] else pa.nulls(n, pa.list_(pa.float32(), 1)),
        # int32 on disk (vocabularies are far smaller), int64 again when read for the model.
        X_CAT: pa.FixedSizeListArray.from_arrays(pa.array(inputs.cat.reshape(-1).astype(np.int32)), max(inputs.cat.shape[1], 1))
        if inputs.cat.shape[1] else pa.nulls(n, pa.list_(pa.int32(), 1)),
    })


def model_inputs_from_table(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Read x_num/x_cat of a model-ready table back into (n, d) matrices without copying."""
    def mat(name: str, dtype) -> np.ndarray:
        col = table.column(name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        width = col.type.list_size
        if col.null_count == len(col):  # no features of this kind
            return np.zeros((len(col), 0), dtype)
        return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(dtype, copy=False)
    return mat(X_NUM, np.float32), mat(X_CAT, np.int64)


def compare(col: pa.ChunkedArray | pa.Array, op: str, value: float | str) -> np.ndarray:
    fn = {">": pc.greater, ">=": pc.greater_equal, "<": pc.less, "<=": pc.less_equal,
          "==": pc.equal, "!=": pc.not_equal}[op]
    if isinstance(value, str):
        col = coerce(col, "string")[0]
    else:
        col = coerce(col, "float")[0]
    return pc.fill_null(fn(col, value), False).to_numpy(zero_copy_only=False)


def _float_column(table: pa.Table, name: str, n: int) -> np.ndarray:
    """float64 values with NaN for null, NaN and infinite alike (all count as missing)."""
    arr = table.column(name)
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type):
        # Arrow writes NaN for nulls of a numeric column: one conversion, no extra kernels.
        x = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        return np.where(np.isinf(x), np.nan, x) if pa.types.is_floating(arr.type) else x
    arr = coerce(arr, "float")[0]
    return pc.fill_null(arr, float("nan")).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _category_index(col: pa.Array | pa.ChunkedArray, vocabulary: list[str]) -> np.ndarray:
    """Vocabulary index per value (offset past MISSING_INDEX and OOV_INDEX), computed on the
    column's distinct values: only those are turned into strings, not every row."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    vocab = pa.array(vocabulary, type=pa.string())
    if pa.types.is_string(col.type):
        idx = pc.index_in(col, value_set=vocab)
        return _with_fallbacks(idx, pc.is_null(col))
    enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
    strings = coerce(enc.dictionary, "string")[0]
    per_value = _with_fallbacks(pc.index_in(strings, value_set=vocab), pc.is_null(strings))
    codes = enc.indices.to_numpy(zero_copy_only=False)
    valid = pc.is_valid(enc.indices).to_numpy(zero_copy_only=False)
    out = np.full(len(col), MISSING_INDEX, dtype=np.int64)
    out[valid] = per_value[codes[valid].astype(np.int64)]
    return out


def _with_fallbacks(idx: pa.Array, is_null: pa.Array) -> np.ndarray:
    idx = pc.add(idx, OOV_INDEX + 1)
    fallback = pc.if_else(is_null, MISSING_INDEX, OOV_INDEX)
    return pc.coalesce(idx, fallback).to_numpy(zero_copy_only=False).astype(np.int64)


def _time_part(ts: pa.Array, part: str) -> np.ndarray:
    """Integer value of `part` per row (hour 0-23, dow 0-6, month 1-12, ...); -1 where null."""
    fn = {"hour": pc.hour, "dow": pc.day_of_week, "month": pc.month, "day": pc.day, "minute": pc.minute}[part]
    return pc.fill_null(fn(ts), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _linear_part(ts: pa.Array, part: str) -> np.ndarray:
    """us_holiday: days to the nearest US federal holiday / 30 (1.0: none within 30 days or null)."""
    from rayline.features.calendar import HORIZON_DAYS, days_to_holiday

    # Whole days by integer division of the microseconds: a cast to seconds would refuse
    # fractional seconds (a safe cast that loses data).
    us = pc.cast(ts, pa.int64())
    valid = pc.is_valid(us).to_numpy(zero_copy_only=False)
    epoch_days = np.floor_divide(pc.fill_null(us, 0).to_numpy(zero_copy_only=False), 86_400_000_000)
    return days_to_holiday(epoch_days, valid) / HORIZON_DAYS


@functools.lru_cache(maxsize=None)
def _circle(part: str) -> tuple[np.ndarray, np.ndarray]:
    """sin/cos of 2*pi*k/period for every value k a part takes; index -1 (null) gives (0, 0)."""
    period = TIME_PERIODS[part]
    angle = 2.0 * math.pi * np.arange(period + 1) / period
    return np.append(np.sin(angle), 0.0), np.append(np.cos(angle), 0.0)
