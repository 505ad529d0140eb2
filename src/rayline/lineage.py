"""Turning a finished training run into a registry version: its files, metrics and lineage.

This sits above the stages it reads (ingest, training, evaluation) so that the registry below
knows none of them: it stores the files, metrics and lineage it is given, nothing else.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from rayline.config import RaylineConfig, dump_config
from rayline.data.dataset import IngestResult
from rayline.evaluate.evaluate import Evaluation
from rayline.model.metrics import primary_metric
from rayline.model.artifact import MODEL_CONFIG, SPEC
from rayline.registry import ModelVersion, Registry
from rayline.registry.registry import json_bytes
from rayline.train.trainer import TrainResult


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    versions = {}
    for pkg in ("rayline", "ray", "torch", "xgboost", "xgboost-cpu", "pyarrow", "numpy", "pandas", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "packages": versions,
            "hardware": {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count()}}


def register_run(registry: Registry, cfg: RaylineConfig, ingest: IngestResult, train: TrainResult,
                 evaluation: Evaluation, report_files: dict[str, bytes], timings: dict,
                 extra: dict | None = None) -> ModelVersion:
    """`extra`: more lineage (tuning: experiment, trial id, search space, the trial's params)."""
    metric, mode = primary_metric(cfg.task)
    files = {
        train.model_file: train.model_bytes,
        SPEC: ingest.spec.to_json().encode(),
        MODEL_CONFIG: json_bytes(cfg.train.model.model_dump(mode="json")),
        "config.yaml": dump_config(cfg).encode(),
        "history.json": json_bytes(train.history),
        "evaluation.json": json_bytes(evaluation.to_json()),
        **{f"report/{k}": v for k, v in report_files.items()},
    }
    metrics = {"metric": metric, "mode": mode, "test": evaluation.metrics,
               "validation": {f"val_{train.metric}": train.best_value, "best_epoch": train.best_epoch}}
    lineage = {
        "run_name": train.run_name, "run_uri": train.run_uri, "checkpoint_uri": train.checkpoint_uri,
        "ingest_key": ingest.key, "ingest_uri": ingest.path,
        "data_fingerprint": ingest.manifest["input_fingerprint"], "data_config_hash": ingest.manifest["config_hash"],
        "config_hash": cfg.config_hash(), "git_commit": git_commit(), **environment(),
        # the lookup snapshot its features came from (under the dataset; serving and batch load it)
        **({"lookups": ingest.manifest["lookups"]} if ingest.manifest.get("lookups") else {}),
        # seed and worker count: with the same ingest files they fix the model (the booster's bytes)
        "training": {"family": cfg.train.model.family, "device": train.device, "workers": train.workers,
                     "cpus_per_worker": train.cpus_per_worker, "seed": cfg.train.seed, "feed": train.feed,
                     "precision": train.precision, "feed_device": train.feed_device, "epochs_run": len(train.history)},
        "timings_s": timings,
        **(extra or {}),
    }
    return registry.register(files, metrics, lineage)

