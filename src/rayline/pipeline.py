"""Stages composed: what `rayline train`, `rayline evaluate` and `rayline run` call.

Each public function takes the config and a Storage and returns a typed result; the CLI, the
jobs and the notebooks are thin shells over these. Inside, one `RunContext` (the config, its
storage, registry and tracker, how progress is told, and the training and evaluation steps) is
built once per command and passed down; a unit test builds one from fakes. Train and tune end
the same way, in `finish_run`: evaluate on test -> report -> track -> register -> link.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rayline.config import RaylineConfig
from rayline.data import IngestResult, load_ingest, run_ingest
from rayline.errors import RaylineError, RegistryError
from rayline.evaluate import Evaluation, evaluate_model
from rayline.evaluate.evaluate import choose_threshold
from rayline.evaluate.threshold import ThresholdChoice
from rayline.evaluate.report import render_markdown, render_plots
from rayline.model.artifact import LoadedModel
from rayline.registry import ModelVersion, Registry, promote
from rayline.lineage import register_run
from rayline.storage import Storage, join_uri
from rayline.tracking import Tracker

if TYPE_CHECKING:
    from rayline.tune import TuneResult
from rayline.train import TrainResult, default_run_name, run_training


@dataclass
class RunContext:
    """What one command's stages share, built once (`RunContext.of`). `train` and `evaluate` are
    the stages' entry points, passed in like the registry and the tracker so that tests can swap them."""

    cfg: RaylineConfig
    storage: Storage
    registry: Registry
    tracker: Tracker
    progress: Callable[[str], None] = lambda m: None
    train: Callable[..., TrainResult] = field(default=run_training)
    evaluate: Callable[..., Evaluation] = field(default=evaluate_model)
    choose_threshold: Callable[..., ThresholdChoice] = field(default=choose_threshold)

    @classmethod
    def of(cls, cfg: RaylineConfig, storage: Storage, progress=lambda m: None) -> "RunContext":
        return cls(cfg, storage, Registry.of(cfg, storage), Tracker(cfg, storage, progress=progress), progress)

    def ingest(self, key: str | None = None) -> IngestResult:
        """The ingest of the config (run or reused), or a published one by key."""
        if key is not None:
            return load_ingest(self.cfg, self.storage, key)
        return run_ingest(self.cfg, self.storage, progress=self.progress)


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


def finish_run(ctx: RunContext, cfg: RaylineConfig, ingest: IngestResult, trained: TrainResult, *, title: str,
               started: float, timings: dict, lineage: dict | None = None, report_lineage: dict | None = None,
               parent_run_id: str | None = None, tags: dict | None = None) -> tuple[ModelVersion, Evaluation]:
    """A finished training run (of `cfg`: a tuned trial's own) becomes a registry version:
    evaluate on test -> report -> track -> register -> link the tracked run to the version.
    `started`: the command's perf_counter at its start (the lineage's total seconds)."""
    t = time.perf_counter()
    model = LoadedModel.from_parts(trained.model_bytes, ingest.spec, cfg.train.model)
    ec = ctx.cfg.evaluate
    if ingest.spec.label.task == "binary":
        # the decision threshold, chosen on the validation split; saved with the model (its model config)
        choice = ctx.choose_threshold(model, ingest.split_uri("valid"), ec.threshold)
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={
            "model": cfg.train.model.model_copy(update={"threshold": choice.threshold})})})
        model.config = cfg.train.model
        lineage = {**(lineage or {}), "threshold": choice.to_json()}
        report_lineage = {**(report_lineage or {}), "threshold": choice.to_json()}
        if choice.note:
            ctx.progress(f"evaluate: {choice.note}")
    ev = ctx.evaluate(model, ingest.split_uri("test"), slice_columns=ec.slice_columns, explain_rows=ec.explain_rows)
    now = time.perf_counter()
    timings = {**timings, "evaluate": round(now - t, 2), "total": round(now - started, 2)}
    report = build_report(title, ev, trained.history, {"run_name": trained.run_name, "ingest_key": ingest.key,
                                                       **(report_lineage or {})})
    tracked = ctx.tracker.record_training(cfg, ingest, trained, ev, report, parent_run_id=parent_run_id, tags=tags)
    version = register_run(ctx.registry, cfg, ingest, trained, ev, report, timings,
                           extra={**(lineage or {}), **({"tracking": tracked.to_json()} if tracked else {})})
    ctx.tracker.link_version(tracked, cfg.name, version.version, version.uri)
    return version, ev


def train_and_register(cfg: RaylineConfig, storage: Storage, *, ingest: IngestResult | None = None,
                       run_name: str | None = None, fresh: bool = False, progress=lambda m: None) -> TrainOutcome:
    """Ingest (reused when unchanged) -> train -> evaluate on test -> report -> register."""
    return train_in(RunContext.of(cfg, storage, progress), ingest=ingest, run_name=run_name, fresh=fresh)


def train_in(ctx: RunContext, *, ingest: IngestResult | None = None, run_name: str | None = None,
             fresh: bool = False, lineage: dict | None = None) -> TrainOutcome:
    """`lineage`: more to record with the version (the watcher's trigger and data window)."""
    cfg, progress = ctx.cfg, ctx.progress
    t0 = time.perf_counter()
    ingest = ingest or ctx.ingest()
    run_name = run_name or default_run_name(cfg, ingest)
    if not fresh:
        existing = ctx.registry.find_run(run_name)
        if existing is not None:
            progress(f"train: data and config unchanged, model version {existing.version} (run {run_name}) reused")
            return TrainOutcome(existing, True, None, existing.metrics.get("test", {}))
    t = time.perf_counter()
    trained = ctx.train(cfg, ingest, ctx.storage, run_name=run_name, fresh=fresh, progress=progress)
    timings = {"train": round(time.perf_counter() - t, 2)}
    version, ev = finish_run(ctx, cfg, ingest, trained, title=f"{cfg.name}: run {run_name}", started=t0,
                             timings=timings, lineage=lineage,
                             report_lineage={"config_hash": cfg.config_hash(), **(lineage or {})})
    tracked = version.lineage.get("tracking") or {}
    progress(f"train: registered {cfg.name} version {version.version} (test {ev.metric} {ev.value:.4f})"
             + (f", MLflow run {tracked['run_id']}" if tracked.get("run_id") else ""))
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
                      promote_to: str | None = None, progress=lambda m: None, lineage: dict | None = None) -> TuneOutcome:
    """Ingest (reused) -> Ray Tune over training -> the best trial evaluated on test -> registered
    with its trial and search space in the lineage -> promoted through the gate to `promote_to`."""
    from rayline.tune import run_tuning
    from rayline.tune.tuner import best_config

    ctx = RunContext.of(cfg, storage, progress)
    t0 = time.perf_counter()
    ingest = ctx.ingest()
    result = run_tuning(cfg, ingest, storage, trials=trials, fresh=fresh, progress=progress)
    existing = ctx.registry.find_run(result.best.run_name)
    if existing is not None:
        version, reused = existing, True
    else:
        best_cfg = best_config(cfg, result.best_trial["params"])
        tuning = {"experiment": result.name, "experiment_uri": result.uri, "trial_id": result.best_trial["trial_id"],
                  "params": result.best_trial["params"], "search_space": result.space, "trials": len(result.trials),
                  "scheduler": cfg.tune.scheduler}
        parent = ctx.tracker.start_tuning(cfg, result)
        if parent:
            tuning["tracking_parent_run_id"] = parent.run_id
        version, ev = finish_run(
            ctx, best_cfg, ingest, result.best, title=f"{cfg.name}: tuned, trial {tuning['trial_id']}", started=t0,
            timings={"tune": result.seconds}, lineage={"tuning": tuning, **(lineage or {})},
            report_lineage={"tuning": tuning, **(lineage or {})},
            parent_run_id=parent.run_id if parent else None,
            tags={"rayline.kind": "trial", "rayline.trial_id": str(tuning["trial_id"]), "rayline.best_trial": "true"})
        reused = False
        progress(f"tune: registered {cfg.name} version {version.version} (trial {tuning['trial_id']}, "
                 f"test {ev.metric} {ev.value:.4f})")
    promotion: dict = {}
    if promote_to:
        try:
            promotion = promote_in(ctx, version.version, promote_to)
        except RegistryError as e:
            promotion = {"refused": str(e)}
    return TuneOutcome(result, version, reused, promotion)


def evaluate_version(cfg: RaylineConfig, storage: Storage, ref: str | None = None) -> dict:
    """Recompute a registered version's evaluation and report on the test split it was trained with."""
    ctx = RunContext.of(cfg, storage)
    registry = ctx.registry
    v, model = registry.load(ref or "latest")
    mv = registry.get(v)
    ingest = ctx.ingest(mv.lineage["ingest_key"])
    ev = ctx.evaluate(model, ingest.split_uri("test"), slice_columns=cfg.evaluate.slice_columns,
                      explain_rows=cfg.evaluate.explain_rows)
    history = json.loads(registry.read_file(v, "history.json"))
    report = build_report(f"{cfg.name}: version {v}", ev, history, mv.lineage)
    for name, data in report.items():
        storage.write_bytes(data, registry.base, str(v), "report", name)
    return {"stage": "evaluate", "version": v, "split": ev.split, "metric": ev.metric, "value": ev.value,
            "metrics": ev.metrics, "report": join_uri(mv.uri, "report", "report.md")}


def reevaluator(ctx: RunContext):
    """For the promotion gate: score the current model on the candidate's test split."""
    def score(current: ModelVersion, candidate: ModelVersion) -> float:
        _, model = ctx.registry.load(current.version)
        ingest = ctx.ingest(candidate.lineage["ingest_key"])
        return ctx.evaluate(model, ingest.split_uri("test")).value
    return score


def promote_version(cfg: RaylineConfig, storage: Storage, ref: str | int, alias: str, force: bool = False) -> dict:
    return promote_in(RunContext.of(cfg, storage), ref, alias, force)


def promote_in(ctx: RunContext, ref: str | int, alias: str, force: bool = False) -> dict:
    cfg = ctx.cfg
    v = ctx.registry.resolve(ref)
    p = promote(ctx.registry, v, alias, tolerance=cfg.promote.tolerance, margin=cfg.promote.baseline_margin, force=force,
                reevaluate=reevaluator(ctx))
    return {"stage": "promote", **p.summary()}


def rollback_alias(cfg: RaylineConfig, storage: Storage, alias: str) -> dict:
    registry = RunContext.of(cfg, storage).registry
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


def smoke_records(cfg: RaylineConfig, storage: Storage, spec, n: int = 20) -> list[dict]:
    """What the smoke request sends: with lookups, raw rows of the primary source as a client has
    them (the first that every lookup finds is the one shown: the model's whole feature pipeline
    at work), then the spec's typical record; without, that record alone."""
    rows: list[dict] = []
    if spec.joins or spec.counts:
        from rayline.data.ingest import resolve_source
        from rayline.data.sources import head_records
        from rayline.features.contract import Contract

        try:
            d = cfg.data
            fields = Contract(spec).accepts - {spec.label.column}  # not what it asks about
            rows = head_records(resolve_source(cfg, d.primary, storage), n, fields)
        except (OSError, ValueError, RaylineError):
            rows = []  # a smoke request needs no exact row: the typical record still answers
    return [*rows, spec.example_record()]


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

    ctx = RunContext.of(cfg, storage, progress)
    ingest = timed("ingest", ctx.ingest)
    stages["ingest"] = {"key": ingest.key, "reused": ingest.reused, "rows": ingest.manifest["rows"],
                        "quarantine_by_rule": ingest.manifest["quarantine_by_rule"]}
    trained = timed("train", lambda: train_in(ctx, ingest=ingest, fresh=fresh))
    stages["train"] = {"version": trained.version.version, "reused": trained.reused, "test": trained.version.summary()["test"],
                       "report": join_uri(trained.version.uri, "report", "report.md"),
                       "tracking": trained.version.lineage.get("tracking")}

    def do_promote():
        try:
            return promote_in(ctx, trained.version.version, cfg.alias)
        except RegistryError as e:
            progress(f"[promote] refused: {e}")
            return {"refused": str(e)}
    stages["promote"] = timed("promote", do_promote)
    if cfg.alias not in ctx.registry.aliases():
        raise RaylineError(f"nothing to serve: alias {cfg.alias!r} is not set")
    dep = timed("deploy", lambda: deploy(cfg, registry=ctx.registry, progress=progress))
    stages["deploy"] = dep.summary()

    def smoke():
        answer, records = None, smoke_records(cfg, storage, ingest.spec)
        for i, record in enumerate(records):
            req = urllib.request.Request(f"{dep.url}/predict", data=json.dumps(record).encode(),
                                         headers={"content-type": "application/json", **client_headers(cfg.serve.auth)})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = {"status": r.status, **json.loads(r.read())}
            except urllib.error.HTTPError as e:
                if i < len(records) - 1 and e.code in (400, 422):
                    continue  # a raw row the contract refuses (the ingest quarantined such rows too)
                raise
            if not answer["predictions"][0].get("lookups_missed"):
                break
        return answer
    stages["smoke"] = timed("smoke", smoke)
    return PipelineResult(stages, seconds)

