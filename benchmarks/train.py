"""Training throughput: rayline's Ray Train loop vs plain PyTorch DDP doing the same work.

Like for like: the same number of processes (Ray Train workers vs `torch.distributed`
processes, gloo on CPU, NCCL on GPU), the same threads per process (Ray gives a worker with
`cpus_per_worker` < 1 one thread; the baseline sets the same), the same shards (each process
reads its contiguous share of the training split with rayline's `read_shard`), the same model
(TabularNet from the same FeatureSpec), batch size, optimizer (AdamW: on GPUs rayline steps it
with torch's fused kernels, the baseline is the textbook loop), gradient clipping and precision
(bf16 autocast on GPUs that support it, on both sides). Rates are samples/s over the epochs after
the first; each side runs --repeats times in one run and the median and range are printed. The
trainer's fixed cost (fit() wall time minus epoch time) and the time from fit() to the first step
are reported separately. The last line is one JSON object: ratio (median of the per-repeat
ratios), ratio_min, ratio_max, device, to_first_step_s, and on GPUs each side's mean GPU busy %
during its epochs (nvidia-smi).

    python benchmarks/train.py [--epochs 4] [--workers N] [--repeats 3] [--quick]

`--family xgboost`: rayline's XGBoost (Ray Train workers, its loop, reports and
checkpoints) against one `xgboost.train` process with the same total threads, the same
model-ready files, the same parameters and a fixed number of rounds (no early stopping), each
evaluating the validation split every round. Seconds per round are boosting time over rounds
(rayline: its reports' round windows; plain: the train call); the ratio is plain / rayline (1.0:
as fast as one plain process). Both boosters are scored on the test split (AUC) at the same round:
the one rayline registers (its best validation round). The last line:
{"name": "train_xgboost", "ratio", "ratio_min", "ratio_max", "rayline_s_per_round",
"plain_s_per_round", "to_first_round_s", "auc_rayline", "auc_plain", ...}.

    python benchmarks/train.py --family xgboost [--rounds 300] [--workers N] [--cpus-per-worker C] [--repeats 3] [--quick]

`--family xgboost --nodes N`: what more nodes buy. N local Ray nodes of one CPU each (`ray start`
on this machine, stopped by PID), rayline's default sizes (one worker per node) on the whole
training split, against one single-threaded process on one worker's share (weak-scaling
efficiency, 1.0: a node more costs nothing per round) and on the whole split (the speed-up).
Last line: {"name": "train_xgboost_scaling", "weak_efficiency", "speedup", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from rayline.config import load_config  # noqa: E402
from rayline.runtime import free_port, stop_processes  # noqa: E402
from rayline.storage import Storage  # noqa: E402


def _ddp_process(rank: int, world: int, port: int, uri: str, spec_json: str, train_json: str, epochs: int,
                 use_cuda: bool, threads: int, out) -> None:
    """One plain-PyTorch DDP process: its share of the split in memory, the textbook loop."""
    import numpy as np
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from rayline.config import TrainConfig
    from rayline.features.spec import FeatureSpec, model_inputs_from_table
    from rayline.model.network import TabularNet, loss_fn
    from rayline.model.outputs import training_target
    from rayline.train.shard import read_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    dev = torch.device(f"cuda:{rank}" if use_cuda else "cpu")
    cfg, spec = TrainConfig.model_validate_json(train_json), FeatureSpec.from_json(spec_json)
    table = read_shard(uri, rank, world)
    num, cat = model_inputs_from_table(table)
    num, cat = torch.tensor(num, device=dev), torch.tensor(cat, device=dev)
    y = torch.tensor(table.column("y").to_numpy(), device=dev)
    torch.manual_seed(cfg.seed + rank)
    model = TabularNet(spec, cfg.model).to(dev)
    model = DDP(model, device_ids=[rank] if use_cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    crit = loss_fn(spec.label.task)
    amp = use_cuda and torch.cuda.is_bf16_supported()
    bs, n = cfg.batch_size, len(y)
    rates, window = [], [time.time(), 0.0]
    for _ in range(epochs):
        dist.barrier()
        t = time.perf_counter()
        perm = torch.randperm(n, device=dev)
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                out_ = model(num[idx], cat[idx])
            loss = crit(out_.float(), training_target(spec.label, y[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        if use_cuda:
            torch.cuda.synchronize()
        dist.barrier()
        rates.append(n * world / (time.perf_counter() - t))
    window[1] = time.time()
    if rank == 0:
        out.put((float(np.median(rates[1:] if len(rates) > 1 else rates)), tuple(window)))
    dist.destroy_process_group()


def ddp_baseline(ingest, cfg, epochs: int, workers: int, use_cuda: bool, threads: int) -> tuple[float, tuple]:
    """(samples/s, wall-clock window of its epochs)."""
    ctx = torch.multiprocessing.get_context("spawn")
    q = ctx.Queue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [ctx.Process(target=_ddp_process, args=(r, workers, port, ingest.split_uri("train"), ingest.spec.to_json(),
                                                   cfg.train.model_dump_json(), epochs, use_cuda, threads, q))
             for r in range(workers)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 1800
    while True:  # a process that dies (an import error, gloo) fails the run now, not after the timeout
        try:
            result = q.get(timeout=5)
            break
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"DDP baseline failed: process exit codes {dead or 'none (timed out)'}")
    for p in procs:
        p.join(timeout=60)
    return result


def _median_or_none(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 1) if xs else None


class GpuBusy:
    """GPU utilisation from `nvidia-smi` every 100 ms while the benchmark runs (none without it);
    `mean(start, end)`: the mean busy % of GPUs 0..n-1 over a wall-clock window."""

    def __init__(self, gpus: int):
        self.gpus, self.samples, self.proc = gpus, [], None
        if gpus and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", f"--id={','.join(map(str, range(gpus)))}", "-lms", "100",
                                          "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                         stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        tick = []
        for line in self.proc.stdout:
            if line.strip().isdigit():
                tick.append(float(line))
            if len(tick) == self.gpus:
                self.samples.append((time.time(), sum(tick) / self.gpus))
                tick = []

    def mean(self, start: float, end: float) -> float | None:
        xs = [u for t, u in self.samples if start <= t <= end]
        return round(sum(xs) / len(xs), 1) if xs else None

    def close(self) -> None:
        if self.proc:
            self.proc.terminate()


def _split_arrays(ingest, split: str):
    from rayline.features.spec import model_inputs_from_table
    from rayline.train.shard import read_shard

    t = read_shard(ingest.split_uri(split), 0, 1, ["x_num", "x_cat", "y"])
    num, cat = model_inputs_from_table(t)
    return num, cat, t.column("y").to_numpy()


def _test_auc(ingest, booster) -> float:
    from sklearn.metrics import roc_auc_score

    from rayline.model import boosted

    num, cat, y = _split_arrays(ingest, "test")
    return float(roc_auc_score(y, boosted.margins(booster, num, cat)))


def plain_xgboost(ingest, cfg, rounds: int, threads: int) -> tuple[float, object]:
    """(seconds per round, booster): one process, `threads` threads, validation evaluated each round."""
    import xgboost as xgb

    from rayline.model import boosted
    from rayline.train.boosted_loop import target

    spec = ingest.spec
    num, cat, y = _split_arrays(ingest, "train")
    vnum, vcat, vy = _split_arrays(ingest, "valid")
    dtrain = boosted.dmatrix(spec, num, cat, target(spec.label, y))
    dvalid = boosted.dmatrix(spec, vnum, vcat, target(spec.label, vy))
    params = {**boosted.params(spec, cfg.train.model.xgboost, "cpu", cfg.train.seed), "nthread": threads}
    t = time.perf_counter()
    booster = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")], verbose_eval=False)
    return (time.perf_counter() - t) / rounds, booster


def xgboost_main(args) -> None:
    rounds = 150 if args.quick else args.rounds
    work = Path(tempfile.mkdtemp(prefix="rayline-xgb-bench-"))
    try:
        import ray

        from rayline.data import run_ingest
        from rayline.model import boosted
        from rayline.runtime import configure_data_context
        from rayline.train import run_training

        from rayline.runtime import embedded_env
        os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
        ray.init(num_cpus=os.cpu_count(), include_dashboard=True, logging_level="ERROR", log_to_driver=False)
        configure_data_context(progress_bars=False)
        cfg = load_config(ROOT / "configs/flights.yaml", [
            f"storage.root={work}", "train.model.family=xgboost",
            *([f"train.num_workers={args.workers}"] if args.workers else []),
            *([f"train.cpus_per_worker={args.cpus_per_worker}"] if args.cpus_per_worker else []),
            f"train.model.xgboost.num_boost_round={rounds}", "train.model.xgboost.early_stopping_rounds=null"])
        storage = Storage(cfg.storage.root)
        ingest = run_ingest(cfg, storage)
        rl, first, auc_rl, workers, cpus = [], [], None, 0, 0.0
        for i in range(args.repeats):
            result = run_training(cfg, ingest, storage, run_name=f"xgb-bench-{i}", fresh=True)
            hist = result.history
            rl.append(sum(h["epoch_time_s"] for h in hist) / sum(h.get("rounds_in_epoch", 0) for h in hist))
            first.append(result.timings_s.get("to_first_step"))
            auc_rl = _test_auc(ingest, boosted.load(result.model_bytes))  # its best validation round
            best_round, workers, cpus = result.best_epoch, result.workers, result.cpus_per_worker
        ray.shutdown()
        # the same total threads: each Ray Train worker runs XGBoost with its OMP_NUM_THREADS
        # (max(1, floor(cpus_per_worker)), as planned: auto sizes resolve at the start of the run)
        threads = workers * max(1, int(cpus))
        plain = [plain_xgboost(ingest, cfg, rounds, threads) for _ in range(args.repeats)]
        base = [s for s, _ in plain]
        auc_plain = _test_auc(ingest, plain[-1][1][:best_round])  # the same rounds as rayline's registered booster
        ratios = [b / r for b, r in zip(base, rl)]
        print(f"{'xgboost, ' + str(rounds) + ' rounds, ' + str(threads) + ' threads in all':<44}{'s/round median (range)':>26}")
        print(f"{'rayline (' + str(workers) + ' Ray Train workers)':<44}{statistics.median(rl):>12.4f}  "
              f"({min(rl):.4f}-{max(rl):.4f})")
        print(f"{'one xgboost.train process':<44}{statistics.median(base):>12.4f}  ({min(base):.4f}-{max(base):.4f})")
        print(f"ratio (plain / rayline) per repeat: {', '.join(f'{r:.3f}' for r in ratios)}; test AUC at rayline's best "
              f"validation round ({best_round}): rayline {auc_rl:.4f}, plain {auc_plain:.4f}; fit() to the first round "
              f"{statistics.median(first):.1f}s")
        print(json.dumps({"name": "train_xgboost", "ratio": round(statistics.median(ratios), 3),
                          "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                          "rayline_s_per_round": round(statistics.median(rl), 5),
                          "plain_s_per_round": round(statistics.median(base), 5),
                          "to_first_round_s": round(statistics.median(first), 2), "auc_rayline": round(auc_rl, 4),
                          "auc_plain": round(auc_plain, 4), "auc_round": best_round, "rounds": rounds, "workers": workers,
                          "threads": threads, "cpus_per_worker": cpus,
                          "repeats": args.repeats}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


class LocalCluster:
    """`nodes` Ray nodes of `cpus` each on this machine (`ray start`, a temp dir of its own, token
    auth), stopped by PID: never the stop-everything command. Nodes on one host share its cores
    and memory bandwidth, so this measures the collective across raylets, not across a network."""

    def __init__(self, nodes: int, cpus: int):
        self.nodes, self.cpus, self.port = nodes, cpus, free_port()
        self.temp = tempfile.mkdtemp(prefix="rl-bench-", dir="/tmp")  # Ray's socket paths must be short
        token = Path(self.temp, "auth_token")  # the cluster's own token (0600), never ~/.ray/auth_token
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_hex(32).encode())
        os.close(fd)
        self.env = {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(token)}
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ.update(self.env)  # the driver too: Ray reads the auth mode once, before ray is imported
        self.ray = str(Path(sys.executable).parent / "ray")

    def __enter__(self) -> str:
        ports = [f"--dashboard-port={free_port()}", f"--metrics-export-port={free_port()}",
                 f"--ray-client-server-port={free_port()}"]
        subprocess.run([self.ray, "start", "--head", f"--temp-dir={self.temp}", f"--port={self.port}",
                        "--dashboard-host=127.0.0.1", f"--num-cpus={self.cpus}", "--disable-usage-stats", *ports],
                       check=True, capture_output=True, text=True, timeout=120, env=self.env)
        for _ in range(self.nodes - 1):
            subprocess.run([self.ray, "start", f"--address=127.0.0.1:{self.port}", f"--num-cpus={self.cpus}",
                            f"--metrics-export-port={free_port()}", "--disable-usage-stats"],
                           check=True, capture_output=True, text=True, timeout=120, env=self.env)
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        import psutil

        procs = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if self.temp in cmd or f"127.0.0.1:{self.port}" in cmd:
                try:
                    procs += [p, *p.children(recursive=True)]
                except psutil.Error:
                    pass
        stop_processes(procs)
        shutil.rmtree(self.temp, ignore_errors=True)


def weak_scaling_main(args) -> None:
    """rayline's default sizes (one worker per node) on `--nodes` local nodes of one CPU each,
    the whole training split, against one plain process with one thread on one worker's share
    (weak scaling: the same work per core; 1.0 = a node more costs nothing per round) and on the
    whole split (the speed-up the nodes buy)."""
    cluster = LocalCluster(args.nodes, 1)
    import ray
    import xgboost as xgb

    from rayline.data import run_ingest
    from rayline.features.spec import model_inputs_from_table
    from rayline.model import boosted
    from rayline.runtime import configure_data_context
    from rayline.train import run_training
    from rayline.train.boosted_loop import target
    from rayline.train.shard import read_shard

    rounds = 150 if args.quick else args.rounds
    work = Path(tempfile.mkdtemp(prefix="rayline-xgb-scale-"))
    try:
        with cluster as address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            configure_data_context(progress_bars=False)
            cfg = load_config(ROOT / "configs/flights.yaml", [
                f"storage.root={work}", "train.model.family=xgboost", f"train.model.xgboost.num_boost_round={rounds}",
                "train.model.xgboost.early_stopping_rounds=null"])
            storage = Storage(cfg.storage.root)
            ingest = run_ingest(cfg, storage)
            rl, workers = [], 0
            for i in range(args.repeats):
                result = run_training(cfg, ingest, storage, run_name=f"xgb-scale-{i}", fresh=True)
                hist = result.history
                rl.append(sum(h["epoch_time_s"] for h in hist) / sum(h.get("rounds_in_epoch", 0) for h in hist))
                workers = result.workers
            ray.shutdown()
        spec = ingest.spec
        params = {**boosted.params(spec, cfg.train.model.xgboost, "cpu", cfg.train.seed), "nthread": 1}

        def plain(rank: int, world: int) -> float:
            def dm(split):
                t = read_shard(ingest.split_uri(split), rank, world, ["x_num", "x_cat", "y"])
                num, cat = model_inputs_from_table(t)
                return boosted.dmatrix(spec, num, cat, target(spec.label, t.column("y").to_numpy()))
            dtrain, dvalid = dm("train"), dm("valid")
            t = time.perf_counter()
            xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")], verbose_eval=False)
            return (time.perf_counter() - t) / rounds

        share = [plain(0, workers) for _ in range(args.repeats)]
        whole = [plain(0, 1) for _ in range(args.repeats)]
        weak = [s / r for s, r in zip(share, rl)]
        speedup = [w / r for w, r in zip(whole, rl)]
        print(f"xgboost, {rounds} rounds, {args.nodes} local nodes x 1 CPU        s/round median (range)")
        print(f"rayline ({workers} workers, one per node, whole split)   {statistics.median(rl):.4f}  ({min(rl):.4f}-{max(rl):.4f})")
        print(f"one process, 1 thread, one worker's share      {statistics.median(share):.4f}")
        print(f"one process, 1 thread, whole split             {statistics.median(whole):.4f}")
        print(f"weak-scaling efficiency {statistics.median(weak):.3f}; speed-up over one core {statistics.median(speedup):.2f}x")
        print(json.dumps({"name": "train_xgboost_scaling", "nodes": args.nodes, "workers": workers,
                          "weak_efficiency": round(statistics.median(weak), 3),
                          "speedup": round(statistics.median(speedup), 3),
                          "rayline_s_per_round": round(statistics.median(rl), 5),
                          "plain_share_s_per_round": round(statistics.median(share), 5),
                          "plain_whole_s_per_round": round(statistics.median(whole), 5), "rounds": rounds,
                          "repeats": args.repeats}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):>12,.0f}  ({min(xs):,.0f}-{max(xs):,.0f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None,
                    help="train.num_workers (default: the config's, auto: one worker per node with its free cores)")
    ap.add_argument("--cpus-per-worker", type=float, default=None,
                    help="train.cpus_per_worker (default: the config's); e.g. --workers 2 --cpus-per-worker 0.5: "
                         "two single-threaded workers on one node (the distributed path, all-reduces included)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3 epochs (xgboost: 150 rounds)")
    ap.add_argument("--family", choices=["mlp", "xgboost"], default="mlp")
    ap.add_argument("--rounds", type=int, default=300, help="xgboost: boosting rounds, fixed")
    ap.add_argument("--nodes", type=int, default=0,
                    help="xgboost: weak scaling on this many local Ray nodes of one CPU each (the default sizes: one "
                         "worker per node) against one single-threaded process")
    args = ap.parse_args()
    if args.family == "xgboost" and args.nodes:
        return weak_scaling_main(args)
    if args.family == "xgboost":
        return xgboost_main(args)
    epochs = 3 if args.quick else args.epochs
    work = Path(tempfile.mkdtemp(prefix="rayline-train-bench-"))
    try:
        import ray

        from rayline.data import run_ingest
        from rayline.runtime import configure_data_context
        from rayline.train import run_training

        t = time.perf_counter()
        from rayline.runtime import embedded_env
        os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
        ray.init(num_cpus=os.cpu_count(), include_dashboard=True, logging_level="ERROR", log_to_driver=False)
        configure_data_context(progress_bars=False)
        startup = time.perf_counter() - t
        cfg = load_config(ROOT / "configs/flights.yaml", [f"storage.root={work}", f"train.epochs={epochs}", "train.model.family=mlp",
                                                          *([f"train.num_workers={args.workers}"] if args.workers else []),
                                                          "train.early_stopping_patience=null",
                                                          *([f"train.cpus_per_worker={args.cpus_per_worker}"]
                                                            if args.cpus_per_worker else [])])
        storage = Storage(cfg.storage.root)
        ingest = run_ingest(cfg, storage)
        rl, fixed, first, rl_busy, device, feed = [], [], [], [], "cpu", ""
        gpu = GpuBusy(min(args.workers or torch.cuda.device_count(), torch.cuda.device_count()))
        for i in range(args.repeats):
            t = time.perf_counter()
            result = run_training(cfg, ingest, storage, run_name=f"bench-{i}", fresh=True)
            fit_s = time.perf_counter() - t
            hist = result.history
            rl.append(statistics.median([h["train_samples_per_s"] for h in hist[1:]] or [hist[0]["train_samples_per_s"]]))
            fixed.append(fit_s - sum(h["epoch_time_s"] for h in hist))
            first.append(result.timings_s["to_first_step"])
            start = hist[0].get("first_step_at", 0)
            rl_busy.append(gpu.mean(start, start + sum(h["epoch_time_s"] for h in hist)))
            device, feed, workers, cpus = result.device, result.feed, result.workers, result.cpus_per_worker
        ray.shutdown()
        # Ray gives a worker floor(CPUs) threads, one below a whole CPU (OMP_NUM_THREADS); the same here.
        threads = max(1, int(cpus))
        runs = [ddp_baseline(ingest, cfg, epochs, workers, device == "cuda", threads) for _ in range(args.repeats)]
        gpu.close()
        base, base_busy = [r for r, _ in runs], [gpu.mean(*w) for _, w in runs]
        ratios = [a / b for a, b in zip(rl, base)]
        busy = {"rayline_gpu_busy_pct": _median_or_none(rl_busy), "baseline_gpu_busy_pct": _median_or_none(base_busy)}
        if device == "cuda":
            print(f"GPU busy during the epochs (nvidia-smi, median of repeats): rayline {busy['rayline_gpu_busy_pct']}%, "
                  f"plain DDP {busy['baseline_gpu_busy_pct']}%")
        print(f"{'loop (' + str(workers) + ' processes, ' + device + ')':<34}{'samples/s median (range)':>30}")
        print(f"{'rayline (Ray Train, ' + feed + ' feed)':<34}{_spread(rl)}")
        print(f"{'plain PyTorch DDP (' + ('nccl' if device == 'cuda' else 'gloo') + ')':<34}{_spread(base)}")
        print(f"ratio per repeat: {', '.join(f'{r:.3f}' for r in ratios)}")
        print(f"ray start-up {startup:.1f}s; trainer fixed cost (fit wall time minus epochs) "
              f"{statistics.median(fixed):.1f}s ({min(fixed):.1f}-{max(fixed):.1f}); fit() to the first step "
              f"{statistics.median(first):.1f}s ({min(first):.1f}-{max(first):.1f})")
        print(json.dumps({"name": "train", "rayline_samples_per_s": round(statistics.median(rl)),
                          "baseline_samples_per_s": round(statistics.median(base)),
                          "ratio": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
                          "ratio_max": round(max(ratios), 3), "repeats": args.repeats, "device": device,
                          "workers": workers, "threads_per_worker": threads, "feed": feed,
                          "ray_startup_s": round(startup, 2), "trainer_fixed_s": round(statistics.median(fixed), 2),
                          "to_first_step_s": round(statistics.median(first), 2), **busy}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
