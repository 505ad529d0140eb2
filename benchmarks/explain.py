"""What explanations cost, side by side in one run: the endpoint with `?explain=true` against the
same endpoint without it, and `rayline predict --explain` against the same batch inference
without it, on the default model (XGBoost: TreeSHAP) or the MLP (integrated gradients).

Serving: one replica (HAProxy ingress), wrk closed loop at concurrency 1 and 64, off and on
alternating `--repeats` times (this host's latencies move between runs: the ratio is taken in
each pair). Batch: `run_batch_predict` over the same raw flights, without explanations, with
exact ones and with `batch.explain_method: approx`, in turn.
Targets (issue "every prediction explained"): c=1 p50 within +1 ms of off; c=64 throughput >=
0.85 of off; batch --explain >= 0.5 of the rows/s without it.

    python benchmarks/explain.py [--seconds 8] [--repeats 2] [--rows 50000] [--family xgboost]
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from batch import raw_records, write_input  # noqa: E402
from serve import wrk  # noqa: E402

from rayline.runtime import free_port  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--family", choices=("xgboost", "mlp"), default="xgboost")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    import ray

    from rayline.batch.predict import run_batch_predict
    from rayline.config import ServeConfig, load_config
    from rayline.pipeline import promote_version, train_and_register
    from rayline.runtime import configure_data_context
    from rayline.serve.deploy import deploy
    from rayline.serve.ingress import ingress_env
    from rayline.storage import Storage

    work = Path(tempfile.mkdtemp(prefix="rayline-explain-bench-"))
    try:
        os.environ.update(ingress_env(ServeConfig()))
        from rayline.runtime import embedded_env
        os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        configure_data_context(progress_bars=False)
        cfg = load_config(ROOT / "configs/flights.yaml", [
            f"storage.root={work / 'root'}", f"train.model.family={args.family}", f"serve.port={free_port()}",
            "serve.autoscaling.min_replicas=1", "serve.autoscaling.max_replicas=1", "serve.cpus_per_replica=1"])
        storage = Storage(cfg.storage.root)
        out = train_and_register(cfg, storage)
        promote_version(cfg, storage, out.version.version, "production")
        d = deploy(cfg)
        serve_rows = {"off": {1: [], 64: []}, "on": {1: [], 64: []}}
        for _ in range(args.repeats):
            for mode, query in (("off", ""), ("on", "?explain=true")):
                for c in (1, 64):
                    serve_rows[mode][c].append(wrk(d.url, c, args.seconds, work, query=query))
        from ray import serve

        serve.delete(cfg.serve.app_name)
        input_dir = work / "input"
        write_input(raw_records(cfg, work / "root"), args.rows, 8, input_dir)
        batch = {"off": [], "on": [], "approx": []}
        approx_cfg = cfg.model_copy(update={"batch": cfg.batch.model_copy(update={"explain_method": "approx"})})
        for i in range(args.repeats):
            for mode in ("off", "on", "approx"):
                t = time.perf_counter()
                res = run_batch_predict(approx_cfg if mode == "approx" else cfg, storage, str(input_dir),
                                        str(work / f"out-{mode}-{i}"), explain=mode != "off")
                batch[mode].append(res.rows_out / (time.perf_counter() - t))
        med = lambda xs: statistics.median(xs)  # noqa: E731
        print(f"{'':<22}{'off':>12}{'on':>12}")
        for c in (1, 64):
            off, on = serve_rows["off"][c], serve_rows["on"][c]
            print(f"{f'c={c} p50 ms':<22}{med([r['p50_ms'] for r in off]):>12.2f}{med([r['p50_ms'] for r in on]):>12.2f}")
            print(f"{f'c={c} req/s':<22}{med([r['rps'] for r in off]):>12,.0f}{med([r['rps'] for r in on]):>12,.0f}")
        print(f"{'batch rows/s':<22}{med(batch['off']):>12,.0f}{med(batch['on']):>12,.0f}  (approx: {med(batch['approx']):,.0f})")
        rps_ratio = [on["rps"] / off["rps"] for on, off in zip(serve_rows["on"][64], serve_rows["off"][64])]
        p50_delta = [on["p50_ms"] - off["p50_ms"] for on, off in zip(serve_rows["on"][1], serve_rows["off"][1])]
        batch_ratio = [on / off for on, off in zip(batch["on"], batch["off"])]
        approx_ratio = [a / off for a, off in zip(batch["approx"], batch["off"])]
        print(json.dumps({
            "name": "explain", "family": args.family, "repeats": args.repeats,
            "c1_p50_ms_off": med([r["p50_ms"] for r in serve_rows["off"][1]]),
            "c1_p50_ms_on": med([r["p50_ms"] for r in serve_rows["on"][1]]),
            "c1_p50_delta_ms": round(med(p50_delta), 2),
            "c64_rps_ratio": round(med(rps_ratio), 3), "c64_rps_ratio_min": round(min(rps_ratio), 3),
            "batch_ratio": round(med(batch_ratio), 3), "batch_ratio_min": round(min(batch_ratio), 3),
            "batch_rows_per_s_off": round(med(batch["off"])), "batch_rows_per_s_on": round(med(batch["on"])),
            "batch_approx_ratio": round(med(approx_ratio), 3), "batch_rows_per_s_approx": round(med(batch["approx"])),
            "errors": sum(r["errors"] for m in serve_rows.values() for rs in m.values() for r in rs)}))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
