"""What the lookups cost a client, side by side in one run: the endpoint joining weather,
aircraft, airports and the schedule counts from the model's snapshot (`serve.lookup_snapshot:
model`, the default) against the same endpoint and model with the lookups off (`none`: what a
pre-joined client would get). Both are live at once (one replica each, HAProxy ingress) and are
loaded in turn in short wrk windows (closed loop, concurrency 1 and 64), `--rounds` times, the
order rotating; the ratio is taken within each round, and its median and quartiles reported.
The record is a raw flight with its tail number and date, so every lookup finds its row. Also
the snapshot's memory in the replica (GET /model).
Target (issue "one feature pipeline everywhere"): c=1 p50 and c=64 throughput within 10 %.

    python benchmarks/lookups.py [--seconds 3] [--rounds 8]
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

import serve as serve_bench  # noqa: E402
from _common import one_replica_endpoint, paired, side_by_side, spread  # noqa: E402

RECORD = {"year": 2013, "month": 1, "day": 1, "carrier": "UA", "flight": 1545, "tailnum": "N14228", "origin": "EWR",
          "dest": "IAH", "distance": 1400.0, "sched_dep_time": 515, "sched_arr_time": 819, "hour": 5, "minute": 15,
          "time_hour": "2013-01-01T10:00:00Z"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    import httpx
    import ray

    serve_bench.RECORD = RECORD  # wrk posts this record
    work = Path(tempfile.mkdtemp(prefix="rayline-lookups-bench-"))
    info = {}

    def check(mode, url):
        r = httpx.post(f"{url}/predict", json=RECORD, timeout=30).json()
        assert "lookups_missed" not in r["predictions"][0] or mode == "none", r
        info[mode] = httpx.get(f"{url}/model", timeout=30).json()

    try:
        base, _, _, _ = one_replica_endpoint(work, apps=2)
        rows = side_by_side({"model": ["serve.lookup_snapshot=model"], "none": ["serve.lookup_snapshot=none"]},
                            base, work, args.seconds, args.rounds, check=check)
        med = statistics.median
        print(f"{'lookups':<10}{'c=1 p50 ms':>12}{'c=64 req/s':>12}{'errors':>8}")
        for mode in rows:
            print(f"{mode:<10}{med([r['p50_ms'] for r in rows[mode][1]]):>12.2f}"
                  f"{med([r['rps'] for r in rows[mode][64]]):>12,.0f}"
                  f"{sum(r['errors'] for c in rows[mode].values() for r in c):>8}")
        p50, rps = spread(paired(rows, "model", "none", 1, "p50_ms")), spread(paired(rows, "model", "none", 64, "rps"))
        lk = info["model"].get("lookups", {})
        print(json.dumps({"name": "lookups", "rounds": args.rounds, "seconds": args.seconds,
                          "c1_p50_ms_on": med([r["p50_ms"] for r in rows["model"][1]]),
                          "c1_p50_ms_off": med([r["p50_ms"] for r in rows["none"][1]]),
                          "c1_p50_ratio": p50["median"], "c1_p50_ratio_spread": p50,
                          "c64_rps_on": round(med([r["rps"] for r in rows["model"][64]]), 1),
                          "c64_rps_off": round(med([r["rps"] for r in rows["none"][64]]), 1),
                          "c64_rps_ratio": rps["median"], "c64_rps_ratio_spread": rps,
                          "snapshot_bytes": lk.get("bytes"), "snapshot_load_s": lk.get("load_s"),
                          "model_bytes": info["model"].get("memory_bytes"),
                          "errors": sum(r["errors"] for m in rows.values() for c in m.values() for r in c)}))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
