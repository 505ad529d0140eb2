"""Experiment tracking: every training and tuning run recorded in MLflow.

The driver writes each run after it finished, from what the run left behind (history,
evaluation, report), so workers need no MLflow access. Embedded default: an SQLite store and
its artifacts under the storage root (no server to start); `tracking.uri` names a shared server.
A tracking store that cannot be written never costs a trained model: the run is registered
anyway, with a warning that says why it was not recorded.

Sits beside `lineage` (above the stages it reads); the registry's lineage links to the run.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rayline import layout
from rayline.config import MODEL_SECTIONS, RaylineConfig, dump_config
from rayline.storage import Storage

if TYPE_CHECKING:
    from rayline.data.dataset import IngestResult
    from rayline.evaluate.evaluate import Evaluation
    from rayline.train.trainer import TrainResult
    from rayline.tune.tuner import TuneResult

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000           # MLflow's limit on a parameter value
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000  # MLflow's log_batch limits
_PARAM_KEY = re.compile(r"^[\w\-. /]+$")


@dataclass(frozen=True)
class TrackedRun:
    uri: str
    experiment: str
    experiment_id: str
    run_id: str

    def to_json(self) -> dict:
        return asdict(self)


def tracking_uri(cfg: RaylineConfig, storage: Storage) -> str | None:
    """The configured URI, else an SQLite store under a local storage root; None when neither."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if storage.is_local:
        return f"sqlite:///{storage.path(layout.tracking_db())}"
    return None


def artifact_root(cfg: RaylineConfig, storage: Storage) -> str | None:
    """Where a new experiment keeps its artifacts: beside the embedded store; a server decides its own."""
    if cfg.tracking.uri is None and storage.is_local:
        return Path(storage.path(layout.tracking_artifacts())).as_uri()
    return None


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow parameters: dotted keys; lists and long values as (truncated) JSON."""
    out: dict[str, str] = {}
    # a mapping keyed by data (a rule's {">": 15}) is one value: MLflow keys allow few characters
    if isinstance(obj, dict) and obj and all(_PARAM_KEY.match(str(k)) for k in obj):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
    out[prefix.rstrip(".")] = text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."
    return out


def run_params(cfg: RaylineConfig) -> dict[str, str]:
    """What the model was made from (not where it is served or stored): task, data, train, evaluate."""
    return flatten(cfg.model_dump(mode="json", include=set(MODEL_SECTIONS)))


def _loggable(v: Any) -> bool:
    """A metric value MLflow can plot: a finite number (not a flag or a name)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def history_metrics(history: list[dict]) -> list[tuple[str, float, int]]:
    """(key, value, step) per numeric field of each epoch's row; the epoch (or round) is the step."""
    out = []
    for row in history:
        step = int(row.get("epoch", len(out)))
        out += [(k, float(v), step) for k, v in row.items() if k != "epoch" and _loggable(v)]
    return out


def numeric(d: dict, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in d.items() if _loggable(v)}


class Tracker:
    """One pipeline's MLflow experiment. `client` may be passed in (tests, a preconfigured client)."""

    def __init__(self, cfg: RaylineConfig, storage: Storage, client=None, progress=lambda m: None):
        self.cfg, self.storage, self.progress = cfg, storage, progress
        self.uri = tracking_uri(cfg, storage)
        self.experiment = cfg.tracking.experiment or cfg.name
        self._client = client
        self._experiment_id: str | None = None
        self._said_off = False

    @property
    def enabled(self) -> bool:
        return self.cfg.tracking.enabled and self.uri is not None

    def disabled_reason(self) -> str | None:
        if not self.cfg.tracking.enabled:
            return "tracking.enabled is false"
        if self.uri is None:
            return (f"storage.root {self.storage.root} is not local and tracking.uri is not set "
                    f"(set it to a shared MLflow server to record runs)")
        return None

    # ------------------------------------------------------------ the client
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            # MLflow logs each schema migration of a new store at INFO: keep the console to rayline's lines
            for name in ("mlflow", "alembic"):
                if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
                    logging.getLogger(name).setLevel(logging.WARNING)
            if self.uri.startswith("sqlite:///"):
                Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            c = self.client()
            exp = c.get_experiment_by_name(self.experiment)
            if exp is None:
                root = artifact_root(self.cfg, self.storage)
                try:
                    self._experiment_id = c.create_experiment(
                        self.experiment, artifact_location=f"{root}/{self.experiment}" if root else None)
                except MlflowException:  # another driver created it first
                    exp = c.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    c.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _log(self, run_id: str, params: dict[str, str] | None = None,
             metrics: list[tuple[str, float, int]] | None = None, tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        c, now = self.client(), int(time.time() * 1000)
        ps = [Param(k[:250], v) for k, v in (params or {}).items()]
        ms = [Metric(k, v, now, step) for k, v, step in metrics or []]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None]
        for i in range(0, len(ps), PARAMS_PER_BATCH):
            c.log_batch(run_id, params=ps[i:i + PARAMS_PER_BATCH])
        for i in range(0, len(ms), METRICS_PER_BATCH):
            c.log_batch(run_id, metrics=ms[i:i + METRICS_PER_BATCH])
        if ts:
            c.log_batch(run_id, tags=ts)

    def _artifacts(self, run_id: str, files: dict[str, bytes]) -> None:
        with tempfile.TemporaryDirectory(prefix="rayline-mlflow-") as d:
            for rel, data in files.items():
                p = Path(d, rel)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            self.client().log_artifacts(run_id, d)

    def _guard(self, what: str, fn):
        """Run `fn`; a tracking failure is a warning (the model is registered regardless)."""
        if not self.enabled:
            if self.cfg.tracking.enabled and not self._said_off:  # on, but nowhere to write: say why once
                self.progress(f"tracking: {what} not recorded: {self.disabled_reason()}")
                self._said_off = True
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - any store/server error: the run itself succeeded
            msg = f"tracking: {what} not recorded in MLflow at {self.uri}: {type(e).__name__}: {e}"
            log.warning(msg)
            self.progress(msg)
            return None

    # ------------------------------------------------------------ what is recorded
    def record_training(self, cfg: RaylineConfig, ingest: "IngestResult", train: "TrainResult",
                        evaluation: "Evaluation", report_files: dict[str, bytes], *, parent_run_id: str | None = None,
                        tags: dict[str, str] | None = None) -> TrackedRun | None:
        """One training run: parameters, per-epoch metrics, test metrics, the report and its plots,
        the data fingerprint and config. Returns where it lives (for the registry's lineage)."""
        def write() -> TrackedRun:
            c = self.client()
            all_tags = {"rayline.run_name": train.run_name, "rayline.ingest_key": ingest.key,
                        "rayline.data_fingerprint": ingest.manifest.get("input_fingerprint"),
                        "rayline.config_hash": cfg.config_hash(), "rayline.family": cfg.train.model.family,
                        "rayline.device": train.device, "rayline.precision": train.precision,
                        "rayline.feed": train.feed, "rayline.checkpoint_uri": train.checkpoint_uri,
                        **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {}), **(tags or {})}
            run = c.create_run(self.experiment_id(), run_name=train.run_name,
                               tags={k: str(v) for k, v in all_tags.items() if v is not None})
            rid = run.info.run_id
            try:
                metrics = history_metrics(train.history)
                summary = {**numeric(evaluation.metrics, "test_"), **numeric(ingest.manifest.get("rows", {}), "rows_"),
                           **numeric(evaluation.explanations.get("mean_abs", {}), "explain_mean_abs_"),
                           **numeric(train.timings_s, "seconds_"),
                           **numeric({f"best_val_{train.metric}": train.best_value, "best_epoch": train.best_epoch})}
                metrics += [(k, v, 0) for k, v in summary.items()]
                self._log(rid, params=run_params(cfg), metrics=metrics)
                self._artifacts(rid, {"config.yaml": dump_config(cfg).encode(),
                                      "history.json": json.dumps(train.history, indent=1).encode(),
                                      "evaluation.json": json.dumps(evaluation.to_json(), default=str).encode(),
                                      **{f"report/{k}": v for k, v in report_files.items()}})
                c.set_terminated(rid, "FINISHED")
            except BaseException:
                c.set_terminated(rid, "FAILED")
                raise
            return TrackedRun(self.uri, self.experiment, self.experiment_id(), rid)
        return self._guard(f"training run {train.run_name}", write)

    def start_tuning(self, cfg: RaylineConfig, result: "TuneResult") -> TrackedRun | None:
        """The tuning experiment as a parent run, each trial a child run with its curve."""
        def write() -> TrackedRun:
            c = self.client()
            parent = c.create_run(self.experiment_id(), run_name=result.name,
                                  tags={"rayline.kind": "tuning", "rayline.scheduler": cfg.tune.scheduler,
                                        "rayline.tune_uri": result.uri})
            pid = parent.info.run_id
            self._log(pid, params={**flatten(result.space, "space."), "trials": str(len(result.trials)),
                                   **flatten(cfg.tune.model_dump(mode="json", exclude={"search_space"}), "tune.")},
                      metrics=[("best_score", float(result.best_trial["score"]), 0)] if result.best_trial.get("score")
                      is not None else [])
            for t in result.trials:
                if t["trial_id"] == result.best_trial.get("trial_id"):
                    continue  # the best trial is recorded in full (record_training) under this parent
                child = c.create_run(self.experiment_id(), run_name=f"{result.name}-{t['trial_id']}",
                                     tags={"mlflow.parentRunId": pid, "rayline.kind": "trial",
                                           "rayline.trial_id": str(t["trial_id"]), "rayline.status": t["status"]})
                self._log(child.info.run_id, params=flatten(t["params"]),
                          metrics=[(f"val_{result.best.metric}", v, i + 1)
                                   for i, v in enumerate(result.curves.get(t["trial_id"], [])) if _loggable(v)])
                c.set_terminated(child.info.run_id, "FAILED" if t["status"] == "error" else "FINISHED")
            c.set_terminated(pid, "FINISHED")
            return TrackedRun(self.uri, self.experiment, self.experiment_id(), pid)
        return self._guard(f"tuning experiment {result.name}", write)

    def record_decision(self, name: str, entry: dict) -> None:
        """One settled step of the closed loop (`rayline watch`): promoted, rolled back, rejected,
        failed. Its triggers, live figures and reason are tags, params and metrics of a short run."""
        def write() -> None:
            c = self.client()
            state, seq = entry.get("state", "?"), entry.get("seq", 0)
            tags = {"rayline.kind": "watch", "rayline.watch_state": state, "rayline.model": name,
                    "rayline.model_version": entry.get("version"), "rayline.production": entry.get("production"),
                    "rayline.why": str(entry.get("why", ""))[:5000]}
            run = c.create_run(self.experiment_id(), run_name=f"watch-{seq}-{state}",
                               tags={k: str(v) for k, v in tags.items() if v is not None})
            rid = run.info.run_id
            self._log(rid, params={k: v[:500] for k, v in flatten({"triggers": entry.get("triggers", [])}).items()},
                      metrics=[(k, float(v), 0) for k, v in flatten(entry.get("figures") or {}).items()
                               if _number(v)])
            self._artifacts(rid, {"decision.json": json.dumps(entry, indent=1, default=str).encode()})
            c.set_terminated(rid, "FINISHED")
        self._guard(f"watch decision {entry.get('seq')}", write)

    def link_version(self, run: TrackedRun | None, name: str, version: int, uri: str) -> None:
        """Tag the run with the registry version it became (the lineage links back)."""
        if run is None:
            return
        self._guard(f"model version {version}", lambda: self._log(
            run.run_id, tags={"rayline.model": name, "rayline.model_version": str(version), "rayline.model_uri": uri}))
