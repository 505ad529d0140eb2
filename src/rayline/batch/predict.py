"""Batch inference on Ray Data: raw records in, predictions (with the input's key columns) out.

An actor pool (GPU actors per `batch.gpus_per_actor`, sized to the GPUs free) loads the model once per actor; each
batch is validated with the same constraints the endpoint enforces and transformed by the same
FeatureSpec code, so batch and online predictions agree exactly. Invalid rows go to a
quarantine with the reason; rows out + rows quarantined = rows in, checked at the end.
The output is staged and published whole (see `output.py` for what it may never overwrite).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayline.config import RaylineConfig, SourceConfig
from rayline.batch.output import check_output, location
from rayline.data import sources as src_mod
from rayline.errors import InputError, ResourceError
from rayline.features.spec import FeatureSpec
from rayline.model.artifact import LoadedModel
from rayline.storage import Storage, split_uri

KIND = "rl__kind"


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


class Predictor:
    """Ray Data actor: loads the model once, predicts pyarrow batches."""

    def __init__(self, model: bytes, spec_json: str, model_json: str, version: int, keep: list[str], gpus: float):
        import torch

        device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
        self.model = LoadedModel.from_bytes(model, spec_json, model_json, device=device)
        self.version, self.keep = version, keep

    def __call__(self, batch: pa.Table) -> pa.Table:
        # The endpoint's contract: a row is accepted here exactly when /predict would accept it.
        typed, failures = self.model.contract.check_table(batch)
        ok = pa.array(~failures.bad)
        clean = typed.filter(ok)
        preds = self.model.predict_inputs(self.model.spec.transform(clean))
        raw_ok = batch.filter(ok)  # key columns exactly as they came in
        out = {c: raw_ok.column(c) for c in self.keep if c in raw_ok.column_names}
        if preds.ndim == 2:
            out["prediction"] = pa.FixedSizeListArray.from_arrays(pa.array(preds.reshape(-1).astype(np.float64)), preds.shape[1])
        else:
            out["prediction"] = pa.array(preds.astype(np.float64))
        labels = self.model.labels(preds)  # the endpoint's "label", at the same threshold
        if labels is not None:
            out["label"] = pa.array(labels.tolist(), pa.int64() if labels.dtype.kind == "i" else pa.string())
        out["model_version"] = pa.array(np.full(clean.num_rows, self.version, dtype=np.int64))
        good = pa.table(out).append_column(KIND, pa.array(["ok"] * clean.num_rows, pa.string()))
        q = failures.quarantine(batch, "predict", src_mod.PATH_COLUMN)
        # one output stream: predictions and quarantined rows, told apart by KIND
        return pa.concat_tables([_pad(good, q.schema), _pad(q.append_column(KIND, pa.array(["quarantine"] * q.num_rows, pa.string())), good.schema)],
                                promote_options="default")


def _pad(t: pa.Table, other: pa.Schema) -> pa.Table:
    for f in other:
        if f.name not in t.column_names:
            t = t.append_column(f.name, pa.nulls(t.num_rows, f.type))
    return t


def run_batch_predict(cfg: RaylineConfig, storage: Storage, input_path: str, output_path: str, *,
                      model: str | None = None, fmt: str | None = None, keep: list[str] | None = None,
                      overwrite: bool = False) -> BatchResult:
    import ray

    from rayline.model.artifact import SPEC
    from rayline.registry import Registry

    t0 = time.perf_counter()
    registry = Registry.of(cfg, storage)
    version = registry.resolve(model or cfg.alias)
    spec = FeatureSpec.from_json(registry.read_file(version, SPEC))
    fmt = fmt or _guess_format(input_path)
    src = src_mod.resolve("input", SourceConfig(format=fmt, path=input_path), storage)
    src_mod.check_files(src, sorted(n for n, c in spec.constraints.items() if c.required))
    keep = keep if keep is not None else [c for c in dict.fromkeys(spec.passthrough + cfg.data.passthrough)]
    gpus, actors = gpu_plan(cfg.batch.gpus_per_actor, cfg.batch.max_actors, ray.cluster_resources().get("GPU", 0),
                            ray.available_resources().get("GPU", 0))
    parent, name = split_uri(output_path)
    out = Storage(parent)
    in_fs, in_path = src_mod.filesystem_for(input_path)
    check_output(location(in_fs, in_path), location(out.fs, out.path(name)), out.exists(name), overwrite=overwrite,
                 shown_input=input_path, shown_output=output_path)
    tmp = out.temp_dir(name)
    try:
        result = _predict_into(cfg, registry, version, spec, src, keep, gpus, actors, out, tmp)
        retired = out.publish(tmp, name)
    except BaseException:
        out.delete_dir(tmp)  # a failed run leaves nothing behind; an existing output is untouched
        raise
    if retired:
        out.delete_dir(retired)
    rows_in, rows_out, quarantined = result
    return BatchResult(version, rows_in, rows_out, quarantined, out.uri(name), round(time.perf_counter() - t0, 2))


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
                  actors: int, out: Storage, tmp: str) -> tuple[int, int, int]:
    from ray.data import ActorPoolStrategy

    from rayline.model.artifact import MODEL_CONFIG, model_file

    model_json = registry.read_file(version, MODEL_CONFIG)
    # Small CPU shares: batch inference often shares a cluster with live Serve replicas.
    ds = src_mod.read_dataset(src, num_cpus=0.25)
    ds = ds.rename_columns({"path": src_mod.PATH_COLUMN})
    ds = ds.map_batches(
        Predictor, fn_constructor_args=(registry.read_file(version, model_file(model_json)), spec.to_json(),
                                        model_json.decode(), version, keep, gpus),
        batch_format="pyarrow", batch_size=cfg.batch.batch_rows,
        compute=ActorPoolStrategy(min_size=1, max_size=actors),
        num_gpus=gpus, num_cpus=cfg.batch.cpus_per_actor)
    try:
        ds.write_parquet(out.path(tmp), filesystem=out.fs, partition_cols=[KIND])
    except Exception as e:  # noqa: BLE001
        detail = src_mod.diagnose(src)
        raise InputError(detail or f"batch prediction failed: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    rows_out = _rows(out, f"{tmp}/{KIND}=ok")
    quarantined = _rows(out, f"{tmp}/{KIND}=quarantine")
    # rows in, counted independently of the prediction pass (footers for Parquet, a count otherwise)
    rows_in = sum(pq.ParquetFile(src.filesystem.open_input_file(f)).metadata.num_rows for f in src.files) \
        if src.format == "parquet" else src_mod.read_dataset(src, num_cpus=0.25).count()
    if rows_in != rows_out + quarantined:
        raise RuntimeError(f"reconciliation failed: rows in {rows_in} != out {rows_out} + quarantined {quarantined}")
    # Final layout: <output>/predictions/ and <output>/quarantine/ (quarantine columns only).
    for kind, sub in (("ok", "predictions"), ("quarantine", "quarantine")):
        if out.exists(f"{tmp}/{KIND}={kind}"):
            out.move_dir(f"{tmp}/{KIND}={kind}", f"{tmp}/{sub}")
    return rows_in, rows_out, quarantined


def _rows(storage: Storage, rel: str) -> int:
    if not storage.exists(rel):
        return 0
    return sum(pq.ParquetFile(storage.fs.open_input_file(p)).metadata.num_rows for p in storage.list_files(rel, suffix=".parquet"))


def _guess_format(path: str) -> str:
    p = path.lower().rstrip("/")
    if p.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    if p.endswith((".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz")):
        return "json"
    return "parquet"

