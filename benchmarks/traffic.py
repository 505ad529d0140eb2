"""What the live-traffic features cost the live path, side by side in one run: the endpoint with
the prediction log off (the baseline), with it on, and with it on plus a shadow version scoring
every request (fraction 1.0); also a 90/10 split between two versions. One replica (HAProxy
ingress), wrk closed loop at concurrency 64 and 1, the variants alternating `--repeats` times
(ratios are taken within each round: this host's throughput moves between runs).
Targets (issue "know a new model is better"): the log costs <= 5 % of c=64 throughput, the
shadow at fraction 1.0 <= 10 % (against the log on).

    python benchmarks/traffic.py [--seconds 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import one_replica_endpoint, register_candidate  # noqa: E402
from serve import wrk  # noqa: E402

VARIANTS = {
    "log_off": ["serve.prediction_log.enabled=false"],
    "log_on": [],
    "shadow_1.0": ["serve.shadow.alias=candidate", "serve.shadow.fraction=1.0"],
    "split_90_10": ["serve.traffic=[{alias: production, weight: 90}, {alias: candidate, weight: 10}]"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    import ray

    from rayline.config import load_config
    from rayline.serve.deploy import deploy

    work = Path(tempfile.mkdtemp(prefix="rayline-traffic-bench-"))
    try:
        base, cfg, storage, out = one_replica_endpoint(work)
        register_candidate(storage, cfg, out)
        rows: dict[str, dict[int, list]] = {k: {64: [], 1: []} for k in VARIANTS}
        names = list(VARIANTS)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts with another variant
                d = deploy(load_config(ROOT / "configs/flights.yaml", [*base, *VARIANTS[name]]))
                wrk(d.url, 16, 2, work)  # warm-up, discarded: lookup indexes, allocator, first batches
                for c in (64, 1):
                    rows[name][c].append(wrk(d.url, c, args.seconds, work))
        med = statistics.median
        print(f"{'variant':<14}{'c=64 req/s':>12}{'c=1 p50 ms':>12}{'errors':>8}")
        for name in VARIANTS:
            r64, r1 = rows[name][64], rows[name][1]
            print(f"{name:<14}{med([r['rps'] for r in r64]):>12,.0f}{med([r['p50_ms'] for r in r1]):>12.2f}"
                  f"{sum(r['errors'] for r in r64 + r1):>8}")

        def ratio(a, b):
            return [x["rps"] / y["rps"] for x, y in zip(rows[a][64], rows[b][64])]
        log_r, shadow_r, split_r = ratio("log_on", "log_off"), ratio("shadow_1.0", "log_on"), ratio("split_90_10", "log_on")
        print(json.dumps({
            "name": "traffic", "repeats": args.repeats,
            "log_off_rps": round(med([r["rps"] for r in rows["log_off"][64]]), 1),
            "log_on_rps": round(med([r["rps"] for r in rows["log_on"][64]]), 1),
            "log_ratio": round(med(log_r), 3), "log_ratio_min": round(min(log_r), 3),
            "shadow_rps": round(med([r["rps"] for r in rows["shadow_1.0"][64]]), 1),
            "shadow_ratio": round(med(shadow_r), 3), "shadow_ratio_min": round(min(shadow_r), 3),
            "split_ratio": round(med(split_r), 3),
            "c1_p50_ms": {k: med([r["p50_ms"] for r in rows[k][1]]) for k in VARIANTS},
            "errors": sum(r["errors"] for k in rows.values() for rs in k.values() for r in rs)}))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
