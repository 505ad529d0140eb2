"""`rayline tune` on a real Ray: a tiny search (2 trials, ASHA) whose driver is killed mid-way
resumes with `Tuner.restore` (trials are not started over), ranks the trials, and registers the
best with its trial and search space in the lineage."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from rayline.config import config_from_dict
from rayline.registry import Registry
from rayline.storage import Storage
from tests.conftest import ROOT, save_yaml, small_config


def _experiment_saved(root: Path) -> bool:
    """Tune has saved the experiment state and at least one trial's Train run has a checkpoint."""
    state = list((root / "tune").glob("*/experiment_state-*.json"))
    snapshots = list((root / "runs").glob("tune-*/checkpoint_manager_snapshot.json"))
    for s in snapshots:
        try:
            if state and json.loads(s.read_text()).get("checkpoint_results"):
                return True
        except (OSError, ValueError):
            pass
    return False


def _rayline_workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "RayTrainWorker" in cmd or "ImplicitFunc" in cmd:
            out.append(p)
    return out


def test_tune_killed_driver_resumes_ranks_and_registers_the_best(ray_local, small_data, tmp_path):
    import ray

    data, root = small_data
    raw = small_config(data, root)
    raw["train"]["model"] = {"family": "xgboost", "xgboost": {"num_boost_round": 40, "early_stopping_rounds": None}}
    raw["tune"] = {"trials": 2, "report_every_rounds": 10, "grace_period": 2,
                   "search_space": {"train.model.xgboost.eta": {"loguniform": [0.02, 0.3]},
                                    "train.model.xgboost.max_depth": {"randint": [2, 5]}}}
    config = save_yaml(raw, tmp_path / "tune.yaml")
    address = ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "rayline.cli", "tune", "--config", str(config), "--address", address, "--json"]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while not _experiment_saved(Path(root)) and time.time() < deadline and driver.poll() is None:
                time.sleep(0.3)
            assert driver.poll() is None, "the tuning run ended before it could be killed"
            driver.send_signal(signal.SIGKILL)                            # no cleanup, mid-search
            driver.wait(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
    cfg = config_from_dict(raw)
    assert not Registry(Storage(cfg.storage.root), cfg.name).versions(), "a killed search must not register"
    deadline = time.time() + 60
    while _rayline_workers() and time.time() < deadline:             # its trials die with it
        time.sleep(0.5)

    with open(tmp_path / "second.log", "w") as log:
        again = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + (tmp_path / "second.log").read_text()[-3000:]
    out = json.loads(again.stdout.strip().splitlines()[-1])
    assert out["restored"] is True                                    # Tuner.restore, not a new search
    assert len(out["trials"]) == 2 and len({t["trial_id"] for t in out["trials"]}) == 2
    scores = [t["score"] for t in out["trials"] if t["status"] == "done"]
    assert scores == sorted(scores, reverse=True)                     # ranked best first (AUC: max)
    best = out["best_trial"]
    assert best["trial_id"] == out["trials"][0]["trial_id"]
    mv = Registry(Storage(cfg.storage.root), cfg.name).get(out["version"])
    tuning = mv.lineage["tuning"]
    assert tuning["trial_id"] == best["trial_id"] and tuning["params"] == best["params"]
    assert set(tuning["search_space"]) == {"train.model.xgboost.eta", "train.model.xgboost.max_depth"}
    assert 0.02 <= best["params"]["train.model.xgboost.eta"] <= 0.3
    assert 2 <= best["params"]["train.model.xgboost.max_depth"] <= 5
    assert mv.metrics["test"]["auc"] > 0.5
    # in MLflow: the search as a parent run, every trial a child with its curve, the best one in full
    from mlflow.tracking import MlflowClient

    tracked = out["tracking"]
    client = MlflowClient(tracking_uri=tracked["uri"])
    parent_id = tuning["tracking_parent_run_id"]
    kids = client.search_runs([tracked["experiment_id"]], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {r.data.tags["rayline.trial_id"] for r in kids} == {str(t["trial_id"]) for t in out["trials"]}
    best_run = client.get_run(tracked["run_id"])
    assert best_run.data.tags["rayline.best_trial"] == "true" and best_run.data.tags["rayline.model_version"] == str(out["version"])
    other = next(r for r in kids if r.info.run_id != tracked["run_id"])
    assert client.get_metric_history(other.info.run_id, "val_auc")        # the curve ASHA judged it on
