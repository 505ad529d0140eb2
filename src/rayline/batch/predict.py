"""Batch inference on Ray Data: raw records in, predictions (with the input's key columns) out.

The driver compiles a `ScoringPlan` once (the spec and model config as objects, the model's
bytes); the actors and tasks receive it. Two halves: `Prepare` validates each batch with the constraints the endpoint enforces and
transforms it with the same FeatureSpec code (so batch and online predictions agree exactly);
`Score` runs the model, loaded once per actor (GPU actors per `batch.gpus_per_actor`, sized to
the GPUs free). On CPU one actor does both; with GPUs they are separate pipelined stages (CPU
tasks prepare, the GPU actors score large batches), per `batch.split_stages`. Invalid rows go to a
quarantine with the reason; rows out + rows quarantined = rows in, checked at the end.
The actor that scores a batch writes it (no hand-off of rows to write tasks) into a staging
directory, published whole once every row is accounted for (`output.py`: layout, staging, what
may never be overwritten).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from rayline.config import OUTPUT_COLUMNS, ModelConfig, RaylineConfig, SourceConfig, output_clashes
from rayline.batch.output import PREDICTIONS, QUARANTINE, StagedParts, check_output, keep_reported, location
from rayline.data import sources as src_mod
from rayline.errors import InputError, ResourceError, failure_line
from rayline.features.contract import QUARANTINE_SCHEMA, Contract, Failures
from rayline.features.lookups import Lookups, missed_column
from rayline.features.spec import X_CAT, X_NUM, FeatureSpec, ModelInputs, as_model_table, model_inputs_from_table
from rayline.model import boosted
from rayline.model.artifact import LoadedModel
from rayline.storage import Storage, footer_rows, split_uri

KIND = "rl__kind"  # between the split stages: "ok" (prepared) or "quarantine" (its row in QUARANTINED)
QUARANTINED = "rl__quarantine"  # a refused row's quarantine columns, as one struct (no clash with key columns)


class Scored(NamedTuple):
    predictions: pa.Table  # key columns, prediction, label, model_version (+ lookups, explanations)
    quarantine: pa.Table  # QUARANTINE_SCHEMA


@dataclass
class BatchResult:
    version: int
    rows_in: int
    rows_out: int
    quarantined: int
    output: str
    seconds: float

    def summary(self) -> dict:
        return {"stage": "predict", **self.__dict__}


@dataclass(frozen=True)
class ScoringPlan:
    """What a batch actor or task needs, compiled once on the driver: the spec and the model config
    as objects (no JSON parsed per actor or per batch), the model file's bytes, which version it
    is, the key columns to keep and the GPUs an actor holds."""

    spec: FeatureSpec
    model: bytes
    model_config: ModelConfig
    version: int
    keep: tuple[str, ...]
    gpus: float = 0.0
    lookups: Lookups | None = None  # the version's lookup snapshot: joins and counts as in the ingest
    explain: bool = False  # add each row's explanation as columns (explain_base, explain_margin, explain__<field>)
    explain_method: str = "exact"  # batch.explain_method (XGBoost: exact TreeSHAP or approx)
    output: StagedParts | None = None  # where the actors write (None: only `predict`, in-process)
    batch_rows: int | None = None  # most rows checked, transformed and scored at once (None: a block whole)


class Prepare:
    """The CPU half: the endpoint's contract, then the FeatureSpec transform. Valid rows leave as
    their key columns plus the model inputs, invalid ones as quarantine rows with the reason."""

    def __init__(self, plan: ScoringPlan):
        self.spec, self.keep, self.lookups = plan.spec, plan.keep, plan.lookups
        self.contract = Contract(self.spec)

    def split(self, batch: pa.Table) -> tuple[pa.Table, ModelInputs, pa.Table]:
        """(key columns of the valid rows, their model inputs, quarantine rows)."""
        # A row is accepted here exactly when /predict would accept it.
        failures = Failures(batch.num_rows)
        src_mod.unreadable_records(batch, failures)  # a JSON record that could not be read
        typed, failures = self.contract.check_table(batch, failures)
        ok = pa.array(~failures.bad)
        typed = typed.filter(ok)
        missed: dict = {}
        if self.lookups is not None:  # raw primary rows: joined and counted as the ingest did (a value sent wins)
            typed, missed = self.lookups.apply(typed)
        inputs = self.spec.transform(typed)
        raw_ok = batch.filter(ok)  # key columns exactly as they came in
        n = raw_ok.num_rows
        good = raw_ok.select([c for c in self.keep if c in raw_ok.column_names])  # no key columns: still n rows
        if self.lookups is not None:
            good = good.append_column("lookups_missed", missed_column(missed, n))
            good = good.append_column("lookup_snapshot", pa.repeat(pa.scalar(self.lookups.snapshot, pa.string()), n))
        return good, inputs, failures.quarantine(batch, "predict", src_mod.PATH_COLUMN)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """As a separate stage (GPU scoring): prepared rows carry the model inputs as list columns,
        refused rows their quarantine row as one struct column, told apart by KIND."""
        good, inputs, q = self.split(batch)
        table = as_model_table(inputs)
        good = good.append_column(X_NUM, table.column(X_NUM)).append_column(X_CAT, table.column(X_CAT))
        good = good.append_column(KIND, pa.repeat(pa.scalar("ok"), good.num_rows))
        refused = pa.table({KIND: pa.repeat(pa.scalar("quarantine"), q.num_rows),
                            QUARANTINED: q.combine_chunks().to_struct_array().combine_chunks()})
        return pa.concat_tables([_pad(good, refused.schema), _pad(refused, good.schema)], promote_options="default")


class Score:
    """The device half: the forward pass over prepared rows (large batches on a GPU actor); the
    rows get the prediction, the endpoint's label and the model version."""

    def __init__(self, plan: ScoringPlan):
        boosted.lean_imports()  # this actor is rayline's: xgboost without scikit-learn (0.6 s of its start)
        device = "cpu"
        if plan.gpus > 0:  # torch only where a GPU may be used (a booster on CPU never imports it)
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = LoadedModel.from_parts(plan.model, plan.spec, plan.model_config, device=device)
        self.version, self.explain, self.explain_method = plan.version, plan.explain, plan.explain_method
        self.output = plan.output

    def __call__(self, batch: pa.Table) -> pa.Table:
        """As the second stage: score what `Prepare` made, write it, return the written files' report."""
        return self.output.write(*self.predict(batch))

    def predict(self, batch: pa.Table) -> Scored:
        is_ok = pc.equal(batch.column(KIND), "ok")
        good, refused = batch.filter(is_ok), batch.filter(pc.invert(is_ok))
        num, cat = model_inputs_from_table(good)
        q = pa.Table.from_struct_array(refused.column(QUARANTINED).combine_chunks()) if refused.num_rows else \
            QUARANTINE_SCHEMA.empty_table()
        return Scored(self.score(good.drop_columns([X_NUM, X_CAT, KIND, QUARANTINED]), ModelInputs(num=num, cat=cat)),
                      q.cast(QUARANTINE_SCHEMA))

    def score(self, good: pa.Table, inputs: ModelInputs) -> pa.Table:
        preds = self.model.predict_inputs(inputs)
        if preds.ndim == 2:
            good = good.append_column("prediction", pa.FixedSizeListArray.from_arrays(
                pa.array(preds.reshape(-1).astype(np.float64)), preds.shape[1]))
        else:
            good = good.append_column("prediction", pa.array(preds.astype(np.float64)))
        labels = self.model.labels(preds)  # the endpoint's "label", at the same threshold
        if labels is not None:
            good = good.append_column("label", pa.array(labels.tolist(), pa.int64() if labels.dtype.kind == "i" else pa.string()))
        good = good.append_column("model_version", pa.array(np.full(good.num_rows, self.version, dtype=np.int64)))
        if self.explain:
            good = explanation_columns(good, self.model.explain(inputs, self.explain_method))
        return good


class Predictor:
    """Both halves in one actor (CPU inference: no hand-off between them is worth its cost); the
    model inputs go from the transform to the model as arrays, never through Arrow columns."""

    def __init__(self, plan: ScoringPlan):
        self.prepare, self.score, self.output = Prepare(plan), Score(plan), plan.output
        self.batch_rows = plan.batch_rows

    def __call__(self, block: pa.Table) -> pa.Table:
        """As a Ray Data actor: score the block `batch_rows` rows at a time, write it (one file of
        predictions, one of refused rows), return the written files' report. Ray Data merges a
        read's blocks up to its target block size (128 MiB: ~900k raw flights), so a block can
        be far larger than `batch.batch_rows`; whole, its transform and forward pass held ~1.2 GB
        per actor here (34M rows in 1M-row groups), sliced 0.54-0.58 GB."""
        step = self.batch_rows or max(block.num_rows, 1)
        if block.num_rows <= step:
            return self.output.write(*self.predict(block))
        parts = [self.predict(block.slice(start, step)) for start in range(0, block.num_rows, step)]
        return self.output.write(pa.concat_tables([p.predictions for p in parts]),
                                 pa.concat_tables([p.quarantine for p in parts]))

    def predict(self, batch: pa.Table) -> Scored:
        good, inputs, q = self.prepare.split(batch)
        return Scored(self.score.score(good, inputs), q)


EXPLAIN_PREFIX = "explain__"


def explanation_columns(table: pa.Table, e) -> pa.Table:
    """The explanation of each row as columns: what /predict?explain=true answers, flattened."""
    table = table.append_column("explain_base", pa.array(e.base)).append_column("explain_margin", pa.array(e.margin))
    table = table.append_column("explain_units", pa.array([e.units] * len(e), pa.string()))
    if e.explained is not None:
        table = table.append_column("explain_class", pa.array(e.explained, pa.string()))
    for j, name in enumerate(e.fields):
        table = table.append_column(EXPLAIN_PREFIX + name, pa.array(e.contributions[:, j]))
    return table


def _pad(t: pa.Table, other: pa.Schema) -> pa.Table:
    for f in other:
        if f.name not in t.column_names:
            t = t.append_column(f.name, pa.nulls(t.num_rows, f.type))
    return t


def run_batch_predict(cfg: RaylineConfig, storage: Storage, input_path: str, output_path: str, *,
                      model: str | None = None, fmt: str | None = None, keep: list[str] | None = None,
                      overwrite: bool = False, explain: bool = False, delimiter: str | None = None,
                      encoding: str | None = None, decimal: str | None = None) -> BatchResult:
    """`delimiter`: a CSV input's field separator (default: a tab for .tsv, else a comma);
    `encoding`: its text encoding (default: UTF-8); `decimal`: its numbers' decimal mark (default '.')."""
    import ray

    from rayline.model.artifact import SPEC
    from rayline.registry import Registry

    t0 = time.perf_counter()
    registry = Registry.of(cfg, storage)
    version = registry.resolve(model or cfg.alias)
    spec = FeatureSpec.from_json(registry.read_file(version, SPEC))
    fmt = fmt or _guess_format(input_path)
    try:
        source = SourceConfig(format=fmt, path=input_path, delimiter=delimiter, encoding=encoding, decimal=decimal)
    except ValidationError as e:  # a bad --delimiter, --encoding, --decimal or --format
        raise InputError(f"input {input_path}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    kinds = Contract(spec).kinds
    keep = keep if keep is not None else [c for c in dict.fromkeys(spec.passthrough + cfg.data.passthrough)]
    # a CSV input's model fields are read as text, for the contract to type (a bad value is that
    # row's quarantine, wherever it is in the file); the kept columns are inferred, the rest text
    src = src_mod.resolve("input", source, storage, delimiter_setting="--delimiter", text_columns=list(kinds),
                          string_columns=[c for c, kind in kinds.items() if kind == "string"], columns_setting="",
                          encoding_setting="--encoding", inferred_columns=[c for c in keep if c not in kinds],
                          number_columns=[c for c, kind in kinds.items() if kind in ("float", "int")])
    src_mod.check_files(src, sorted(n for n, c in spec.constraints.items() if c.required), any_of=list(kinds))
    if clash := output_clashes(keep):  # a model whose passthrough predates the config's check
        raise InputError(f"kept column(s) {clash} would be a second column of a name the predictions carry "
                         f"({', '.join(OUTPUT_COLUMNS)}, explain_*): leave them out of data.passthrough")
    gpus, actors = gpu_plan(cfg.batch.gpus_per_actor, cfg.batch.max_actors, ray.cluster_resources().get("GPU", 0),
                            ray.available_resources().get("GPU", 0))
    parent, name = split_uri(output_path)
    out = Storage(parent)
    in_fs, in_path = src_mod.filesystem_for(input_path)
    check_output(location(in_fs, in_path), location(out.fs, out.path(name)), out.exists(name), overwrite=overwrite,
                 shown_input=input_path, shown_output=output_path)
    tmp = out.temp_dir(name)
    try:
        result = _predict_into(cfg, registry, version, spec, src, keep, gpus, actors, out, tmp, explain)
        retired = out.publish(tmp, name)
    except BaseException:
        out.delete_dir(tmp)  # a failed run leaves nothing behind; an existing output is untouched
        raise
    if retired:
        out.delete_dir(retired)
    rows_in, rows_out, quarantined = result
    return BatchResult(version, rows_in, rows_out, quarantined, out.uri(name), round(time.perf_counter() - t0, 2))


def split_stages(setting: bool | str, gpus: float) -> bool:
    """Transform and score in separate stages? auto: when the scoring actors hold GPUs."""
    return gpus > 0 if setting == "auto" else bool(setting)


def _prepare(batch: pa.Table, plan: ScoringPlan) -> pa.Table:
    """`Prepare` as a Ray Data task (tasks scale to every free CPU)."""
    return Prepare(plan)(batch)


def gpu_plan(asked: float | str, max_actors: int, total: float, free: float) -> tuple[float, int]:
    """(GPUs per actor, most actors) for what the cluster has now; an error rather than a wait
    that never ends (a Serve replica may hold the only GPU)."""
    if asked == "auto":
        asked = 1.0 if free >= 1 else 0.0
    if asked <= 0:
        return 0.0, max_actors
    if total < asked:
        raise ResourceError(f"batch.gpus_per_actor={asked:g} but the cluster has {total:g} GPU(s); "
                         f"set batch.gpus_per_actor=0 to predict on CPU")
    if free < asked:
        raise ResourceError(f"batch.gpus_per_actor={asked:g} but only {free:g} of the cluster's {total:g} GPU(s) are free "
                         f"(held by other work, e.g. Serve replicas with serve.gpus_per_replica); set "
                         f"batch.gpus_per_actor=0 to predict on CPU, or free a GPU")
    return float(asked), max(1, min(max_actors, int(free // asked)))


def _predict_into(cfg: RaylineConfig, registry, version: int, spec: FeatureSpec, src, keep: list[str], gpus: float,
                  actors: int, out: Storage, tmp: str, explain: bool = False) -> tuple[int, int, int]:
    from ray.data import ActorPoolStrategy

    from rayline.model.artifact import MODEL_CONFIG, model_file

    from rayline.data.lookup_store import snapshot_of

    model_config = ModelConfig.model_validate_json(registry.read_file(version, MODEL_CONFIG))
    plan = ScoringPlan(spec=spec, model=registry.read_file(version, model_file(model_config)), model_config=model_config,
                       version=version, keep=tuple(keep), gpus=gpus, explain=explain,
                       explain_method=cfg.batch.explain_method, output=StagedParts(out, tmp), batch_rows=cfg.batch.batch_rows,
                       lookups=snapshot_of(registry, version, spec, cfg.batch.lookup_snapshot))  # loaded once here, broadcast with the plan
    bc = cfg.batch
    # Every actor asked for up front (started asynchronously: where the cluster has room for fewer,
    # those run). Starting from one and scaling on backlog, a 1M-row input (two 500k-row blocks
    # from the reader) ran on one actor from start to end: half of one process.
    pool = ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors)
    if split_stages(bc.split_stages, gpus):
        # CPU workers check and transform while the model's actors run large forward passes on
        # what is ready: Ray Data streams between the two, so neither waits for the other. Small
        # CPU shares: batch inference often shares a cluster with live Serve replicas.
        ds = src_mod.read_dataset(src, num_cpus=0.25, path_column=src_mod.PATH_COLUMN)
        ds = ds.map_batches(_prepare, fn_args=(plan,), batch_format="pyarrow",
                            batch_size=bc.batch_rows, num_cpus=bc.cpus_per_actor)
        ds = ds.map_batches(Score, fn_constructor_args=(plan,),
                            batch_format="pyarrow", batch_size=bc.score_batch_rows,
                            compute=pool, num_gpus=gpus,
                            num_cpus=bc.cpus_per_actor)
    else:
        # Parquet is read inside the actors (read, check, score, write: no hop through the object
        # store); other formats by read tasks, at most one per actor at a time (a read is ~10x
        # faster than scoring it, and with no cap Ray Data started four worker processes for reads
        # on 2 CPUs while the actors were still starting).
        ds = src_mod.map_blocks(src, Predictor, bc.batch_rows, path_column=src_mod.PATH_COLUMN, read_cpus=0.25,
                                read_concurrency=max(1, min(actors, len(src.files))),  # more than files: Ray warns
                                fn_constructor_args=(plan,), compute=pool, num_gpus=gpus,
                                num_cpus=bc.cpus_per_actor)
    try:
        reported = ds.take_all()  # one small row per file the actors wrote
    except Exception as e:  # noqa: BLE001
        detail = src_mod.diagnose(src)
        raise InputError(detail or f"batch prediction failed: {failure_line(e)}") from None
    rows = keep_reported(plan.output, reported)
    rows_out, quarantined = rows[PREDICTIONS], rows[QUARANTINE]
    # rows in, counted independently of the prediction pass (footers for Parquet, a count otherwise)
    rows_in = sum(footer_rows(src.filesystem, src.files)) \
        if src.format == "parquet" else src_mod.read_dataset(src, num_cpus=0.25).count()
    if rows_in != rows_out + quarantined:
        raise RuntimeError(f"reconciliation failed: rows in {rows_in} != out {rows_out} + quarantined {quarantined}")
    return rows_in, rows_out, quarantined


def _guess_format(path: str) -> str:
    """The input's format from its name; for a directory, from the files in it (one format among
    them: that one; several: the caller is asked to choose)."""
    p = path.lower().rstrip("/")
    for fmt in ("csv", "json", "parquet"):
        if p.endswith(src_mod.EXTENSIONS[fmt]):
            return fmt
    import pyarrow.fs as pafs

    try:
        fs, where = src_mod.filesystem_for(path)
        if fs.get_file_info(where).type != pafs.FileType.Directory:
            return "parquet"
        names = [i.base_name.lower() for i in fs.get_file_info(pafs.FileSelector(where, recursive=True))
                 if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))]
    except (OSError, InputError):
        return "parquet"  # the read that follows names the problem
    found = sorted({fmt for fmt, exts in src_mod.EXTENSIONS.items() for n in names if n.endswith(exts)})
    if len(found) > 1:
        raise InputError(f"input {path}: the directory holds {' and '.join(found)} files: pass --format to say which to read")
    return found[0] if found else "parquet"
