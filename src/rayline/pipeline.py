"""Stages composed: what `rayline train`, `rayline evaluate` and `rayline run` call.

Each function takes the config and a Storage, calls the stages' public entry points and
returns typed results; the CLI, the jobs and the notebooks are thin shells over these.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rayline.config import RaylineConfig
from rayline.data import IngestResult, load_ingest, run_ingest
from rayline.errors import RaylineError, RegistryError
from rayline.evaluate import Evaluation, evaluate_model
from rayline.evaluate.report import render_markdown, render_plots
from rayline.features.spec import FeatureSpec
from rayline.model.artifact import LoadedModel
from rayline.registry import ModelVersion, Registry, promote
from rayline.lineage import register_run
from rayline.storage import Storage, join_uri
from rayline.tracking import Tracker

if TYPE_CHECKING:
    from rayline.tune import TuneResult
from rayline.train import TrainResult, default_run_name, run_training


@dataclass
class TrainOutcome:
    version: ModelVersion
    reused: bool
    train: TrainResult | None
    evaluation: dict

    def summary(self) -> dict:
        out = {"stage": "train", "version": self.version.version, "reused": self.reused,
               "run_name": self.version.lineage.get("run_name"), "test": self.version.summary()["test"],
               "report": join_uri(self.version.uri, "report", "report.md"),
               "tracking": self.version.lineage.get("tracking")}
        if self.train:
            out["training"] = self.train.summary()
        return out


def build_report(title: str, ev: Evaluation, history: list[dict], lineage: dict) -> dict[str, bytes]:
    plots = render_plots(ev, history)
    md = render_markdown(title, ev, history, lineage, list(plots))
    return {"report.md": md.encode(), **plots}


def train_and_register(cfg: RaylineConfig, storage: Storage, *, ingest: IngestResult | None = None,
                       run_name: str | None = None, fresh: bool = False, progress=lambda m: None) -> TrainOutcome:
    """Ingest (reused when unchanged) -> train -> evaluate on test -> report -> register."""
    t0 = time.perf_counter()
    ingest = ingest or run_ingest(cfg, storage, progress=progress)
    registry = Registry.of(cfg, storage)
    run_name = run_name or default_run_name(cfg, ingest)
    if not fresh:
        existing = registry.find_run(run_name)
        if existing is not None:
            progress(f"train: data and config unchanged, model version {existing.version} (run {run_name}) reused")
            return TrainOutcome(existing, True, None, existing.metrics.get("test", {}))
    t = time.perf_counter()
    trained = run_training(cfg, ingest, storage, run_name=run_name, fresh=fresh, progress=progress)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    model = LoadedModel.from_bytes(trained.model_bytes, ingest.spec.to_json(), cfg.train.model.model_dump_json())
    ev = evaluate_model(model, ingest.split_uri("test"), slice_columns=cfg.evaluate.slice_columns)
    eval_s = time.perf_counter() - t
    timings = {"train": round(train_s, 2), "evaluate": round(eval_s, 2), "total": round(time.perf_counter() - t0, 2)}
    report = build_report(f"{cfg.name}: run {run_name}", ev, trained.history,
                          {"run_name": run_name, "ingest_key": ingest.key, "config_hash": cfg.config_hash()})
    tracker = Tracker(cfg, storage, progress=progress)
    tracked = tracker.record_training(cfg, ingest, trained, ev, report)
    version = register_run(registry, cfg, ingest, trained, ev, report, timings,
                           extra={"tracking": tracked.to_json()} if tracked else None)
    tracker.link_version(tracked, cfg.name, version.version, version.uri)
    progress(f"train: registered {cfg.name} version {version.version} (test {ev.metric} {ev.value:.4f})"
             + (f", MLflow run {tracked.run_id}" if tracked else ""))
    return TrainOutcome(version, False, trained, ev.metrics)


@dataclass
class TuneOutcome:
    tuning: "TuneResult"
    version: ModelVersion
    reused: bool
    promotion: dict

    def summary(self) -> dict:
        return {**self.tuning.summary(), "version": self.version.version, "reused": self.reused,
                "test": self.version.summary()["test"], "promotion": self.promotion,
                "report": join_uri(self.version.uri, "report", "report.md"),
                "tracking": self.version.lineage.get("tracking")}


def tune_and_register(cfg: RaylineConfig, storage: Storage, *, trials: int | None = None, fresh: bool = False,
                      promote_to: str | None = None, progress=lambda m: None) -> TuneOutcome:
    """Ingest (reused) -> Ray Tune over training -> the best trial evaluated on test -> registered
    with its trial and search space in the lineage -> promoted through the gate to `promote_to`."""
    from rayline.tune import run_tuning
    from rayline.tune.tuner import best_config

    t0 = time.perf_counter()
    ingest = run_ingest(cfg, storage, progress=progress)
    result = run_tuning(cfg, ingest, storage, trials=trials, fresh=fresh, progress=progress)
    registry = Registry.of(cfg, storage)
    existing = registry.find_run(result.best.run_name)
    if existing is not None:
        version, reused = existing, True
    else:
        best_cfg = best_config(cfg, result.best_trial["params"])
        model = LoadedModel.from_bytes(result.best.model_bytes, ingest.spec.to_json(),
                                       best_cfg.train.model.model_dump_json())
        ev = evaluate_model(model, ingest.split_uri("test"), slice_columns=cfg.evaluate.slice_columns)
        tuning = {"experiment": result.name, "experiment_uri": result.uri, "trial_id": result.best_trial["trial_id"],
                  "params": result.best_trial["params"], "search_space": result.space, "trials": len(result.trials),
                  "scheduler": cfg.tune.scheduler}
        report = build_report(f"{cfg.name}: tuned, trial {tuning['trial_id']}", ev, result.best.history,
                              {"run_name": result.best.run_name, "ingest_key": ingest.key, "tuning": tuning})
        timings = {"tune": result.seconds, "total": round(time.perf_counter() - t0, 2)}
        tracker = Tracker(cfg, storage, progress=progress)
        parent = tracker.start_tuning(cfg, result)
        tracked = tracker.record_training(
            best_cfg, ingest, result.best, ev, report, parent_run_id=parent.run_id if parent else None,
            tags={"rayline.kind": "trial", "rayline.trial_id": str(tuning["trial_id"]), "rayline.best_trial": "true"})
        if parent:
            tuning["tracking_parent_run_id"] = parent.run_id
        version = register_run(registry, best_cfg, ingest, result.best, ev, report, timings,
                               extra={"tuning": tuning, **({"tracking": tracked.to_json()} if tracked else {})})
        tracker.link_version(tracked, cfg.name, version.version, version.uri)
        reused = False
        progress(f"tune: registered {cfg.name} version {version.version} (trial {tuning['trial_id']}, "
                 f"test {ev.metric} {ev.value:.4f})")
    promotion: dict = {}
    if promote_to:
        try:
            promotion = promote_version(cfg, storage, version.version, promote_to)
        except RegistryError as e:
            promotion = {"refused": str(e)}
    return TuneOutcome(result, version, reused, promotion)


def evaluate_version(cfg: RaylineConfig, storage: Storage, ref: str | None = None) -> dict:
    """Recompute a registered version's evaluation and report on the test split it was trained with."""
    registry = Registry.of(cfg, storage)
    v, model = registry.load(ref or "latest")
    mv = registry.get(v)
    ingest = load_ingest(cfg, storage, mv.lineage["ingest_key"])
    ev = evaluate_model(model, ingest.split_uri("test"), slice_columns=cfg.evaluate.slice_columns)
    history = json.loads(registry.read_file(v, "history.json"))
    report = build_report(f"{cfg.name}: version {v}", ev, history, mv.lineage)
    for name, data in report.items():
        storage.write_bytes(data, registry.base, str(v), "report", name)
    return {"stage": "evaluate", "version": v, "split": ev.split, "metric": ev.metric, "value": ev.value,
            "metrics": ev.metrics, "report": join_uri(mv.uri, "report", "report.md")}


def reevaluator(cfg: RaylineConfig, storage: Storage):
    """For the promotion gate: score the current model on the candidate's test split."""
    registry = Registry.of(cfg, storage)

    def score(current: ModelVersion, candidate: ModelVersion) -> float:
        _, model = registry.load(current.version)
        ingest = load_ingest(cfg, storage, candidate.lineage["ingest_key"])
        return evaluate_model(model, ingest.split_uri("test")).value
    return score


def promote_version(cfg: RaylineConfig, storage: Storage, ref: str | int, alias: str, force: bool = False) -> dict:
    registry = Registry.of(cfg, storage)
    v = registry.resolve(ref)
    p = promote(registry, v, alias, tolerance=cfg.promote.tolerance, margin=cfg.promote.baseline_margin, force=force,
                reevaluate=reevaluator(cfg, storage))
    return {"stage": "promote", **p.summary()}


def rollback_alias(cfg: RaylineConfig, storage: Storage, alias: str) -> dict:
    registry = Registry.of(cfg, storage)
    before = registry.aliases().get(alias)
    if before is None:
        raise RegistryError(f"model {cfg.name!r} has no alias {alias!r}")
    after = registry.rollback(alias)
    return {"stage": "rollback", "alias": alias, "from": before, "to": after}


@dataclass
class PipelineResult:
    stages: dict
    seconds: dict

    def summary(self) -> dict:
        return {"stage": "run", **self.stages, "seconds": self.seconds}


def run_pipeline(cfg: RaylineConfig, storage: Storage, *, fresh: bool = False,
                 progress=lambda m: None) -> PipelineResult:
    """ingest -> train -> evaluate -> register -> promote (gated) -> deploy -> one smoke request."""
    from rayline.serve.auth import client_headers
    from rayline.serve.deploy import deploy

    seconds: dict[str, float] = {}
    stages: dict = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        progress(f"[{name}] ...")
        out = fn()
        seconds[name] = round(time.perf_counter() - t, 2)
        progress(f"[{name}] done in {seconds[name]}s")
        return out

    ingest = timed("ingest", lambda: run_ingest(cfg, storage, progress=progress))
    stages["ingest"] = {"key": ingest.key, "reused": ingest.reused, "rows": ingest.manifest["rows"],
                        "quarantine_by_rule": ingest.manifest["quarantine_by_rule"]}
    trained = timed("train", lambda: train_and_register(cfg, storage, ingest=ingest, fresh=fresh, progress=progress))
    stages["train"] = {"version": trained.version.version, "reused": trained.reused, "test": trained.version.summary()["test"],
                       "report": join_uri(trained.version.uri, "report", "report.md"),
                       "tracking": trained.version.lineage.get("tracking")}

    def do_promote():
        try:
            return promote_version(cfg, storage, trained.version.version, cfg.alias)
        except RegistryError as e:
            progress(f"[promote] refused: {e}")
            return {"refused": str(e)}
    stages["promote"] = timed("promote", do_promote)
    registry = Registry.of(cfg, storage)
    if cfg.alias not in registry.aliases():
        raise RaylineError(f"nothing to serve: alias {cfg.alias!r} is not set")
    dep = timed("deploy", lambda: deploy(cfg, progress=progress))
    stages["deploy"] = dep.summary()

    def smoke():
        req = urllib.request.Request(f"{dep.url}/predict", data=json.dumps(example_record(ingest.spec)).encode(),
                                     headers={"content-type": "application/json", **client_headers(cfg.serve.auth)})
        with urllib.request.urlopen(req, timeout=30) as r:
            return {"status": r.status, **json.loads(r.read())}
    stages["smoke"] = timed("smoke", smoke)
    return PipelineResult(stages, seconds)


def example_record(spec: FeatureSpec) -> dict:
    """A typical request: each feature at its training mean or most frequent value."""
    rec: dict = {f.name: round(f.mean, 3) for f in spec.numeric}
    rec.update({c.name: c.vocabulary[0] for c in spec.categorical if c.vocabulary})
    rec.update({t.name: "2013-06-01T12:00:00Z" for t in spec.time})
    for name, c in spec.constraints.items():
        if name in rec and c.allowed and str(rec[name]) not in c.allowed:
            rec[name] = c.allowed[0]
        if name in rec and isinstance(rec[name], float) and c.min is not None:
            rec[name] = max(rec[name], c.min)
    return rec
