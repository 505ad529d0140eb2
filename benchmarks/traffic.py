"""What the live-traffic features cost the live path, side by side in one run: the endpoint with
the prediction log off (the baseline), with it on, and with it on plus a shadow version scoring
every request (fraction 1.0); also a 90/10 split between two versions. All four are live at once
(one replica each, HAProxy ingress) and are loaded in turn in short wrk windows (closed loop,
concurrency 64 and 1), `--rounds` times, the order rotating; ratios are taken within each round
(this host's throughput moves 30 % over minutes), their median and quartiles reported.
Targets (issue "know a new model is better"): the log costs <= 5 % of c=64 throughput, the
shadow at fraction 1.0 <= 10 % (against the log on).

    python benchmarks/traffic.py [--seconds 3] [--rounds 8]
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

from _common import one_replica_endpoint, paired, register_candidate, side_by_side, spread  # noqa: E402

VARIANTS = {
    "log_off": ["serve.prediction_log.enabled=false"],
    "log_on": [],
    "shadow_1.0": ["serve.shadow.alias=candidate", "serve.shadow.fraction=1.0"],
    "split_90_10": ["serve.traffic=[{alias: production, weight: 90}, {alias: candidate, weight: 10}]"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    import ray

    work = Path(tempfile.mkdtemp(prefix="rayline-traffic-bench-"))
    try:
        base, cfg, storage, out = one_replica_endpoint(work, apps=len(VARIANTS))
        register_candidate(storage, cfg, out)
        rows = side_by_side(VARIANTS, base, work, args.seconds, args.rounds)
        med = statistics.median
        print(f"{'variant':<14}{'c=64 req/s':>12}{'c=1 p50 ms':>12}{'errors':>8}")
        for name in VARIANTS:
            r64, r1 = rows[name][64], rows[name][1]
            print(f"{name:<14}{med([r['rps'] for r in r64]):>12,.0f}{med([r['p50_ms'] for r in r1]):>12.2f}"
                  f"{sum(r['errors'] for r in r64 + r1):>8}")
        log_r, shadow_r, split_r = (spread(paired(rows, a, b, 64, "rps")) for a, b in
                                    (("log_on", "log_off"), ("shadow_1.0", "log_on"), ("split_90_10", "log_on")))
        print(json.dumps({
            "name": "traffic", "rounds": args.rounds, "seconds": args.seconds,
            "log_off_rps": round(med([r["rps"] for r in rows["log_off"][64]]), 1),
            "log_on_rps": round(med([r["rps"] for r in rows["log_on"][64]]), 1),
            "log_ratio": log_r["median"], "log_ratio_spread": log_r,
            "shadow_rps": round(med([r["rps"] for r in rows["shadow_1.0"][64]]), 1),
            "shadow_ratio": shadow_r["median"], "shadow_ratio_spread": shadow_r,
            "split_ratio": split_r["median"], "split_ratio_spread": split_r,
            "c1_p50_ms": {k: med([r["p50_ms"] for r in rows[k][1]]) for k in VARIANTS},
            "errors": sum(r["errors"] for k in rows.values() for rs in k.values() for r in rs)}))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
