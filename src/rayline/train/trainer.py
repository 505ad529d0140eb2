"""The training stage's driver side: resources, data feeding choice, TorchTrainer, results.

Ray resource choices live here, at the stage's edge: workers, CPU/GPU per worker, failure
and checkpoint policy all come from the config and are decided in this one place.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from rayline import layout, ray_compat
from rayline.config import RaylineConfig
from rayline.data.dataset import IngestResult
from rayline.errors import RaylineError, failure_line
from rayline.features.spec import MODEL_COLUMNS
from rayline.model.metrics import primary_metric
from rayline.storage import Storage
from rayline.model.artifact import model_file
from rayline.runtime import embedded as ray_embedded
from rayline.runtime import session_logs
from rayline.train.controller_setup import (controller_env, dropped_callbacks, lean, placement_groups_released,
                                            scoped_env)
from rayline.train.checkpoint import RESULT_FILE, CheckpointMeta
from rayline.train.plan import PLAN_KEY, LoopPlan
from rayline.train.progress import follow
from rayline.train.resources import cluster_worker_plan

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_name: str
    run_uri: str
    checkpoint_uri: str  # the best checkpoint by the validation metric
    model_bytes: bytes = field(repr=False)  # the content of model_file
    model_file: str
    history: list[dict]
    best_epoch: int
    metric: str
    best_value: float
    device: str
    workers: int
    feed: str
    timings_s: dict
    cpus_per_worker: float = 0.0  # as planned (auto resolves at the start of the run)
    precision: str = "fp32"     # bf16 autocast on GPUs that support it
    feed_device: str = "cpu"    # where the training batches live (the device, or "host" when streamed)

    def to_json(self) -> dict:
        """Everything but the model bytes (those stay in the checkpoint)."""
        return {k: v for k, v in self.__dict__.items() if k != "model_bytes"}

    @classmethod
    def from_run(cls, storage: Storage, run_name: str) -> "TrainResult":
        """A finished run's result, as `run_training` saved it (RESULT_FILE + the best checkpoint)."""
        meta = storage.read_json(layout.run(run_name), RESULT_FILE)
        fs, path = storage.fs, f"{meta['checkpoint_uri'].rstrip('/')}/{meta['model_file']}"
        with fs.open_input_stream(path) as f:
            return cls(model_bytes=f.read(), **meta)

    def summary(self) -> dict:
        return {"run_name": self.run_name, "best_epoch": self.best_epoch, f"val_{self.metric}": self.best_value,
                "epochs_run": len(self.history), "device": self.device, "workers": self.workers,
                "cpus_per_worker": self.cpus_per_worker, "feed": self.feed,
                "precision": self.precision, "feed_device": self.feed_device,
                "checkpoint": self.checkpoint_uri, "timings_s": self.timings_s}


def default_run_name(cfg: RaylineConfig, ingest: IngestResult) -> str:
    """Same data and model config -> same run name, so rerunning the same command resumes (or
    reuses the registered model); serving, storage, promotion and tracking settings do not count."""
    return f"{cfg.name}-{ingest.key[:8]}-{cfg.model_hash()[:8]}"


def _family(family: str):
    """(Ray Train trainer class, per-worker loop, the trainer's family arguments) of a model
    family. Both loops write a CheckpointMeta and the family's model file into each checkpoint."""
    if family == "xgboost":  # XGBoostTrainer is this with Ray's XGBoostConfig (boosted_workers says why not)
        from rayline.train.boosted_workers import RabitCollective, train_loop_per_worker as boosted_loop
        return ray_compat.data_parallel_trainer(), boosted_loop, {"backend_config": RabitCollective()}
    from ray.train.torch import TorchTrainer

    from rayline.train.loop import train_loop_per_worker
    return TorchTrainer, train_loop_per_worker, {}


def choose_feed(cfg: RaylineConfig, ingest: IngestResult, workers: int, quiet: bool = False) -> tuple[str, int]:
    """'memory' when a worker's shard fits the configured budget, else 'stream' (mlp only: an
    xgboost worker builds its DMatrix in memory either way)."""
    spec = ingest.spec
    row_bytes = 4 * len(spec.numeric_inputs) + 8 * len(spec.categorical) + 8
    rows_per_worker = -(-ingest.manifest["rows"]["train"] // workers)
    need = row_bytes * rows_per_worker
    feed = "memory" if need <= cfg.train.in_memory_max_bytes or cfg.train.model.family == "xgboost" else "stream"
    if not quiet:
        log.info("train feed: %s (%d rows/worker x %d B = %.1f MiB, budget %.1f MiB)", feed, rows_per_worker,
                 row_bytes, need / 2**20, cfg.train.in_memory_max_bytes / 2**20)
    return feed, rows_per_worker


def _timings(fit_s: float, started_at: float, history: list[dict]) -> dict:
    """fit wall time; and from the call to the first step of this call's attempt (mlp: the
    workers stamp it; a worker on another node adds its clock's offset)."""
    out = {"fit": round(fit_s, 2)}
    firsts = [h["first_step_at"] for h in history if h.get("first_step_at", 0) >= started_at]
    if firsts:
        out["to_first_step"] = round(min(firsts) - started_at, 2)
    return out


def run_training(cfg: RaylineConfig, ingest: IngestResult, storage: Storage, *, run_name: str | None = None,
                 fresh: bool = False, progress=lambda msg: None, callbacks: list | None = None) -> TrainResult:
    """Train on the ingest's train/valid splits with Ray Train; resume a run of the same name.
    `callbacks`: Ray Train UserCallbacks (tuning passes Tune's report callback)."""
    import ray.data
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

    t0, started_at = time.perf_counter(), time.time()
    storage.check_writable()
    tc = cfg.train
    run_name = run_name or default_run_name(cfg, ingest)
    run_rel = layout.run(run_name)
    if fresh:
        storage.delete_dir(run_rel)
    elif storage.exists(run_rel):
        progress(f"train: run {run_name} exists, resuming from its latest checkpoint (use --fresh to start over)")
    # A streamed split is read by Ray Data tasks beside the workers: an auto size leaves them a CPU.
    plan = cluster_worker_plan(tc, progress,
                               reserve_cpus=lambda n: 1.0 if choose_feed(cfg, ingest, n, quiet=True)[0] == "stream" else 0.0)
    feed, rows_per_worker = choose_feed(cfg, ingest, plan.workers)
    progress(f"train: {plan.workers} worker(s) x {plan.resources}, {plan.device}, feed={feed}")

    # Shares that fit in memory are read by each worker straight from the split's Parquet
    # (train.shard: no Ray Data pipeline to start); only a streamed train split goes through
    # Ray Data's split coordinator (preserve_order: deterministic shares, same seed, same metrics).
    datasets, data_config = {}, None
    if feed == "stream":
        datasets = {"train": ray.data.read_parquet(ingest.split_uri("train"), partitioning=None)
                    .select_columns(MODEL_COLUMNS)}
        data_config = DataConfig(datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True))
    # The controller's environment (a variable the user set wins) and its helper actors, less
    # those with nothing to do for this run (controller_setup).
    embedded = ray_embedded()
    env = controller_env(embedded=embedded, poll_s=tc.controller_poll_s)
    trainer_cls, loop, family_args = _family(tc.model.family)
    trainer_cls = lean(trainer_cls, dropped_callbacks(has_datasets=bool(datasets), embedded=embedded))
    trainer = trainer_cls(
        loop,
        # what every worker receives: objects compiled here, not JSON each worker re-validates
        train_loop_config={PLAN_KEY: LoopPlan(train=tc, spec=ingest.spec, feed=feed, rows_per_worker=rows_per_worker,
                                              use_gpu=plan.use_gpu,
                                              splits={s: ingest.split_uri(s) for s in ("train", "valid")})},
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=plan.use_gpu, resources_per_worker=plan.resources,
                                     placement_strategy=plan.strategy),
        run_config=RunConfig(
            # The filesystem object, not a URI: it carries a custom endpoint (MinIO) and credentials.
            name=run_name, storage_path=storage.path(layout.RUNS), storage_filesystem=storage.fs,
            failure_config=FailureConfig(max_failures=tc.max_failures), callbacks=callbacks or None,
            checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints, checkpoint_score_attribute="score",
                                               checkpoint_score_order="max"),
        ),
        datasets=datasets or None,
        **({"dataset_config": data_config} if data_config else {}),
        **family_args,
    )
    total = tc.model.xgboost.num_boost_round if tc.model.family == "xgboost" else tc.epochs
    try:
        with scoped_env(env), placement_groups_released(embedded), \
                follow(storage, (run_rel,), total, primary_metric(cfg.task)[0], progress):
            result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray's error types vary; keep the cause in the message
        logs = session_logs()
        raise RaylineError(f"training run {run_name} failed: {failure_line(e)} (checkpoints, if any, are under "
                           f"{storage.uri(run_rel)}; rerun to resume{'; worker logs in ' + logs if logs else ''})") from e
    fit_s = time.perf_counter() - t0
    best = result.get_best_checkpoint("score", "max") if result.checkpoint else None
    if best is None:
        raise RaylineError(f"training run {run_name} produced no checkpoint")
    file = model_file(tc.model)
    with best.as_directory() as d:
        model_bytes = Path(d, file).read_bytes()
        best_meta = CheckpointMeta.read(d)
    with result.checkpoint.as_directory() as d:
        history = CheckpointMeta.read(d).history
    metric = best_meta.metric or primary_metric(cfg.task)[0]  # the loop's name for what it watched
    storage.write_json({"history": history}, run_rel, "history.json")
    result = TrainResult(
        run_name=run_name, run_uri=storage.uri(run_rel), checkpoint_uri=best.path,
        model_bytes=model_bytes, model_file=file, history=history,
        best_epoch=best_meta.best_epoch, metric=metric, best_value=best_meta.best,
        device=plan.device, workers=plan.workers, cpus_per_worker=plan.resources["CPU"], feed=feed,
        timings_s=_timings(fit_s, started_at, history),
        precision=history[-1].get("precision", "fp32") if history else "fp32",
        feed_device=history[-1].get("feed_device", plan.device) if history else plan.device,
    )
    storage.write_json(result.to_json(), run_rel, RESULT_FILE)
    return result

