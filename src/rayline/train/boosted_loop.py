"""The per-worker loop of the xgboost family (runs inside XGBoostTrainer workers), top to bottom.

load the shard -> restore the last checkpoint if any -> boost round by round; every
`checkpoint_every` rounds: a history row, a checkpoint, a report -> stop early when the
validation metric stalls. XGBoost's collective (set up by XGBoostTrainer) makes every worker's
histograms and evaluation metrics global, so all ranks see the same numbers, take the same
decisions, and call `ray.train.report` the same number of times.

A checkpoint holds the whole booster (to resume: the next round continues from it) and the
best round's booster (what would be registered), with the early-stopping state in meta.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xgboost as xgb

from rayline.config import TrainConfig
from rayline.model.metrics import primary_metric
from rayline.features.spec import MODEL_COLUMNS, Y, FeatureSpec, LabelSpec, model_inputs_from_table
from rayline.model import boosted
from rayline.model.network import training_target
from rayline.train.shard import read_shard

STATE_FILE = "state.ubj"
META_FILE = "meta.json"

# the xgboost metric watched for each task, and the primary metric it gives in user units
WATCHED = {"binary": "auc", "multiclass": "mlogloss", "regression": "rmse"}
LOSS = {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}


def _shard_arrays(uri: str, rank: int, world: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = read_shard(uri, rank, world, MODEL_COLUMNS)
    num, cat = model_inputs_from_table(t)
    return num, cat, t.column(Y).to_numpy().astype(np.float32)


def target(label: LabelSpec, y: np.ndarray) -> np.ndarray:
    """The network's training target (one definition for both families), as numpy."""
    return training_target(label, torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))).numpy()


def watched_metric(label: LabelSpec, primary: str) -> str:
    """With log1p the booster's RMSE is on log(1 + y): RMSLE, named so."""
    return "rmsle" if label.transform == "log1p" else primary


def to_user_units(label: LabelSpec, task: str, value: float) -> float:
    scale = label.target_scale()
    return value * scale[1] if task == "regression" and scale is not None else value


def train_loop_per_worker(config: dict) -> None:
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.model_validate(config["train"])
    xc = cfg.model.xgboost
    spec = FeatureSpec.from_json(config["spec"])
    task = spec.label.task
    metric, mode = primary_metric(task)
    metric = watched_metric(spec.label, metric)
    device = "cuda" if config.get("use_gpu") else "cpu"

    # ---- data: this worker's shard of train and valid, as DMatrix (categories native)
    t0 = time.perf_counter()
    num, cat, y = _shard_arrays(config["splits"]["train"], rank, world)
    dtrain = boosted.dmatrix(spec, num, cat, target(spec.label, y))
    vnum, vcat, vy = _shard_arrays(config["splits"]["valid"], rank, world)
    dvalid = boosted.dmatrix(spec, vnum, vcat, target(spec.label, vy))
    rows = len(y)
    if rank == 0:
        print(f"[rayline] {world} xgboost worker(s) on {device}, data ready in {time.perf_counter() - t0:.1f}s",
              flush=True)

    # ---- resume: the whole booster and the early-stopping state from the last checkpoint
    state = {"best": None, "best_round": 0, "stale_rounds": 0, "history": [], "attempt": 1}
    start = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            start = xgb.Booster(model_file=bytearray(Path(d, STATE_FILE).read_bytes()))
            meta = json.loads(Path(d, META_FILE).read_text())
        state.update({k: meta[k] for k in ("best", "best_round", "stale_rounds", "history")})
        state["attempt"] = meta.get("attempt", 1) + 1
        if rank == 0:
            print(f"[rayline] resumed from checkpoint at round {start.num_boosted_rounds()}", flush=True)
    done = start.num_boosted_rounds() if start is not None else 0
    remaining = xc.num_boost_round - done
    params = boosted.params(spec, xc, device, cfg.seed)
    if remaining <= 0 or _stopped(state, xc):
        return

    reporter = _Reporter(spec, cfg, metric, mode, state, rank, world, rows, device, dtrain)
    # Only the validation set is evaluated every round (early stopping needs it); the training
    # loss, for the history, is evaluated at each report. Evaluating the training matrix every
    # round (its AUC sorts every row) cost more than a round's boosting here.
    booster = xgb.train(params, dtrain, num_boost_round=remaining, evals=[(dvalid, "valid")],
                        xgb_model=start, callbacks=[reporter], verbose_eval=False)
    reporter.finish(booster)


def _eval_value(text: str, metric: str) -> float:
    """One metric from Booster.eval's line ('[0]\ttrain-logloss:0.51\ttrain-auc:0.70')."""
    for part in text.split("\t")[1:]:
        name, _, value = part.rpartition(":")
        if name.endswith(f"-{metric}"):
            return float(value)
    return float("nan")


def _stopped(state: dict, xc) -> bool:
    return xc.early_stopping_rounds is not None and state["stale_rounds"] >= xc.early_stopping_rounds


class _Reporter(xgb.callback.TrainingCallback):
    """XGBoost callback: early stopping on the rayline metric, history rows, checkpoints, reports."""

    def __init__(self, spec: FeatureSpec, cfg: TrainConfig, metric: str, mode: str, state: dict, rank: int,
                 world: int, rows: int, device: str, dtrain):
        super().__init__()
        # XGBoost's histograms are fp32; with device cuda it copies the training matrix to the GPU once.
        self.run_info = {"precision": "fp32", "feed_device": device}
        self.spec, self.cfg, self.metric, self.mode, self.state = spec, cfg, metric, mode, state
        self.rank, self.world, self.rows = rank, world, rows
        self.last_reported, self.t = None, time.perf_counter()
        self.rounds_since = 0
        self.dtrain, self.first_round_at = dtrain, None
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
        s = self.state
        improved = s["best"] is None or (value > s["best"] if self.mode == "max" else value < s["best"])
        if improved:
            s["best"], s["best_round"], s["stale_rounds"] = value, rounds, 0
        else:
            s["stale_rounds"] += 1
        stop = _stopped(s, self.cfg.model.xgboost)
        if stop or rounds % self.cfg.model.xgboost.checkpoint_every == 0:
            self._report(model)
        return stop

    def finish(self, booster) -> None:
        """The last rounds since the last checkpoint (training ended between two) get one too."""
        if self.last_reported != booster.num_boosted_rounds():
            self._report(booster)

    def _report(self, model) -> None:
        import ray.train

        s = self.state
        rounds = model.num_boosted_rounds()
        elapsed = time.perf_counter() - self.t  # boosting and validation only: the train loss below is not in it
        train_loss = _eval_value(model.eval(self.dtrain, "train"), LOSS[self.spec.label.task])
        row = {"epoch": len(s["history"]) + 1, "round": rounds,
               "train_loss": train_loss, "val_loss": self._val_loss, f"val_{self.metric}": self._value,
               "epoch_time_s": round(elapsed, 3), "rounds_in_epoch": self.rounds_since,
               "train_samples_per_s": round(self.rows * self.world * self.rounds_since / max(elapsed, 1e-9), 1),
               "attempt": s["attempt"], "best_round": s["best_round"], **self.run_info}
        if not s["history"] or s["history"][-1].get("attempt") != s["attempt"]:
            row["first_step_at"] = self.first_round_at  # this attempt's first report
        s["history"].append(row)
        best_score = s["best"] if self.mode == "max" else -s["best"]
        metrics = {**row, "best": s["best"], "score": best_score}
        if self.rank == 0:
            print(f"[rayline] round {rounds}/{self.cfg.model.xgboost.num_boost_round} train_loss {row['train_loss']:.4f} "
                  f"val_loss {row['val_loss']:.4f} val_{self.metric} {self._value:.4f} (best round {s['best_round']})",
                  flush=True)
            with tempfile.TemporaryDirectory() as d:
                Path(d, STATE_FILE).write_bytes(bytes(model.save_raw("ubj")))
                Path(d, boosted.BOOSTER).write_bytes(bytes(model[: s["best_round"]].save_raw("ubj")))
                Path(d, META_FILE).write_text(json.dumps({
                    "epoch": len(s["history"]) - 1, "best": s["best"], "best_round": s["best_round"],
                    "stale_rounds": s["stale_rounds"], "attempt": s["attempt"], "history": s["history"],
                    "metric": self.metric,
                    "metrics": row}))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        self.last_reported, self.t, self.rounds_since = rounds, time.perf_counter(), 0
