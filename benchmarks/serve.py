"""Serving throughput and latency: the rayline endpoint, through each of Serve's ingress modes,
vs a plain FastAPI app doing the same work, in one run.

Closed-loop load from wrk (a C client: it does not itself saturate a core) at concurrency 1,
16 and 64 against (a) the rayline Serve endpoint (one replica), once with the HAProxy ingress
(the default, `serve.ingress: haproxy`), once with HAProxy and Serve's default replica threading
(`haproxy-thread`: user code on a second loop in another thread) and once with Serve's Python
proxy (`proxy`), and (b)
benchmarks/baseline_app.py on one uvicorn worker doing the same parse, contract, transform and
forward pass. The ingress is chosen when Ray starts, so each mode runs in its own process with
its own embedded Ray, one after the other on the same model. Prints requests/s, p50, p99 and
errors for each, a row with two replicas per mode (concurrency 64), then one JSON line
(`rayline_*`: the default; `thread_*`: Serve's replica threading; `proxy_*`: the Python proxy).
The headline ratios (c=64 req/s, c=1 p50) come from `--rounds` paired rounds: the default mode and
the baseline both up, measured in turn in windows seconds apart, one ratio per round (median and
quartiles): this host's speed moves 2x within minutes, so one pass of each, minutes apart, gave
ratios from 2.3 to 5.2 on the same code. Ports are picked free.

    python benchmarks/serve.py [--seconds 10] [--rounds 6]          (needs `wrk`: apt-get install wrk)
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

from rayline.runtime import free_port  # noqa: E402
from _common import spread  # noqa: E402

RECORD = {"carrier": "UA", "origin": "EWR", "dest": "IAH", "distance": 1400.0, "sched_dep_time": 515, "hour": 5,
          "minute": 15, "day": 1, "flight": 1545, "time_hour": "2013-01-01T10:00:00Z", "temp": 39.0, "visib": 10.0}
# haproxy: the default; haproxy-thread: the same with Serve's default replica threading (user
# code on a second event loop in another thread), to show what running rayline's handlers on the
# replica's main loop buys; proxy: Serve's Python proxy.
MODES = ("haproxy", "haproxy-thread", "proxy")


def wrk(url: str, concurrency: int, seconds: int, workdir: Path, query: str = "") -> dict:
    lua = workdir / "post.lua"
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = [[{json.dumps(RECORD)}]]\n")
    out = subprocess.run(["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{seconds}s",
                          "--latency", "--timeout", "10s", "-s", str(lua), f"{url}/predict{query}"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|timeout|connect|read|write):? (\d+)", out))
    return {"rps": rps, "p50_ms": _ms(lat.get("50", "0ms")), "p99_ms": _ms(lat.get("99", "0ms")), "errors": errors}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def start_baseline(work: Path, version: int) -> tuple[subprocess.Popen, str]:
    """benchmarks/baseline_app.py on one uvicorn worker, serving `version` from `work`'s registry."""
    import httpx

    port = free_port()
    env = {**os.environ, "RAYLINE_ROOT": str(work), "RAYLINE_MODEL": "flights", "RAYLINE_VERSION": str(version),
           "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'benchmarks'}"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "baseline_app:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", "--log-level", "warning"], env=env, cwd=ROOT / "benchmarks")
    for _ in range(120):
        try:
            if httpx.post(f"http://127.0.0.1:{port}/predict", json=RECORD).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}"


def paired_rounds(url: str, base_url: str, rounds: int, seconds: int, work: Path) -> dict:
    """Per round: c=64 and c=1 against rayline, then the baseline, seconds apart. (Returned through
    JSON: the concurrency keys come back as text.)"""
    out = {"c64_ratio": [], "c1_p50_ratio": [], "rayline": [], "baseline": []}
    for _ in range(rounds):
        rl = {c: wrk(url, c, seconds, work) for c in (64, 1)}
        bl = {c: wrk(base_url, c, seconds, work) for c in (64, 1)}
        out["c64_ratio"].append(rl[64]["rps"] / bl[64]["rps"])
        out["c1_p50_ratio"].append(rl[1]["p50_ms"] / bl[1]["p50_ms"])
        out["rayline"].append(rl)
        out["baseline"].append(bl)
    return out


def measure(mode: str, work: Path, seconds: int, rounds: int = 0) -> dict:
    """One ingress mode, in this process: its own embedded Ray, the model trained on the first
    call and reused after (the registry is shared through `work`). `rounds`: paired rounds
    against the baseline, started here once the model is known."""
    import ray

    from rayline.config import ServeConfig, load_config
    from rayline.pipeline import promote_version, train_and_register
    from rayline.registry import Registry
    from rayline.runtime import configure_data_context
    from rayline.serve.deploy import deploy
    from rayline.serve.ingress import USER_CODE_THREAD, ingress_env
    from rayline.storage import Storage

    ingress = mode.split("-")[0]
    os.environ.update(ingress_env(ServeConfig(ingress=ingress)))
    if mode == "haproxy-thread":
        os.environ[USER_CODE_THREAD] = "1"
    port = free_port()
    overrides = [f"storage.root={work}", f"serve.port={port}", f"serve.ingress={ingress}",
                 "serve.autoscaling.min_replicas=1", "serve.autoscaling.max_replicas=1", "serve.cpus_per_replica=1"]
    cfg = load_config(ROOT / "configs/flights.yaml", overrides)
    from rayline.runtime import embedded_env
    os.environ.update({k: v for k, v in embedded_env().items() if k not in os.environ})  # as rayline's embedded Ray
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    configure_data_context(progress_bars=False)
    storage = Storage(cfg.storage.root)
    if "production" not in Registry(storage, cfg.name).aliases():
        out = train_and_register(cfg, storage)
        promote_version(cfg, storage, out.version.version, "production")
    d = deploy(cfg)
    rows = {c: wrk(d.url, c, seconds, work) for c in (1, 16, 64)}
    paired = None
    if rounds:
        proc, base_url = start_baseline(work, d.model_version)
        try:
            paired = paired_rounds(d.url, base_url, rounds, seconds, work)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    two = [*overrides, "serve.autoscaling.min_replicas=2", "serve.autoscaling.max_replicas=2", "serve.cpus_per_replica=0.5"]
    deploy(load_config(ROOT / "configs/flights.yaml", two))
    time.sleep(5)  # both replicas serving
    rows["x2"] = wrk(d.url, 64, seconds, work)
    ray.shutdown()
    return {"model_version": d.model_version, "rows": rows, "paired": paired}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=6, help="paired rounds, default mode vs the baseline")
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # internal: one mode in a child process
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    if args.mode:
        rounds = args.rounds if args.mode == MODES[0] else 0
        print("RESULT " + json.dumps(measure(args.mode, Path(args.work), args.seconds, rounds)), flush=True)
        return
    work = Path(tempfile.mkdtemp(prefix="rayline-serve-bench-"))
    baseline_proc = None
    try:
        results = {}
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--mode", mode, "--work", str(work), "--seconds", str(args.seconds),
                                  "--rounds", str(args.rounds)], capture_output=True, text=True, timeout=3600)
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{mode} run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            results[mode] = json.loads(line[len("RESULT "):])
        baseline_proc, base_url = start_baseline(work, results[MODES[0]]["model_version"])
        base = {c: wrk(base_url, c, args.seconds, work) for c in (1, 16, 64)}
        print(f"{'target':<24}{'conc.':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        table = [(f"rayline {m}", c, r) for m in MODES for c, r in results[m]["rows"].items()]
        table += [("baseline", c, r) for c, r in base.items()]
        for target, c, r in table:
            label = "64 x2" if c == "x2" else str(c)
            print(f"{target:<24}{label:>6}{r['rps']:>10,.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}{r['errors']:>8}")
        rl, th, px = results["haproxy"]["rows"], results["haproxy-thread"]["rows"], results["proxy"]["rows"]
        paired = results["haproxy"]["paired"]
        headline = {}
        if paired:
            c64, c1 = spread(paired["c64_ratio"]), spread(paired["c1_p50_ratio"])
            print(f"paired rounds ({args.rounds}, rayline then the baseline, seconds apart): c=64 req/s ratio median "
                  f"{c64['median']:.2f} (quartiles {c64['q1']:.2f}-{c64['q3']:.2f}, {c64['min']:.2f}-{c64['max']:.2f}); "
                  f"c=1 p50 ratio median {c1['median']:.2f} ({c1['q1']:.2f}-{c1['q3']:.2f})")
            headline = {"ratio": c64["median"], "ratio_spread": c64, "c1_p50_ratio": c1["median"], "c1_p50_ratio_spread": c1,
                        "paired_rayline_rps": [round(r["64"]["rps"]) for r in paired["rayline"]],
                        "paired_baseline_rps": [round(r["64"]["rps"]) for r in paired["baseline"]]}
        print(json.dumps({"name": "serve", "ingress": "haproxy", "concurrency": 64, "rayline_rps": round(rl["64"]["rps"], 1),
                          "baseline_rps": round(base[64]["rps"], 1), "ratio": round(rl["64"]["rps"] / base[64]["rps"], 3),
                          "ratio_one_pass": round(rl["64"]["rps"] / base[64]["rps"], 3), **headline,
                          "rayline_p99_ms": rl["64"]["p99_ms"], "rayline_p99_ms_c16": rl["16"]["p99_ms"],
                          "rayline_p50_ms_c1": rl["1"]["p50_ms"], "baseline_p50_ms_c1": base[1]["p50_ms"],
                          "rayline_x2_rps": round(rl["x2"]["rps"], 1),
                          "thread_rps": round(th["64"]["rps"], 1), "thread_p99_ms_c16": th["16"]["p99_ms"],
                          "thread_p50_ms_c1": th["1"]["p50_ms"],
                          "proxy_rps": round(px["64"]["rps"], 1), "proxy_ratio": round(px["64"]["rps"] / base[64]["rps"], 3),
                          "proxy_p99_ms_c16": px["16"]["p99_ms"], "proxy_p50_ms_c1": px["1"]["p50_ms"],
                          "proxy_x2_rps": round(px["x2"]["rps"], 1),
                          "errors": sum(r["errors"] for m in MODES for r in results[m]["rows"].values())}))
    finally:
        if baseline_proc is not None:
            baseline_proc.terminate()
            baseline_proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
