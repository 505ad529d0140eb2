"""Autoscaling: time from a load surge to the extra replica serving, and from the end of load to
scale-down, counting failed requests. Prints the config used and one JSON line.

    python benchmarks/autoscale.py [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import deployed_model
from rayline.runtime import free_port  # noqa: E402

RECORD = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "distance": 1400.0, "sched_dep_time": 515, "hour": 5,
          "minute": 15, "day": 1, "flight": 1545, "time_hour": "2013-01-01T10:00:00Z"}


def replicas(app: str) -> int:
    from ray import serve

    st = serve.status().applications[app].deployments["ModelServer"].replica_states
    return st.get("RUNNING", 0)


async def main_async(url: str, app: str, concurrency: int) -> dict:
    import httpx

    stats = {"ok": 0, "failed": 0}
    stop = asyncio.Event()
    serving_pids: set[int] = set()

    async def client(c):
        while not stop.is_set():
            try:
                r = await c.post(f"{url}/predict", json=RECORD)
                stats["ok" if r.status_code == 200 else "failed"] += 1
            except httpx.HTTPError:
                stats["failed"] += 1

    async with httpx.AsyncClient(timeout=30) as c:
        t0 = time.time()
        tasks = [asyncio.create_task(client(c)) for _ in range(concurrency)]
        up_s = None
        while time.time() - t0 < 120:
            serving_pids.add((await c.get(f"{url}/drift")).json()["replica"])
            if len(serving_pids) >= 2:  # the second replica answered a request
                up_s = time.time() - t0
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*tasks)
    t1 = time.time()
    down_s = None
    while time.time() - t1 < 180:
        if replicas(app) <= 1:
            down_s = time.time() - t1
            break
        await asyncio.sleep(0.5)
    return {"scale_up_s": up_s, "scale_down_s": down_s, **stats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rayline-autoscale-"))
    try:
        overrides = [f"storage.root={work}", "train.epochs=1", f"serve.port={free_port()}", "serve.cpus_per_replica=0.5",
                     "serve.autoscaling.min_replicas=1", "serve.autoscaling.max_replicas=2",
                     "serve.autoscaling.target_ongoing_requests=2", "serve.autoscaling.upscale_delay_s=1",
                     "serve.autoscaling.downscale_delay_s=10"]
        cfg, storage, d = deployed_model(overrides)
        result = asyncio.run(main_async(d.url, cfg.serve.app_name, args.concurrency))
        print("config:", json.dumps(cfg.serve.autoscaling.model_dump()), f"concurrency {args.concurrency}")
        print(json.dumps({"name": "autoscale", **result}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
