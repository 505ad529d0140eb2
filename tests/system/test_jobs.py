"""Ray Jobs against the session's head (started with `ray start --head`): the CLI and the SDK."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rayline.config import config_from_dict
from rayline.registry import Registry
from rayline.storage import Storage
from tests.conftest import DASHBOARD_PORT, ROOT, SERVE_PORT, save_yaml, small_config, small_tables, write_tables

JOBS_URL = f"http://127.0.0.1:{DASHBOARD_PORT}"
RUNTIME_ENV = {"working_dir": str(ROOT), "excludes": [".git", ".venv", ".rayline", "**/__pycache__", "*.parquet",
                                                      "benchmarks", "notebooks"]}


@pytest.fixture(scope="module")
def job_config(ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("jobs")
    write_tables(small_tables(800), base / "data")
    raw = small_config(base / "data", base / "root")
    raw["serve"] = {"port": SERVE_PORT, "cpus_per_replica": 0.25, "app_name": "jobs-app",
                    "route_prefix": "/jobs", "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    yield raw, save_yaml(raw, base / "pipeline.yaml"), base
    from ray import serve

    serve.delete("jobs-app")  # free its CPU share for the tests that follow


def _client():
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(JOBS_URL)


def _wait(client, job_id, timeout=600):
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(1)
    raise TimeoutError(f"job {job_id} still {status}")


def test_pipeline_job_with_the_sdk(job_config):
    from ray.job_submission import JobStatus

    raw, path, _ = job_config
    client = _client()
    job = client.submit_job(entrypoint=f"{sys.executable} jobs/pipeline.py --config {path} --json",
                            runtime_env=RUNTIME_ENV)
    status = _wait(client, job)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    summary = json.loads(logs.strip().splitlines()[-1])
    assert summary["ok"] and summary["smoke"]["status"] == 200
    cfg = config_from_dict(raw)
    assert Registry(Storage(cfg.storage.root), cfg.name).versions() == [summary["train"]["version"]]
    url = f"http://127.0.0.1:{SERVE_PORT}/jobs"
    rec = small_tables(3)["trips"].to_pylist()[0]
    rec = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in rec.items()
           if k in ("station", "vehicle", "distance", "hour", "ts")}
    r = httpx.post(f"{url}/predict", json=rec, timeout=30)
    assert r.status_code == 200 and r.json()["model_version"] == summary["train"]["version"]


def _submit_with_the_cli(*entrypoint: str) -> dict:
    """`ray job submit` as a user types it; returns the job's `--json` summary (its last JSON line)."""
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    r = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", JOBS_URL,
                        "--runtime-env", "jobs/runtime_env.yaml", "--", sys.executable, *entrypoint],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in (r.stdout + r.stderr).lower()
    return json.loads(next(ln for ln in reversed(r.stdout.splitlines()) if ln.startswith("{")))


def test_pipeline_job_with_the_cli(job_config):
    from ray import serve

    raw, path, _ = job_config
    cfg = config_from_dict(raw)
    registry = Registry(Storage(cfg.storage.root), cfg.name)
    before = registry.versions()
    # The SDK job's replica holds 0.25 CPU; with a training worker group (1 CPU) and Ray Data's
    # file listing (1 CPU) a second run would not fit this 2-CPU head. The job redeploys it.
    serve.delete("jobs-app")
    summary = _submit_with_the_cli("jobs/pipeline.py", "--config", str(path), "--fresh", "--json")
    assert summary["ok"] and summary["smoke"]["status"] == 200
    version = summary["train"]["version"]
    assert version not in before and registry.versions() == [*before, version]
    assert summary["deploy"]["model_version"] == version
    rec = small_tables(3)["trips"].to_pylist()[0]
    rec = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in rec.items()
           if k in ("station", "vehicle", "distance", "hour", "ts")}
    r = httpx.post(f"http://127.0.0.1:{SERVE_PORT}/jobs/predict", json=rec, timeout=30)
    assert r.status_code == 200 and r.json()["model_version"] == version


def test_ingest_job_with_the_cli(job_config):
    _, path, _ = job_config
    summary = _submit_with_the_cli("jobs/ingest.py", "--config", str(path), "--json")
    assert summary["rows"]["read"] == 800 and summary["reused"]


def test_broken_config_job_fails_with_the_error_in_its_logs(job_config, tmp_path):
    from ray.job_submission import JobStatus

    raw, _, _ = job_config
    broken = dict(raw, train={**raw["train"], "epochs": -1})
    path = save_yaml(broken, tmp_path / "broken.yaml")
    client = _client()
    job = client.submit_job(entrypoint=f"{sys.executable} jobs/train.py --config {path}", runtime_env=RUNTIME_ENV)
    assert _wait(client, job, 300) == JobStatus.FAILED
    logs = client.get_job_logs(job)
    assert "invalid config" in logs and "train.epochs" in logs and "Traceback" not in logs
