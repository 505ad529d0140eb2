"""The per-worker training loop of the MLP family (runs inside Ray Train workers), top to bottom:

    setup -> restore -> for each epoch: train_epoch -> validate -> save (checkpoint + report)

Every rank takes the same decisions (they all see the same gathered validation metrics), so
all ranks call `ray.train.report` the same number of times.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from rayline.config import TrainConfig
from rayline.model.metrics import primary_metric, task_metrics
from rayline.features.spec import FeatureSpec
from rayline.model.artifact import WEIGHTS, weights_to_bytes
from rayline.model.network import TabularNet, loss_fn
from rayline.model.outputs import from_raw, training_target
from rayline.train.checkpoint import MLP_STATE, CheckpointMeta
from rayline.train.feed import MemoryFeed, StreamFeed
from rayline.train.plan import PLAN_KEY, LoopPlan
from rayline.train.shard import read_shard


@dataclass
class Worker:
    """One rank's training objects, built by `setup`."""

    plan: LoopPlan
    rank: int
    world: int
    device: torch.device
    train_feed: object
    valid_feed: MemoryFeed
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    criterion: object
    amp: bool
    nodes: list
    metric: str
    mode: str

    @property
    def cfg(self) -> TrainConfig:
        return self.plan.train

    @property
    def spec(self) -> FeatureSpec:
        return self.plan.spec


def train_loop_per_worker(config: dict) -> dict:
    w = setup(config[PLAN_KEY])
    meta = restore(w)
    first = meta.epoch + 1
    for epoch in range(first, w.cfg.epochs):
        t = time.perf_counter()
        train_loss, samples, train_s, first_step_at = train_epoch(w, epoch)
        y, p, val_loss = validate(w)
        row, stop = record(w, meta, epoch, y, p, train_loss, val_loss, samples, train_s, time.perf_counter() - t)
        if epoch == first and first_step_at is not None:
            row["first_step_at"] = first_step_at  # the driver reports fit() -> this attempt's first step
        save(w, meta, row)
        if stop:
            if w.rank == 0:
                print(f"[rayline] early stop: val_{w.metric} did not improve for {meta.stale} epoch(s)", flush=True)
            break
    return {"history": meta.history, "best": meta.best, "metric": w.metric}


def worker_batch(global_batch: int, world: int) -> int:
    """Rows per worker and step: `train.batch_size` is the global batch, so auto-sized runs on one
    node or on four take the same optimiser steps (what the learning rate was tuned for)."""
    return max(1, -(-global_batch // world))


def setup(plan: LoopPlan) -> Worker:
    """Seeds, this rank's data (its shard loaded once when it fits, else streamed every epoch),
    the model, the optimiser and the schedule."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg, spec = plan.train, plan.spec
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    t0 = time.perf_counter()
    train_seed = cfg.seed + 1000 * rank
    batch = worker_batch(cfg.batch_size, world)
    if plan.feed == "memory":
        train_feed = MemoryFeed(read_shard(plan.splits["train"], rank, world), batch, device, seed=train_seed)
    else:
        train_feed = StreamFeed(ray.train.get_dataset_shard("train"), batch, device, seed=train_seed)
    valid_feed = MemoryFeed(read_shard(plan.splits["valid"], rank, world), 8192, device, seed=0)
    steps = train_feed.steps_per_epoch(plan.rows_per_worker)
    nodes = _gather(ray.get_runtime_context().get_node_id())  # where the ranks run (recorded in history)
    if rank == 0:
        print(f"[rayline] {world} worker(s) on {device}, feed={plan.feed}, {steps} steps/epoch of {batch} rows, "
              f"data ready in {time.perf_counter() - t0:.1f}s", flush=True)
    model = ray.train.torch.prepare_model(TabularNet(spec, cfg.model))
    optimizer = _optimizer(cfg, model, device)
    metric, mode = primary_metric(spec.label.task)
    return Worker(plan, rank, world, device, train_feed, valid_feed, model, optimizer,
                  _scheduler(cfg, optimizer, steps), loss_fn(spec.label.task),
                  device.type == "cuda" and torch.cuda.is_bf16_supported(), nodes, metric, mode)


def restore(w: Worker) -> CheckpointMeta:
    """After a worker failure or a driver restart: continue from the last checkpoint."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return CheckpointMeta(metric=w.metric)
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / MLP_STATE, map_location="cpu", weights_only=True)
        meta = CheckpointMeta.read(d).resumed()
    _unwrap(w.model).load_state_dict(state["model"])
    w.optimizer.load_state_dict(state["optimizer"])
    w.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if w.rank == 0:
        print(f"[rayline] resumed from checkpoint of epoch {meta.epoch + 1}", flush=True)
    return meta


def train_epoch(w: Worker, epoch: int) -> tuple[float, int, float, float | None]:
    """One pass over this rank's shard: (mean loss over all ranks, samples on this rank, seconds,
    wall clock of the first step)."""
    t = time.perf_counter()
    w.model.train()
    total = torch.zeros((), device=w.device)
    count, first_step_at = 0, None
    for num, cat, y in w.train_feed.epoch(epoch):
        with torch.autocast(device_type=w.device.type, dtype=torch.bfloat16, enabled=w.amp):
            out = w.model(num, cat)
        loss = w.criterion(out.float(), training_target(w.spec.label, y))
        w.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if w.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(w.model.parameters(), w.cfg.grad_clip)
        w.optimizer.step()
        w.scheduler.step()
        if first_step_at is None:
            first_step_at = time.time()
        total += loss.detach() * len(y)  # no host sync per step
        count += len(y)
    return _mean_across_ranks(total, count, w.device), count, time.perf_counter() - t, first_step_at


def record(w: Worker, meta: CheckpointMeta, epoch: int, y: np.ndarray, p: np.ndarray, train_loss: float,
           val_loss: float, samples: int, train_s: float, epoch_s: float) -> tuple[dict, bool]:
    """The epoch's history row and the early-stopping state: (row, stop?)."""
    cfg = w.cfg
    scores = task_metrics(w.spec.label.task, y, p, cfg.model.threshold)
    value = scores[w.metric]
    improved = meta.improved(value, w.mode)
    meta.best, meta.stale = (value, 0) if improved else (meta.best, meta.stale + 1)
    meta.epoch = epoch
    row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, f"val_{w.metric}": value,
           "epoch_time_s": round(epoch_s, 3), "train_samples_per_s": round(samples * w.world / max(train_s, 1e-9), 1),
           "lr": w.scheduler.get_last_lr()[0], "attempt": meta.attempt, "nodes": w.nodes,
           "precision": "bf16" if w.amp else "fp32",
           # where the training batches live: the in-memory shard sits on the device; a streamed
           # one is copied from the host every step
           "feed_device": w.device.type if w.plan.feed == "memory" else "host"}
    if w.spec.label.task == "binary":
        row["val_accuracy"] = scores["accuracy"]
    meta.history.append(row)
    if w.rank == 0:
        print(f"[rayline] epoch {epoch + 1}/{cfg.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
              f"val_{w.metric} {value:.4f} ({row['epoch_time_s']:.1f}s, {row['train_samples_per_s']:,.0f} samples/s)"
              + (" *" if improved else ""), flush=True)
    stop = cfg.early_stopping_patience is not None and meta.stale >= cfg.early_stopping_patience
    return row, stop


def save(w: Worker, meta: CheckpointMeta, row: dict) -> None:
    """Report the epoch; rank 0 attaches the checkpoint (the model as registered, the state to
    resume from, the meta)."""
    import ray.train

    # this epoch's score (not the best so far): Ray Train ranks the checkpoints by it, and the
    # best one is what gets registered
    value = row[f"val_{w.metric}"]
    metrics = {**row, "best": meta.best, "score": value if w.mode == "max" else -value}
    if w.rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save({"model": _unwrap(w.model).state_dict(), "optimizer": w.optimizer.state_dict(),
                    "scheduler": w.scheduler.state_dict(), "rng": torch.get_rng_state()}, Path(d) / MLP_STATE)
        Path(d, WEIGHTS).write_bytes(weights_to_bytes(w.model))
        meta.write(d)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def optimizer_options(device_type: str) -> dict:
    """On CUDA the fused kernels update every parameter in one launch per step (the textbook
    `foreach` path launches several per parameter group); on CPU torch's default."""
    return {"fused": True} if device_type == "cuda" else {}


def _optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params, extra = model.parameters(), optimizer_options(device.type)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, **extra)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def _scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else max(0.0, 1 - progress)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _gather(obj) -> list:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def _mean_across_ranks(total: torch.Tensor, count: int, device) -> float:
    stats = torch.stack([total.float(), torch.tensor(float(count), device=device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    return float(stats[0] / max(stats[1].item(), 1))


@torch.no_grad()
def validate(w: Worker) -> tuple[np.ndarray, np.ndarray, float]:
    """Predictions of every rank gathered, so each rank computes identical metrics (in the
    target's original units; the loss in the units the network learns)."""
    w.model.eval()
    label = w.spec.label
    ys, ps, total, n = [], [], 0.0, 0
    for num, cat, y in w.valid_feed.epoch(0, shuffle=False):
        with torch.autocast(device_type=w.device.type, dtype=torch.bfloat16, enabled=w.amp):
            out = w.model(num, cat)
        total += float(w.criterion(out.float(), training_target(label, y))) * len(y)
        n += len(y)
        ys.append(y.cpu().numpy())
        ps.append(from_raw(label, out.float().cpu().numpy()))
    local = (np.concatenate(ys) if ys else np.zeros(0), np.concatenate(ps) if ps else np.zeros(0), total, n)
    gathered = _gather(local)
    y = np.concatenate([g[0] for g in gathered])
    p = np.concatenate([g[1] for g in gathered])
    loss = sum(g[2] for g in gathered) / max(1, sum(g[3] for g in gathered))
    return y, p, loss
