"""Serving throughput and latency: the rayline endpoint vs a plain FastAPI app, same model.

Closed-loop load from wrk (a C client: it does not itself saturate a core) at concurrency 1,
16 and 64 against (a) the rayline Serve endpoint (one replica) and (b) benchmarks/baseline_app.py
on one uvicorn worker doing the same validation, preprocessing and forward pass. Prints
requests/s, p50, p99 and errors for each, a row with two replicas of rayline (concurrency 64),
then one JSON line. Ports are picked free on every run.

    python benchmarks/serve.py [--seconds 10]          (needs `wrk`: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
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
          "minute": 15, "day": 1, "flight": 1545, "time_hour": "2013-01-01T10:00:00Z", "temp": 39.0, "visib": 10.0}


def wrk(url: str, concurrency: int, seconds: int, workdir: Path) -> dict:
    lua = workdir / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = [[{json.dumps(RECORD)}]]\n")
    out = subprocess.run(["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds}s",
                          "--latency", "--timeout", "10s", "-s", str(lua), f"{url}/predict"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|timeout|connect|read|write):? (\d+)", out))
    return {"rps": rps, "p50_ms": _ms(lat.get("50", "0ms")), "p99_ms": _ms(lat.get("99", "0ms")), "errors": errors}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="rayline-serve-bench-"))
    baseline_proc = None
    rayline_port, baseline_port = free_port(), free_port()
    try:
        overrides = [f"storage.root={work}", "train.epochs=1", f"serve.port={rayline_port}",
                     "serve.autoscaling.min_replicas=1", "serve.autoscaling.max_replicas=1", "serve.cpus_per_replica=1"]
        cfg, storage, d = deployed_model(overrides)
        env = {**os.environ, "RAYLINE_ROOT": str(work), "RAYLINE_MODEL": cfg.name, "RAYLINE_VERSION": str(d.model_version),
               "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'benchmarks'}"}
        baseline_proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "baseline_app:app", "--host", "127.0.0.1",
                                          "--port", str(baseline_port), "--workers", "1", "--log-level", "warning"],
                                         env=env, cwd=ROOT / "benchmarks")
        import httpx

        for _ in range(120):
            try:
                if httpx.post(f"http://127.0.0.1:{baseline_port}/predict", json=RECORD).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        rows = {}
        for target, url in (("rayline", d.url), ("baseline", f"http://127.0.0.1:{baseline_port}")):
            for c in (1, 16, 64):
                rows[(target, c)] = wrk(url, c, args.seconds, work)
        from rayline.serve.deploy import deploy

        two = [*overrides, "serve.autoscaling.min_replicas=2", "serve.autoscaling.max_replicas=2",
               "serve.cpus_per_replica=0.5"]
        from rayline.config import load_config

        deploy(load_config(ROOT / "configs/flights.yaml", two), str(ROOT / "configs/flights.yaml"), two)
        time.sleep(5)  # both replicas serving
        rows[("rayline x2", 64)] = wrk(d.url, 64, args.seconds, work)
        print(f"{'target':<10}{'conc.':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        for (target, c), r in rows.items():
            print(f"{target:<10}{c:>6}{r['rps']:>10,.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['errors']:>8}")
        rl, bl = rows[("rayline", 64)], rows[("baseline", 64)]
        print(json.dumps({"name": "serve", "concurrency": 64, "rayline_rps": round(rl["rps"], 1), "baseline_rps": round(bl["rps"], 1),
                          "ratio": round(rl["rps"] / bl["rps"], 3), "rayline_p99_ms": rl["p99_ms"],
                          "rayline_p99_ms_c16": rows[("rayline", 16)]["p99_ms"],
                          "rayline_p50_ms_c1": rows[("rayline", 1)]["p50_ms"], "baseline_p50_ms_c1": rows[("baseline", 1)]["p50_ms"],
                          "rayline_x2_rps": round(rows[("rayline x2", 64)]["rps"], 1),
                          "errors": sum(r["errors"] for (t, _), r in rows.items() if t.startswith("rayline"))}))
    finally:
        if baseline_proc is not None:
            baseline_proc.terminate()
            baseline_proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
