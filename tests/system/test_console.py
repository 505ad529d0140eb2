"""What a user sees: `rayline run` on a non-terminal prints rayline's own progress (no Ray Data
progress lines, no placement-group-cleaner warnings, no worker output), and SIGTERM stops
`--keep-serving` cleanly: the app drained, one line, exit 0, no fault-handler stack dump."""

import os
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time

from tests.conftest import FLIGHTS_CONFIG, ROOT, SERVE_PORT, save_yaml, small_config

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


def test_a_signal_to_the_whole_process_group_leaves_nothing_behind(flights_model, tmp_path):
    """systemd's default KillMode, GNU timeout and a closing terminal signal the whole process group:
    the embedded Ray dies with rayline, so there is nothing to drain, but HAProxy must not be left
    holding the port and rayline must not wait a minute for a dead GCS."""
    import psutil

    from rayline.runtime import free_port

    cfg, _, _ = flights_model
    port = free_port()
    # An embedded Ray of its own (fresh temp dir, no address), with HAProxy ports of its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_SERVE_HAPROXY", "RAY_ADDRESS"))}
    ray_tmp = tempfile.mkdtemp(prefix="rl-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
    cmd = [sys.executable, "-m", "rayline.cli", "serve", "--config", str(FLIGHTS_CONFIG), "--set",
           f"storage.root={cfg.storage.root}", "--set", f"serve.port={port}", "--set", "serve.app_name=group",
           "--set", "serve.cpus_per_replica=0.25"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (lines and lines[-1].startswith("serving ")):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        assert lines and lines[-1].startswith("serving "), "\n".join(lines[-40:])
        # Serve reloads HAProxy (a new process takes the sockets, the old one drains and exits) as
        # replicas come and go, so one look at the tree can catch the outgoing HAProxy with its
        # listeners closed: look again, each time at a fresh tree, until a whole snapshot is taken
        # between reloads; remember every process seen for the end check.
        seen: dict[int, psutil.Process] = {}
        names: dict[int, str] = {}                                # read when seen: an outgoing HAProxy may be gone later
        for _ in range(60):
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            seen.update({p.pid: p for p in tree[1:]})
            for p in tree[1:]:
                try:
                    names.setdefault(p.pid, p.name())
                except psutil.Error:
                    pass
            http, wildcard = _listeners(tree, port)
            if {p for n, _, p in http if n == "haproxy"} >= {port}:
                break
            time.sleep(0.5)
        started = list(seen.values())
        assert "haproxy" in names.values(), sorted(names.values())
        _check_listeners(http, wildcard, port)
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGTERM)                       # the whole group, not rayline alone
        rest, _ = proc.communicate(timeout=60)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out = "\n".join(lines + rest.splitlines())
    assert took < 30, out[-2000:]                                 # was 60-64 s, waiting for the dead GCS
    time.sleep(1)
    left = []
    for p in started:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    assert not left, left
    with socket.socket() as s:                                    # the port is free again
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _listeners(procs, port: int) -> tuple[list, list]:
    """(HTTP listeners, other non-loopback listeners) of these processes, as (name, ip, port)."""
    import psutil

    http, wildcard = [], []
    for p in procs:
        try:
            name = p.name()
            socks = [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
        for a in socks:
            if name == "haproxy" or (30000 <= a.port <= 31000) or a.port in (port, 8265):
                http.append((name, a.ip, a.port))
            elif a.ip != "127.0.0.1":
                wildcard.append((name, a.ip, a.port))
    return http, wildcard


def _check_listeners(http: list, wildcard: list, port: int) -> None:
    """Every listening socket of an embedded `rayline serve`, against the set the README documents:
    HTTP only on serve.host (HAProxy's frontend and exporter, each replica's server in
    30000-31000, Serve's proxy actor, the dashboard on 127.0.0.1); on other addresses only Ray's
    own token-authenticated gRPC servers (GCS, raylet, core workers, agents)."""
    assert http and all(ip == "127.0.0.1" for _, ip, _ in http), http
    haproxy = {p for n, _, p in http if n == "haproxy"}
    assert haproxy >= {port} and len(haproxy) == 2, http      # the frontend and its exporter (per process)
    ray_own = ("gcs_server", "raylet", "ray::", "python", "rayline")  # Ray's gRPC servers, its agents, the driver's core worker
    assert all(n.startswith(ray_own) for n, _, _ in wildcard), wildcard
