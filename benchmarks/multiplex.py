"""Two model versions in one replica, two ways, side by side in one run: rayline's own lifecycle
(a 50/50 `serve.traffic` split: both versions loaded in the replica, requests of both versions in
one batch, checked and transformed once, one forward pass per version) against Ray Serve's model
multiplexing (`@serve.multiplexed`, the version chosen by the `serve_multiplexed_model_id`
header, the same `predict_items` behind `@serve.batch`, a plain deployment without rayline's
logging, auth or OpenAPI). One replica, 1 CPU, the HAProxy ingress; wrk at concurrency 64 with a
random key (rayline) or model id (Serve) per request, alternating `--repeats` times. Reports
req/s, p50 and the memory each version holds in the replica.

    python benchmarks/multiplex.py [--seconds 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import one_replica_endpoint, register_candidate  # noqa: E402
from serve import RECORD, _ms  # noqa: E402

KEYS = [f"client-{i}" for i in range(1000)]  # rayline's split: a random client (routing key) per request


def wrk_random(url: str, header: str, values: list[str], seconds: int, work: Path) -> dict:
    """wrk at c=64, each request with `header` set to one of `values` at random."""
    lua = work / f"mux-{header}.lua"
    choices = ", ".join(f'"{v}"' for v in values)
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = [[{json.dumps(RECORD)}]]\nlocal values = {{{choices}}}\n"
                   f'request = function()\n  wrk.headers["{header}"] = values[math.random(#values)]\n'
                   "  return wrk.format(nil)\nend\n")
    out = subprocess.run(["wrk", "-t", "2", "-c", "64", "-d", f"{seconds}s", "--latency", "--timeout", "10s",
                          "-s", str(lua), url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|timeout|connect|read|write):? (\d+)", out))
    return {"rps": rps, "p50_ms": _ms(lat.get("50", "0ms")), "errors": errors}


def mux_app(root: str, name: str):
    from ray import serve

    @serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 1})
    class Multiplexed:
        def __init__(self):
            import torch

            from rayline.registry import Registry
            from rayline.storage import Storage

            torch.set_num_threads(1)
            self.registry = Registry(Storage(root), name)

        @serve.multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str):
            from rayline.data.lookup_store import snapshot_of

            v, model = self.registry.load(model_id)
            model.lookups = snapshot_of(self.registry, v, model.spec)
            return model

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0)
        async def score(self, items: list) -> list:
            from rayline.serve.batching import predict_items

            return [r[:2] for r in predict_items(items)]

        async def __call__(self, request):
            model_id = serve.get_multiplexed_model_id()
            model = await self.get_model(model_id)
            answer, version = await self.score((int(model_id), model, [await request.json()], False, False))
            return {"predictions": answer, "model_version": version,
                    "bytes": model.nbytes + (model.lookups.nbytes if model.lookups is not None else 0)}

    return Multiplexed.bind()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    import httpx
    import ray
    from ray import serve

    from rayline.config import load_config
    from rayline.serve.deploy import deploy

    work = Path(tempfile.mkdtemp(prefix="rayline-mux-bench-"))
    try:
        base, cfg, storage, out = one_replica_endpoint(work)
        port = cfg.serve.port
        v1, v2 = out.version.version, register_candidate(storage, cfg, out)
        split = [*base, "serve.traffic=[{alias: production, weight: 50}, {alias: candidate, weight: 50}]"]
        rows: dict[str, list] = {"rayline": [], "serve_multiplexed": []}
        memory = {}
        for _ in range(args.repeats):
            d = deploy(load_config(ROOT / "configs/flights.yaml", split))
            wrk_random(f"{d.url}/predict", "x-routing-key", KEYS, 2, work)  # warm-up
            rows["rayline"].append(wrk_random(f"{d.url}/predict", "x-routing-key", KEYS, args.seconds, work))
            memory["rayline"] = httpx.get(f"{d.url}/model", timeout=30).json()["memory_bytes"]
            serve.delete(cfg.serve.app_name)
            serve.run(mux_app(cfg.storage.root, cfg.name), name="mux", route_prefix="/mux")
            url = f"http://127.0.0.1:{port}/mux"
            for v in (v1, v2):
                r = httpx.post(url, json=RECORD, headers={"serve_multiplexed_model_id": str(v)}, timeout=60)
                assert r.status_code == 200 and r.json()["model_version"] == v, r.text
                memory.setdefault("serve_multiplexed", {})[str(v)] = r.json()["bytes"]
            wrk_random(url, "serve_multiplexed_model_id", [str(v1), str(v2)], 2, work)
            rows["serve_multiplexed"].append(wrk_random(url, "serve_multiplexed_model_id", [str(v1), str(v2)],
                                                        args.seconds, work))
            serve.delete("mux")
        med = statistics.median
        for k, rs in rows.items():
            print(f"{k:<20}{med([r['rps'] for r in rs]):>10,.0f} req/s  p50 {med([r['p50_ms'] for r in rs]):.1f} ms  "
                  f"errors {sum(r['errors'] for r in rs)}  memory {memory.get(k)}")
        print(json.dumps({"name": "multiplex", "repeats": args.repeats,
                          "rayline_rps": round(med([r["rps"] for r in rows["rayline"]]), 1),
                          "serve_multiplexed_rps": round(med([r["rps"] for r in rows["serve_multiplexed"]]), 1),
                          "rayline_p50_ms": med([r["p50_ms"] for r in rows["rayline"]]),
                          "serve_multiplexed_p50_ms": med([r["p50_ms"] for r in rows["serve_multiplexed"]]),
                          "memory_bytes": memory,
                          "errors": sum(r["errors"] for rs in rows.values() for r in rs)}))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
