"""The per-worker loop of the xgboost family (runs inside Ray Train workers), top to bottom.

setup (load the shard) -> restore the last checkpoint if any -> boost round by round; every
`checkpoint_every` rounds: a history row, a checkpoint, a report (save) -> stop early when the
validation metric stalls. XGBoost's collective (boosted_workers) makes every worker's
histograms and evaluation metrics global, so all ranks see the same numbers, take the same
decisions, and call `ray.train.report` the same number of times.

A checkpoint holds the whole booster (to resume: the next round continues from it) and the
best round's booster (what would be registered), with the early-stopping state in meta.json
(`CheckpointMeta`, shared with the MLP loop).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

from rayline.model.metrics import primary_metric
from rayline.features.spec import MODEL_COLUMNS, Y, LabelSpec, model_inputs_from_table
from rayline.model import boosted
from rayline.model.outputs import training_target
from rayline.train.checkpoint import BOOSTER_STATE, CheckpointMeta
from rayline.train.plan import PLAN_KEY, LoopPlan
from rayline.train.shard import read_shard


# the xgboost metric watched for each task, and the primary metric it gives in user units
WATCHED = {"binary": "auc", "multiclass": "mlogloss", "regression": "rmse"}
LOSS = {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}


def _shard_arrays(uri: str, rank: int, world: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = read_shard(uri, rank, world, MODEL_COLUMNS)
    num, cat = model_inputs_from_table(t)
    return num, cat, t.column(Y).to_numpy().astype(np.float32)


def target(label: LabelSpec, y: np.ndarray) -> np.ndarray:
    """The network's training target (one definition for both families), as numpy."""
    return training_target(label, np.ascontiguousarray(y, dtype=np.float32))


def watched_metric(label: LabelSpec, primary: str) -> str:
    """With log1p the booster's RMSE is on log(1 + y): RMSLE, named so."""
    return "rmsle" if label.transform == "log1p" else primary


def to_user_units(label: LabelSpec, task: str, value: float) -> float:
    scale = label.target_scale()
    return value * scale[1] if task == "regression" and scale is not None else value


def train_loop_per_worker(config: dict) -> None:
    w = setup(config[PLAN_KEY])
    start, meta = restore(w)
    remaining = w.plan.train.model.xgboost.num_boost_round - (start.num_boosted_rounds() if start is not None else 0)
    if remaining <= 0 or _stopped(meta, w.plan.train.model.xgboost):
        return
    reporter = _Reporter(w, meta)
    # train epoch -> validate -> save, in XGBoost's terms: xgb.train boosts round by round,
    # evaluates the validation set each round (early stopping needs it), and the callback saves a
    # checkpoint every `checkpoint_every` rounds. The training loss, for the history, is evaluated
    # at each report only: evaluating the training matrix every round (its AUC sorts every row)
    # cost more than a round's boosting here.
    booster = xgb.train(w.params, w.dtrain, num_boost_round=remaining, evals=[(w.dvalid, "valid")],
                        xgb_model=start, callbacks=[reporter], verbose_eval=False)
    reporter.finish(booster)


@dataclass
class Worker:
    plan: LoopPlan
    rank: int
    world: int
    device: str
    dtrain: object
    dvalid: object
    rows: int
    params: dict
    metric: str     # the watched metric, as the loop names it (rmsle with log1p)
    mode: str


def setup(plan: LoopPlan) -> Worker:
    """This worker's shard of train and valid, as DMatrix (categories native), and the params."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if xgb.collective.get_world_size() != world:  # else each worker would boost its own shard alone
        raise RuntimeError(f"XGBoost's collective has {xgb.collective.get_world_size()} worker(s), Ray Train "
                           f"{world}: the loop must run inside boosted_workers.RabitCollective's context")
    spec = plan.spec
    metric, mode = primary_metric(spec.label.task)
    device = "cuda" if plan.use_gpu else "cpu"
    t0 = time.perf_counter()
    num, cat, y = _shard_arrays(plan.splits["train"], rank, world)
    dtrain = boosted.dmatrix(spec, num, cat, target(spec.label, y))
    vnum, vcat, vy = _shard_arrays(plan.splits["valid"], rank, world)
    dvalid = boosted.dmatrix(spec, vnum, vcat, target(spec.label, vy))
    if rank == 0:
        print(f"[rayline] {world} xgboost worker(s) on {device}, data ready in {time.perf_counter() - t0:.1f}s",
              flush=True)
    return Worker(plan, rank, world, device, dtrain, dvalid, len(y),
                  boosted.params(spec, plan.train.model.xgboost, device, plan.train.seed),
                  watched_metric(spec.label, metric), mode)


def restore(w: Worker) -> tuple[xgb.Booster | None, CheckpointMeta]:
    """The whole booster and the early-stopping state from the last checkpoint, if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return None, CheckpointMeta(metric=w.metric, best_round=0)
    with checkpoint.as_directory() as d:
        start = xgb.Booster(model_file=bytearray(Path(d, BOOSTER_STATE).read_bytes()))
        meta = CheckpointMeta.read(d).resumed()
    if w.rank == 0:
        print(f"[rayline] resumed from checkpoint at round {start.num_boosted_rounds()}", flush=True)
    return start, meta


def _eval_value(text: str, metric: str) -> float:
    """One metric from Booster.eval's line ('[0]\ttrain-logloss:0.51\ttrain-auc:0.70')."""
    for part in text.split("\t")[1:]:
        name, _, value = part.rpartition(":")
        if name.endswith(f"-{metric}"):
            return float(value)
    return float("nan")


def _stopped(meta: CheckpointMeta, xc) -> bool:
    return xc.early_stopping_rounds is not None and meta.stale >= xc.early_stopping_rounds


class _Reporter(xgb.callback.TrainingCallback):
    """XGBoost callback: early stopping on the rayline metric, history rows, checkpoints, reports."""

    def __init__(self, w: Worker, meta: CheckpointMeta):
        super().__init__()
        self.w, self.meta = w, meta
        self.spec, self.cfg = w.plan.spec, w.plan.train
        # XGBoost's histograms are fp32; with device cuda it copies the training matrix to the GPU once.
        self.run_info = {"precision": "fp32", "feed_device": w.device}
        self.last_reported, self.t = None, time.perf_counter()
        self.rounds_since = 0
        self.first_round_at = None
        self._val_loss, self._value = float("nan"), float("nan")

    def after_iteration(self, model, epoch: int, evals_log: dict) -> bool:
        task = self.spec.label.task
        rounds = model.num_boosted_rounds()
        self.rounds_since += 1
        if self.first_round_at is None:
            self.first_round_at = time.time()  # the driver reports fit() -> first round (to_first_step)
        value = to_user_units(self.spec.label, task, float(evals_log["valid"][WATCHED[task]][-1]))
        self._value = value
        self._val_loss = float(evals_log["valid"][LOSS[task]][-1])
        m = self.meta
        if m.improved(value, self.w.mode):
            m.best, m.best_round, m.stale = value, rounds, 0
        else:
            m.stale += 1
        stop = _stopped(m, self.cfg.model.xgboost)
        if stop or rounds % self.cfg.model.xgboost.checkpoint_every == 0:
            self._report(model)
        return stop

    def finish(self, booster) -> None:
        """The last rounds since the last checkpoint (training ended between two) get one too."""
        if self.last_reported != booster.num_boosted_rounds():
            self._report(booster)

    def _report(self, model) -> None:
        import ray.train

        m, w = self.meta, self.w
        rounds = model.num_boosted_rounds()
        elapsed = time.perf_counter() - self.t  # boosting and validation only: the train loss below is not in it
        train_loss = _eval_value(model.eval(w.dtrain, "train"), LOSS[self.spec.label.task])
        row = {"epoch": len(m.history) + 1, "round": rounds,
               "train_loss": train_loss, "val_loss": self._val_loss, f"val_{w.metric}": self._value,
               "epoch_time_s": round(elapsed, 3), "rounds_in_epoch": self.rounds_since,
               "train_samples_per_s": round(w.rows * w.world * self.rounds_since / max(elapsed, 1e-9), 1),
               "attempt": m.attempt, "best_round": m.best_round, **self.run_info}
        if not m.history or m.history[-1].get("attempt") != m.attempt:
            row["first_step_at"] = self.first_round_at  # this attempt's first report
        m.history.append(row)
        m.epoch = len(m.history) - 1
        metrics = {**row, "best": m.best, "score": m.score(w.mode)}
        if w.rank == 0:
            print(f"[rayline] round {rounds}/{self.cfg.model.xgboost.num_boost_round} train_loss {row['train_loss']:.4f} "
                  f"val_loss {row['val_loss']:.4f} val_{w.metric} {self._value:.4f} (best round {m.best_round})",
                  flush=True)
            with tempfile.TemporaryDirectory() as d:
                Path(d, BOOSTER_STATE).write_bytes(bytes(model.save_raw("ubj")))
                Path(d, boosted.BOOSTER).write_bytes(bytes(model[: m.best_round].save_raw("ubj")))
                m.write(d)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        self.last_reported, self.t, self.rounds_since = rounds, time.perf_counter(), 0
