"""The per-worker training loop (runs inside Ray Train workers), read top to bottom.

setup -> restore from the last checkpoint if any -> for each epoch: train, validate on all
ranks' predictions, checkpoint, report -> stop early when the validation metric stalls.
Every rank takes the same decisions (they all see the same gathered validation metrics), so
all ranks call `ray.train.report` the same number of times.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from rayline.config import TrainConfig
from rayline.model.metrics import primary_metric, task_metrics
from rayline.features.spec import FeatureSpec
from rayline.model.artifact import WEIGHTS, weights_to_bytes
from rayline.model.network import TabularNet, loss_fn, predict_from_output, training_target
from rayline.train.feed import MemoryFeed, StreamFeed
from rayline.train.shard import read_shard

STATE_FILE = "state.pt"
WEIGHTS_FILE = WEIGHTS  # the registry file name: a checkpoint holds the model as registered
META_FILE = "meta.json"


def train_loop_per_worker(config: dict) -> dict:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.model_validate(config["train"])
    spec = FeatureSpec.from_json(config["spec"])
    task = spec.label.task
    metric, mode = primary_metric(task)
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)

    # ---- data: load the shard once when it fits, else stream it every epoch
    t0 = time.perf_counter()
    splits, train_seed = config["splits"], cfg.seed + 1000 * rank
    if config["feed"] == "memory":
        train_feed = MemoryFeed(read_shard(splits["train"], rank, world), cfg.batch_size, device, seed=train_seed)
    else:
        train_feed = StreamFeed(ray.train.get_dataset_shard("train"), cfg.batch_size, device, seed=train_seed)
    valid_feed = MemoryFeed(read_shard(splits["valid"], rank, world), 8192, device, seed=0)
    steps = train_feed.steps_per_epoch(config["train_rows_per_worker"])
    nodes = _gather(ray.get_runtime_context().get_node_id())  # where the ranks run (recorded in history)
    if rank == 0:
        print(f"[rayline] {world} worker(s) on {device}, feed={config['feed']}, {steps} steps/epoch, "
              f"data ready in {time.perf_counter() - t0:.1f}s", flush=True)

    # ---- model, optimiser, schedule
    model = ray.train.torch.prepare_model(TabularNet(spec, cfg.model))
    optimizer = _optimizer(cfg, model, device)
    scheduler = _scheduler(cfg, optimizer, steps)
    criterion = loss_fn(task)
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()

    # ---- resume: after a worker failure or a driver restart, continue from the last checkpoint
    start_epoch, best, stale, history, attempt = 0, None, 0, [], 1
    first_step_at = None  # wall clock of this attempt's first step: the driver reports fit() -> first step
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
            meta = json.loads((Path(d) / META_FILE).read_text())
        getattr(model, "module", model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best, stale, history = meta["epoch"] + 1, meta["best"], meta["stale"], meta["history"]
        attempt = meta.get("attempt", 1) + 1  # counts (re)starts: a resumed run never redoes finished epochs
        if rank == 0:
            print(f"[rayline] resumed from checkpoint of epoch {meta['epoch'] + 1}", flush=True)

    for epoch in range(start_epoch, cfg.epochs):
        t = time.perf_counter()
        model.train()
        total = torch.zeros((), device=device)
        count = 0
        for num, cat, y in train_feed.epoch(epoch):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(num, cat)
            loss = criterion(out.float(), training_target(spec.label, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if first_step_at is None:
                first_step_at = time.time()
            total += loss.detach() * len(y)  # no host sync per step
            count += len(y)
        train_loss = _mean_across_ranks(total, count, device)
        train_time = time.perf_counter() - t

        y_val, p_val, val_loss = _validate(model, valid_feed, criterion, spec.label, device, amp)
        scores = task_metrics(task, y_val, p_val, cfg.model.threshold)
        value = scores[metric]
        improved = best is None or (value > best if mode == "max" else value < best)
        best, stale = (value, 0) if improved else (best, stale + 1)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
               f"val_{metric}": value, "epoch_time_s": round(time.perf_counter() - t, 3),
               "train_samples_per_s": round(count * world / max(train_time, 1e-9), 1), "lr": scheduler.get_last_lr()[0],
               "attempt": attempt, "nodes": nodes, "precision": "bf16" if amp else "fp32",
               # where the training batches live: the in-memory shard sits on the device; a streamed
               # one is copied from the host every step
               "feed_device": device.type if config["feed"] == "memory" else "host"}
        if epoch == start_epoch and first_step_at is not None:
            row["first_step_at"] = first_step_at
        if task == "binary":
            row["val_accuracy"] = scores["accuracy"]
        history.append(row)
        metrics = {**row, "best": best, "score": value if mode == "max" else -value}
        stop = cfg.early_stopping_patience is not None and stale >= cfg.early_stopping_patience

        if rank == 0:
            print(f"[rayline] epoch {epoch + 1}/{cfg.epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                  f"val_{metric} {value:.4f} ({row['epoch_time_s']:.1f}s, {row['train_samples_per_s']:,.0f} samples/s)"
                  + (" *" if improved else ""), flush=True)
            with tempfile.TemporaryDirectory() as d:
                torch.save({"model": getattr(model, "module", model).state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()}, Path(d) / STATE_FILE)
                Path(d, WEIGHTS_FILE).write_bytes(weights_to_bytes(model))
                Path(d, META_FILE).write_text(json.dumps({"epoch": epoch, "best": best, "stale": stale, "attempt": attempt,
                                                          "history": history, "metrics": row}))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        if stop:
            if rank == 0:
                print(f"[rayline] early stop: val_{metric} did not improve for {stale} epoch(s)", flush=True)
            break
    return {"history": history, "best": best, "metric": metric}


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
def _validate(model, feed, criterion, label, device, amp) -> tuple[np.ndarray, np.ndarray, float]:
    """Predictions of every rank gathered, so each rank computes identical metrics (in the
    target's original units; the loss in the units the network learns)."""
    model.eval()
    ys, ps, total, n = [], [], 0.0, 0
    for num, cat, y in feed.epoch(0, shuffle=False):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(num, cat)
        total += float(criterion(out.float(), training_target(label, y))) * len(y)
        n += len(y)
        ys.append(y.cpu().numpy())
        ps.append(predict_from_output(label, out).cpu().numpy())
    local = (np.concatenate(ys) if ys else np.zeros(0), np.concatenate(ps) if ps else np.zeros(0), total, n)
    gathered = _gather(local)
    y = np.concatenate([g[0] for g in gathered])
    p = np.concatenate([g[1] for g in gathered])
    loss = sum(g[2] for g in gathered) / max(1, sum(g[3] for g in gathered))
    return y, p, loss
