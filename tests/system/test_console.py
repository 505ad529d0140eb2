"""What a user sees: `rayline run` on a non-terminal prints rayline's own progress (no Ray Data
progress lines, no placement-group-cleaner warnings, no worker output), and SIGTERM stops
`--keep-serving` cleanly: the app drained, one line, exit 0, no fault-handler stack dump."""

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, SERVE_PORT, save_yaml, small_config

NOISE = ("logging_progress", "PlacementGroupCleaner", "SIGTERM received", "Traceback", "(RayTrainWorker",
         "streaming_executor", "Token authentication is enabled", "Started Serve in namespace")


def test_run_is_quiet_and_sigterm_stops_it_cleanly(ray_local, small_data, tmp_path):
    import httpx
    import ray

    data, root = small_data
    raw = small_config(data, root)
    raw["train"]["model"] = {"family": "xgboost", "xgboost": {"num_boost_round": 60, "checkpoint_every": 20}}
    raw["serve"] = {"port": SERVE_PORT, "app_name": "console", "cpus_per_replica": 0.25,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    config = save_yaml(raw, tmp_path / "console.yaml")
    cmd = [sys.executable, "-m", "rayline.cli", "run", "--config", str(config), "--keep-serving",
           "--address", ray.get_runtime_context().gcs_address]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("serving at "):
                break
        assert lines and lines[-1].startswith("serving at "), "\n".join(lines[-40:])
        url = lines[-1].split()[2].rstrip(";")
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)                         # what Kubernetes and systemd send
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    out = "\n".join(lines)
    assert proc.returncode == 0, out[-3000:]
    assert len(lines) <= 40, out
    assert not [n for n in NOISE if n in out], out
    assert any(line.startswith("stopped: console drained") for line in lines), out
    assert any(line.startswith("train: round 60/60") for line in lines), out    # rayline's own progress
    from ray import serve
    assert "console" not in serve.status().applications                       # the app was deleted
