"""The tuning stage's driver: a Ray Tune `Tuner` whose trials are Ray Train runs.

Each trial is the training stage itself (`run_training`, either family) with one sampled point
of the search space applied to the config; Tune's report callback forwards every epoch's (or
every `report_every_rounds` rounds') validation score, so ASHA stops poor trials early. The
experiment lives under `<root>/tune/<name>/` and is named from the data and config, so the same
command after a killed driver restores it (`Tuner.restore`): finished trials are kept and
unfinished ones resume from their own Train checkpoints. Resources are decided here: as many
concurrent trials as the cluster fits, each sized like a training run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from rayline import layout
from rayline.config import RaylineConfig
from rayline.data.dataset import IngestResult
from rayline.errors import RaylineError, failure_line
from rayline.storage import Storage
from rayline.train.resources import AUTO, plan_workers
from rayline.model.metrics import primary_metric
from rayline.train.trainer import RESULT_FILE, TrainResult
from rayline.tune.space import overrides, search_space, to_ray, trial_config

TRIAL_CPU = 0.01  # the trial function only drives its Train run; Tune needs a non-empty request


@dataclass
class TuneResult:
    name: str
    uri: str
    space: dict
    trials: list[dict]  # ranked, best first: trial_id, params, score, iterations, status
    best: TrainResult = field(repr=False)
    best_trial: dict = field(default_factory=dict)
    restored: bool = False
    seconds: float = 0.0
    curves: dict[str, list[float]] = field(default_factory=dict, repr=False)  # trial id -> val metric per report

    def summary(self) -> dict:
        return {"stage": "tune", "name": self.name, "uri": self.uri, "restored": self.restored,
                "trials": self.trials, "best_trial": self.best_trial, "seconds": self.seconds}


def tune_name(cfg: RaylineConfig, ingest: IngestResult) -> str:
    """Same data, model config and search -> same experiment, so a rerun restores it."""
    return f"tune-{cfg.name}-{ingest.key[:8]}-{cfg.model_hash('tune')[:8]}"


def _trial(config: dict, base: RaylineConfig, ingest: IngestResult, name: str) -> None:
    """One trial (a Tune function trainable): a training run at one sampled point. `base` and
    `ingest` arrive as the driver's objects; only what the point changes is validated here."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from rayline.train.trainer import run_training

    cfg = trial_config(base, config["params"])
    storage = Storage(cfg.storage.root)  # absolute since the config was loaded
    run_name = f"{name}-{ray.tune.get_context().get_trial_id()}"
    run_training(cfg, ingest, storage, run_name=run_name, callbacks=[TuneReportCallback()])


def sized_for_trials(cfg: RaylineConfig) -> RaylineConfig:
    """`auto` worker sizes fixed for tuning: one worker with one CPU (or GPU) per trial. Trials
    are independent, so running more of them at once beats more cores per trial, and a size each
    trial chose from the cores free when it starts would race the others."""
    tc, fixed = cfg.train, {}
    if tc.num_workers == AUTO:
        fixed["num_workers"] = 1
    if tc.cpus_per_worker == AUTO:
        fixed["cpus_per_worker"] = 1.0
    return cfg.model_copy(update={"train": tc.model_copy(update=fixed)}) if fixed else cfg


def concurrency(cfg: RaylineConfig, total_cpus: float, total_gpus: float) -> int:
    """How many trials run at once: each is a training run of `plan_workers`' size."""
    plan = plan_workers(sized_for_trials(cfg).train, total_cpus, total_gpus)
    per_cpu = plan.workers * plan.resources["CPU"] + TRIAL_CPU
    fits = math.floor(total_cpus / per_cpu + 1e-9)
    if plan.use_gpu:
        fits = min(fits, math.floor(total_gpus / plan.workers + 1e-9))
    limit = cfg.tune.max_concurrent or fits
    return max(1, min(cfg.tune.trials, fits, limit))


def run_tuning(cfg: RaylineConfig, ingest: IngestResult, storage: Storage, *, trials: int | None = None,
               fresh: bool = False, progress=lambda m: None) -> TuneResult:
    import ray
    from ray import tune

    t0 = time.perf_counter()
    if trials is not None:
        cfg = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"trials": trials})})
    cfg = sized_for_trials(cfg)
    tc = cfg.tune
    space = search_space(cfg)
    base = cfg
    if cfg.train.model.family == "xgboost" and "train.model.xgboost.checkpoint_every" not in space:
        base = trial_config(cfg, {"train.model.xgboost.checkpoint_every": tc.report_every_rounds})  # ASHA needs reports
    name = tune_name(cfg, ingest)
    path = storage.path(layout.tune_experiment(name))
    if fresh:
        storage.delete_dir(layout.tune_experiment(name))
    res = ray.cluster_resources()
    parallel = concurrency(cfg, res.get("CPU", 0.0), res.get("GPU", 0.0))
    # The trial only drives (its Train run holds the resources); Tune needs a non-empty request.
    # The base config travels by value beside the sampled point, not in the trial's params.
    trainable = tune.with_resources(tune.with_parameters(_trial, base=base, ingest=ingest, name=name),
                                    {"CPU": TRIAL_CPU})
    restored = not fresh and tune.Tuner.can_restore(path, storage_filesystem=storage.fs)
    if restored:
        progress(f"tune: experiment {name} exists, resuming it (use --fresh to start over)")
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, restart_errored=True,
                                   storage_filesystem=storage.fs)
    else:
        progress(f"tune: {tc.trials} trial(s), {parallel} at a time, {tc.scheduler}, space: {', '.join(space)}")
        scheduler = tune.schedulers.ASHAScheduler(time_attr="training_iteration", grace_period=tc.grace_period,
                                                  reduction_factor=tc.reduction_factor, max_t=10_000) \
            if tc.scheduler == "asha" else tune.schedulers.FIFOScheduler()
        # more trials at once than the cluster fits would leave a Train run waiting for workers
        searcher = tune.search.BasicVariantGenerator(random_state=tc.seed, max_concurrent=parallel)
        tuner = tune.Tuner(
            trainable,
            param_space={"params": to_ray(space)},
            tune_config=tune.TuneConfig(num_samples=tc.trials, metric="score", mode="max", scheduler=scheduler,
                                        search_alg=searcher),
            run_config=tune.RunConfig(name=name, storage_path=storage.path(layout.TUNE), storage_filesystem=storage.fs,
                                      verbose=1),
        )
    grid = tuner.fit()
    metric, mode = primary_metric(cfg.task)  # `best` is in the metric's units: max for AUC, min for losses
    ranked, curves = [], {}
    for r in grid:
        if r.config is None:
            continue
        trial_id = (r.metrics or {}).get("trial_id") or (r.path.rstrip("/").rsplit("/", 1)[-1] if r.path else None)
        df = r.metrics_dataframe
        if df is not None and f"val_{metric}" in df:
            curves[trial_id] = [float(v) for v in df[f"val_{metric}"].dropna()]
        ranked.append({"trial_id": trial_id, "params": r.config["params"],
                       "score": (r.metrics or {}).get("best", (r.metrics or {}).get("score")),
                       "reports": (r.metrics or {}).get("training_iteration", 0),
                       "status": "error" if r.error else "done"})
    finished = [t for t in ranked if t["status"] == "done" and t["score"] is not None]
    if not finished:
        errors = [r.error for r in grid if r.error is not None]
        why = f": the first failed with {failure_line(errors[0])}" if errors else ""
        raise RaylineError(f"tuning {name}: no trial finished ({len(ranked)} tried){why}; see "
                           f"{storage.uri(layout.tune_experiment(name))}")
    finished.sort(key=lambda t: t["score"], reverse=mode == "max")
    ranked = finished + [t for t in ranked if t not in finished]
    # the best trial that ran to its end (one ASHA stopped early left no finished run behind)
    complete = [t for t in finished if storage.exists(layout.run(f"{name}-{t['trial_id']}"), RESULT_FILE)]
    if not complete:
        raise RaylineError(f"tuning {name}: no trial ran to its end; see {storage.uri(layout.tune_experiment(name))}")
    best_trial = complete[0]
    best = TrainResult.from_run(storage, f"{name}-{best_trial['trial_id']}")
    return TuneResult(name=name, uri=storage.uri(layout.tune_experiment(name)), space={k: v.model_dump(exclude_none=True)
                                                                        for k, v in space.items()},
                      trials=ranked, best=best, best_trial=best_trial, restored=restored,
                      seconds=round(time.perf_counter() - t0, 1), curves=curves)


def best_config(cfg: RaylineConfig, params: dict) -> RaylineConfig:
    """The config of the best trial (what its model was trained with)."""
    return trial_config(cfg, params)


__all__ = ["TuneResult", "run_tuning", "tune_name", "concurrency", "best_config", "overrides"]
