"""A head started by cluster/start-head.sh is closed: no token, no jobs.

The head runs under its own temp dir and HOME (so its token file is its own), on free ports
outside Ray's worker range, and is stopped by PID.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from rayline.runtime import free_port
from tests.conftest import ROOT, RayNodes

SCRIPT = ROOT / "cluster" / "start-head.sh"
RAY = str(Path(sys.executable).parent / "ray")


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), RAY=RAY, PATH=f"{Path(sys.executable).parent}:{env['PATH']}", **extra)
    return env


@pytest.fixture(scope="module")
def closed_head(tmp_path_factory):
    # A short path of its own: Ray's Unix sockets live under the temp dir, and AF_UNIX paths stop
    # at 107 bytes (pytest's own temp dirs grow past that as its run counter grows).
    base = Path(tempfile.mkdtemp(prefix="rl-auth-"))
    home, temp_dir = base / "home", base / "ray"
    home.mkdir()
    ports = {"RAY_PORT": free_port(), "DASHBOARD_PORT": free_port(), "METRICS_PORT": free_port()}
    env = _env(home, RAY_TEMP_DIR=str(temp_dir), **{k: str(v) for k, v in ports.items()})
    out = subprocess.run(["bash", str(SCRIPT), "--num-cpus=1", f"--ray-client-server-port={free_port()}",
                          f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
                         env=env, capture_output=True, text=True, timeout=180)
    nodes = RayNodes(temp_dir, port=ports["RAY_PORT"])
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        url = f"http://127.0.0.1:{ports['DASHBOARD_PORT']}"
        deadline = time.time() + 60  # `ray start` returns before the dashboard listens
        while True:
            try:
                httpx.get(f"{url}/api/version", timeout=5)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "the head's dashboard never came up"
                time.sleep(0.5)
        yield {"url": url, "home": home, "stderr": out.stderr,
               "token": (home / ".ray" / "auth_token").read_text()}
    finally:
        nodes.kill(nodes.pids())
        shutil.rmtree(base, ignore_errors=True)


def _submit(head, token_file: Path | None, home: Path | None = None):
    env = _env(home or head["home"], RAY_AUTH_MODE="token")
    if token_file is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    return subprocess.run([RAY, "job", "submit", "--address", head["url"], "--", "echo", "rayline-auth-ok"],
                          env=env, capture_output=True, text=True, timeout=180)


def test_token_is_created_private_and_the_dashboard_stays_on_loopback(closed_head):
    token_file = closed_head["home"] / ".ray" / "auth_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(closed_head["token"]) == 64 and "new cluster token written" in closed_head["stderr"]
    assert "Token authentication is disabled" not in closed_head["stderr"]
    import psutil

    port = int(closed_head["url"].rsplit(":", 1)[1])
    bound = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    assert bound == {"127.0.0.1"}


def test_jobs_api_refuses_without_the_token(closed_head, tmp_path):
    url = closed_head["url"]
    assert httpx.get(f"{url}/api/jobs/", timeout=30).status_code in (401, 403)
    r = httpx.post(f"{url}/api/jobs/", json={"entrypoint": "echo pwned"}, timeout=30)
    assert r.status_code in (401, 403), r.text
    wrong = tmp_path / "wrong"
    wrong.write_text("0" * 64)
    stranger = tmp_path / "stranger-home"  # a client machine without the cluster's token file
    stranger.mkdir()
    for token in (None, wrong):  # the CLI, with no token and with a wrong one
        out = _submit(closed_head, token, home=stranger)
        assert out.returncode != 0 and "rayline-auth-ok" not in out.stdout + out.stderr
    headers = {"authorization": f"Bearer {closed_head['token']}"}
    jobs = httpx.get(f"{url}/api/jobs/", headers=headers, timeout=30).json()
    assert not [j for j in jobs if "pwned" in j.get("entrypoint", "")]  # nothing ran


def test_job_with_the_token_is_accepted_and_runs(closed_head):
    out = _submit(closed_head, closed_head["home"] / ".ray" / "auth_token")
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "rayline-auth-ok" in text and "succeeded" in text.lower()


def test_start_head_refuses_to_start_an_open_cluster(tmp_path):
    out = subprocess.run(["bash", str(SCRIPT)], env=_env(tmp_path, RAY_AUTH_MODE="disabled", RAY_TEMP_DIR=str(tmp_path / "r")),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "refusing to start a head without token authentication" in out.stderr
    assert not (tmp_path / "r").exists()


def test_worker_script_needs_the_token(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "cluster" / "start-worker.sh"), "127.0.0.1"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no cluster token" in out.stderr
