"""Training throughput: rayline's Ray Train loop vs a plain single-process PyTorch loop.

Same model (TabularNet from the same FeatureSpec), same batch size, same data (the default
config's training split, model-ready Parquet). The baseline loads the split into tensors once and
runs the textbook loop; rayline runs TorchTrainer with the configured workers and feed. Rates
are samples/s over the epochs after the first (warm-up); Ray start-up and the trainer's fixed
cost (start to first step) are reported separately. The last line is one JSON object.

    python benchmarks/train.py [--epochs 4] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pyarrow.dataset as pads  # noqa: E402
import torch  # noqa: E402

from rayline.config import load_config  # noqa: E402
from rayline.features.spec import model_inputs_from_table  # noqa: E402
from rayline.model.network import TabularNet, loss_fn  # noqa: E402
from rayline.storage import Storage  # noqa: E402


def baseline(ingest, cfg, epochs: int, device: str) -> float:
    table = pads.dataset(ingest.split_uri("train"), format="parquet", partitioning=None).to_table(columns=["x_num", "x_cat", "y"])
    num, cat = model_inputs_from_table(table)
    num, cat = torch.tensor(num, device=device), torch.tensor(cat, device=device)
    y = torch.tensor(table.column("y").to_numpy(), device=device)
    torch.manual_seed(0)
    model = TabularNet(ingest.spec, cfg.train.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    crit = loss_fn(cfg.task)
    bs, n = cfg.train.batch_size, len(y)
    rates = []
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            loss = crit(model(num[idx], cat[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip or 1e9)
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="3 epochs")
    args = ap.parse_args()
    epochs = 3 if args.quick else args.epochs
    work = Path(tempfile.mkdtemp(prefix="rayline-train-bench-"))
    try:
        import ray

        from rayline.data import run_ingest
        from rayline.runtime import configure_data_context
        from rayline.train import run_training

        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
        configure_data_context()
        startup = time.perf_counter() - t
        cfg = load_config(ROOT / "configs/flights.yaml", [f"storage.root={work}", f"train.epochs={epochs}", "train.model.family=mlp",
                                                          f"train.num_workers={args.workers}", "train.early_stopping_patience=null"])
        storage = Storage(cfg.storage.root)
        ingest = run_ingest(cfg, storage)
        t = time.perf_counter()
        result = run_training(cfg, ingest, storage, run_name="bench", fresh=True)
        fit_s = time.perf_counter() - t
        device = result.device
        hist = result.history
        rl_rates = [h["train_samples_per_s"] for h in hist[1:]] or [hist[0]["train_samples_per_s"]]
        rayline_rate = statistics.median(rl_rates)
        fixed = fit_s - sum(h["epoch_time_s"] for h in hist)
        ray.shutdown()
        torch.set_num_threads(os.cpu_count() or 1)
        base_rate = baseline(ingest, cfg, epochs, device)
        print(f"{'loop':<28}{'samples/s':>12}")
        print(f"{'rayline (' + str(args.workers) + ' workers, ' + result.feed + ')':<28}{rayline_rate:>12,.0f}")
        print(f"{'plain PyTorch (1 process)':<28}{base_rate:>12,.0f}")
        print(f"ray start-up {startup:.1f}s; trainer fixed cost (fit wall time minus epochs) {fixed:.1f}s")
        print(json.dumps({"name": "train", "rayline_samples_per_s": round(rayline_rate), "baseline_samples_per_s": round(base_rate),
                          "ratio": round(rayline_rate / base_rate, 3), "device": device, "workers": args.workers,
                          "feed": result.feed, "ray_startup_s": round(startup, 2), "trainer_fixed_s": round(fixed, 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
