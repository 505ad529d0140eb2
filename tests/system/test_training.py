"""Training end to end on a real Ray: resume after worker and driver failures, determinism."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from rayline.config import config_from_dict, load_config
from rayline.pipeline import evaluate_version, train_and_register
from rayline.registry import Registry
from rayline.storage import Storage
from tests.conftest import FLIGHTS_CONFIG, ROOT, small_config


def _wait_for_checkpoint(run_dir: Path, timeout: float = 240) -> None:
    """Until Ray Train has *registered* a checkpoint (a report in the ~2 s before a crash can be
    lost: the controller polls every 2 s), i.e. its snapshot lists one."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads(snapshot.read_text()).get("checkpoint_results"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no registered checkpoint under {run_dir} after {timeout}s")


def _train_workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "RayTrainWorker" in cmd:
            out.append(p)
    return out


def _actors(class_name: str, state: str | None = None) -> list:
    """Actors of a class this Ray session has had (the State API keeps dead ones)."""
    from ray.util.state import list_actors

    filters = [("class_name", "=", class_name)] + ([("state", "=", state)] if state else [])
    return sorted(a.actor_id for a in list_actors(filters=filters, limit=10_000))


def _assert_resumed_once(history: list[dict], epochs: int) -> int:
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1)), "an epoch was skipped or trained twice"
    attempts = [h["attempt"] for h in history]
    assert attempts == sorted(attempts) and attempts[-1] >= 2, f"the run did not resume: {attempts}"
    first_resumed = attempts.index(2)
    assert first_resumed >= 1, "resumed at epoch 1: the checkpoint was not used"
    return first_resumed


def _train_killing_a_worker(cfg, ingest, run: str):
    """Train (fresh) while a thread SIGKILLs one training worker once a checkpoint is registered."""
    storage = Storage(cfg.storage.root)
    killed = []

    def killer():
        _wait_for_checkpoint(Path(storage.root, "runs", run))
        workers = _train_workers()
        if workers:
            workers[-1].send_signal(signal.SIGKILL)
            killed.append(workers[-1].pid)
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    out = train_and_register(cfg, storage, ingest=ingest, run_name=run, fresh=True)
    t.join(timeout=5)
    assert killed, "no training worker process was found to kill"
    return out


def test_small_pipeline_trains_registers_and_reuses(ray_local, small_data):
    data, root = small_data
    cfg = config_from_dict(small_config(data, root))
    storage = Storage(cfg.storage.root)
    managers = _actors("DatasetManager")
    out = train_and_register(cfg, storage)
    assert not out.reused and out.version.version == 1
    history = out.train.history
    assert len(history) == 3 and all("val_auc" in h and "train_loss" in h for h in history)
    # the registered weights are the best epoch's (checkpoints are ranked by their own epoch's score)
    best = max(range(len(history)), key=lambda i: history[i]["val_auc"])
    assert out.train.best_epoch == best + 1 and out.train.best_value == history[best]["val_auc"]
    lineage = out.version.lineage
    for key in ("data_fingerprint", "config_hash", "ingest_key", "packages", "hardware", "timings_s", "git_commit"):
        assert key in lineage
    assert lineage["packages"]["ray"] == "2.60.0"
    # fit() -> first step is timed (the workers stamp it); a run without Ray Datasets started no
    # dataset manager; the controller's variables were set for fit() only
    assert 0 < out.train.timings_s["to_first_step"] < out.train.timings_s["fit"]
    assert _actors("DatasetManager") == managers
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in os.environ
    # precision and where the batches lived, per epoch and in the lineage (bf16 on a GPU that has it)
    assert all(h["precision"] == "fp32" and h["feed_device"] in ("cpu", "host") for h in history)
    assert {k: lineage["training"][k] for k in ("device", "precision")} == {"device": "cpu", "precision": "fp32"}
    assert lineage["training"]["feed_device"] == history[-1]["feed_device"]
    report = Path(out.version.uri, "report")
    assert {"report.md", "roc.png", "calibration.png", "curves.png"} <= {p.name for p in report.iterdir()}
    assert (Path(out.train.run_uri) / "history.json").exists()
    # recorded in MLflow (the embedded store under the root), and the lineage links to the run
    from mlflow.tracking import MlflowClient

    tracked = lineage["tracking"]
    run = MlflowClient(tracking_uri=tracked["uri"]).get_run(tracked["run_id"])
    assert tracked["uri"].startswith(f"sqlite:///{root}") and run.info.run_name == out.train.run_name
    assert run.data.tags["rayline.model_version"] == "1" and run.data.params["train.epochs"] == "3"
    assert run.data.metrics["test_auc"] == pytest.approx(out.version.metrics["test"]["auc"])
    # same data + config: the registered model is reused, no training (and no second MLflow run);
    # where it is served is not part of the model, so a new port reuses it too
    again = train_and_register(cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": 8999})}), storage)
    assert again.reused and again.version.version == 1
    assert len(MlflowClient(tracking_uri=tracked["uri"]).search_runs([tracked["experiment_id"]])) == 1
    # `rayline evaluate` recomputes the same numbers for a registered version
    ev = evaluate_version(cfg, storage, "1")
    assert ev["value"] == pytest.approx(out.version.metrics["test"]["auc"], abs=1e-9)


def test_same_config_and_seed_give_same_metrics(ray_local, small_data):
    data, root = small_data
    raw = small_config(data, root)
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    a = train_and_register(cfg, storage, run_name="det-a")
    b = train_and_register(cfg, storage, run_name="det-b")
    strip = lambda h: [{k: v for k, v in r.items() if k in ("train_loss", "val_loss", "val_auc")} for r in h]  # noqa: E731
    assert strip(a.train.history) == strip(b.train.history)
    assert a.version.metrics["test"] == b.version.metrics["test"]


def test_killed_worker_resumes_from_checkpoint(ray_local, flights_ingest):
    base, ingest = flights_ingest
    cfg = load_config(FLIGHTS_CONFIG, [f"storage.root={base.storage.root}", "train.epochs=5", "train.model.family=mlp",
                                       "train.max_failures=2", "train.early_stopping_patience=null",
                                       "train.num_workers=2", "train.cpus_per_worker=0.5"])
    out = _train_killing_a_worker(cfg, ingest, "worker-kill")
    _assert_resumed_once(out.train.history, 5)


def test_killed_driver_rerun_resumes(ray_local, flights_ingest, tmp_path):
    import ray

    base, ingest = flights_ingest
    overrides = [f"storage.root={base.storage.root}", "train.epochs=5", "train.early_stopping_patience=null",
                 "train.model.family=mlp", "train.num_workers=2", "train.cpus_per_worker=0.5"]
    cfg = load_config(FLIGHTS_CONFIG, overrides)
    storage = Storage(cfg.storage.root)
    run = "driver-kill"
    address = ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "rayline.cli", "train", "--config", str(FLIGHTS_CONFIG), "--address", address,
           "--run-name", run, "--fresh"] + [a for o in overrides for a in ("--set", o)]
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_checkpoint(Path(storage.root, "runs", run))
        time.sleep(0.5)
        driver.send_signal(signal.SIGKILL)  # the driver dies mid-run, no cleanup
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert not Registry(storage, cfg.name).find_run(run), "the killed run must not have registered a model"
    # the workers die with their driver; wait until they are gone before rerunning
    deadline = time.time() + 60
    while _train_workers() and time.time() < deadline:
        time.sleep(0.5)
    out = train_and_register(cfg, storage, ingest=ingest, run_name=run)  # same command again: resume
    _assert_resumed_once(out.train.history, 5)
    saved = json.loads(Path(storage.root, "runs", run, "history.json").read_text())["history"]
    assert saved == out.train.history


def test_xgboost_killed_worker_resumes_from_checkpoint(ray_local, flights_ingest):
    """The xgboost family with two data-parallel workers: one is killed after a checkpoint; the group
    restarts and boosting continues from the checkpointed booster, no round trained twice."""
    base, ingest = flights_ingest
    cfg = load_config(FLIGHTS_CONFIG, [f"storage.root={base.storage.root}", "train.model.family=xgboost",
                                       "train.model.xgboost.num_boost_round=60", "train.model.xgboost.checkpoint_every=10",
                                       "train.model.xgboost.early_stopping_rounds=null", "train.max_failures=2",
                                       "train.num_workers=2", "train.cpus_per_worker=0.5"])
    out = _train_killing_a_worker(cfg, ingest, "xgb-worker-kill")
    history = out.train.history
    assert [h["round"] for h in history] == [10, 20, 30, 40, 50, 60], "a round was skipped or trained twice"
    first_resumed = _assert_resumed_once(history, 6)
    assert history[first_resumed]["round"] > 10
    assert out.version.lineage["training"]["family"] == "xgboost" and out.train.workers == 2
    assert (out.version.lineage["training"]["precision"], out.version.lineage["training"]["feed_device"]) == ("fp32", "cpu")
    assert out.version.metrics["test"]["auc"] > 0.68


def test_without_rays_cleaner_the_driver_frees_a_dead_controllers_placement_group(ray_local, tmp_path):
    """On an embedded Ray, Ray Train's placement-group cleaner is not started (controller_setup):
    when the controller dies, the driver removes the placement group it held, so the next run in
    the same session (a notebook) is not left waiting for its CPUs."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.placement_group import placement_group_table

    from rayline.runtime import embedded
    from rayline.train.controller_setup import dropped_callbacks, lean, placement_groups_released

    assert not embedded()  # the test session attaches to a `ray start` head
    cleaners, controllers, before = _actors("PlacementGroupCleaner"), _actors("TrainController"), set(placement_group_table())

    def sleep_forever(config):
        time.sleep(600)

    trainer = lean(TorchTrainer, dropped_callbacks(has_datasets=False, embedded=True))(
        sleep_forever, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.25}),
        run_config=RunConfig(name="dead-controller", storage_path=str(tmp_path)))
    errors = []

    def fit():
        try:
            with placement_groups_released(True):
                trainer.fit()
        except Exception as e:  # noqa: BLE001 - the controller's death, expected
            errors.append(e)

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    held = lambda: [k for k, v in placement_group_table().items() if k not in before and v["state"] != "REMOVED"]  # noqa: E731
    deadline = time.time() + 120
    while not (_train_workers() and held()) and time.time() < deadline:
        time.sleep(0.2)
    assert held(), "the trainer never placed its worker"
    from ray.util.state import list_actors
    controller = [a for a in list_actors(filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")])
                  if a.actor_id not in controllers]
    assert len(controller) == 1, controller
    os.kill(controller[0].pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive() and errors, "fit() did not fail when its controller died"
    deadline = time.time() + 30
    while held() and time.time() < deadline:
        time.sleep(0.2)
    assert not held(), f"the dead controller's placement group is still held: {held()}"
    assert _actors("PlacementGroupCleaner") == cleaners  # the lean trainer started none


def test_a_worker_failure_reaches_the_user_as_the_workers_own_error(ray_local, small_data):
    """The issue's case: the training split gone from under the workers. The one-line error names
    the worker's exception and message (was: 'WorkerGroupError: Training failed due to worker
    errors:' and nothing else) and where the worker logs are."""
    import shutil

    from rayline.data import run_ingest
    from rayline.errors import RaylineError
    from rayline.train import run_training

    data, root = small_data
    raw = small_config(data, root)
    raw["train"]["max_failures"] = 0
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    ingest = run_ingest(cfg, storage)
    shutil.rmtree(ingest.split_uri("train"))
    with pytest.raises(RaylineError) as e:
        run_training(cfg, ingest, storage, run_name="no-train-split", fresh=True)
    message = str(e.value)
    assert "split=train" in message and "WorkerGroupError" not in message, message
    assert ("FileNotFoundError" in message or "ArrowInvalid" in message or "OSError" in message), message
    assert "worker logs in " in message and "\n" not in message


def test_same_raw_data_gives_byte_identical_ready_files_and_models(ray_local, tmp_path):
    """Two ingests and trainings of the same raw files in fresh storage roots: the model-ready
    files, their names and the spec are byte-identical, and so are the booster and the network
    (same seed, same worker count). The primary table spans several files and many batches, so
    tasks finish in varying order: the files must not follow that order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rayline.data import run_ingest
    from tests.conftest import small_tables, write_tables

    tables = small_tables(n=12_000, seed=3)
    trips = tables.pop("trips")
    bad = np.zeros(trips.num_rows, bool)
    bad[::97] = True  # some rows for the quarantine (negative distance)
    trips = trips.set_column(trips.schema.get_field_index("distance"), "distance",
                             pa.array(np.where(bad, -1.0, trips.column("distance").to_numpy())))
    data = tmp_path / "data"
    write_tables(tables, data, fmt="parquet")
    (data / "trips").mkdir()
    for i in range(4):
        pq.write_table(trips.slice(i * 3_000, 3_000), data / "trips" / f"part-{i}.parquet", row_group_size=700)

    def run(root: Path, family: str):
        raw = small_config(data, root, fmt="parquet")
        raw["data"]["sources"]["trips"]["path"] = str(data / "trips")
        raw["train"]["model"] = {"family": family, "xgboost": {"num_boost_round": 20}}
        raw["train"]["epochs"] = 2
        cfg = config_from_dict(raw)
        storage = Storage(cfg.storage.root)
        ingest = run_ingest(cfg, storage)
        out = train_and_register(cfg, storage, ingest=ingest)
        return ingest, out

    def digests(directory: Path, skip: set[str]) -> dict[str, str]:
        import hashlib
        return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in skip}

    for family, weights in (("xgboost", "booster.ubj"), ("mlp", None)):
        (ia, a), (ib, b) = run(tmp_path / f"{family}-a", family), run(tmp_path / f"{family}-b", family)
        da, db = digests(Path(ia.path), {"manifest.json"}), digests(Path(ib.path), {"manifest.json"})
        ready = sorted(k for k in da if k.startswith("ready/"))
        assert ready and all(Path(k).name.startswith("part-") for k in ready)  # no random write ids
        assert sum(pq.ParquetFile(Path(ia.path) / k).metadata.num_rows for k in ready) == ia.manifest["rows"]["clean"]
        assert ia.manifest["rows"]["quarantined"] >= 12_000 // 97
        assert da == db, sorted(k for k in da if da[k] != db.get(k))
        # the model files: everything but what names the run, its root or its timings
        skip = {"lineage.json", "history.json", "config.yaml", "manifest.json", "_SUCCESS"}
        ma, mb = digests(Path(a.version.uri), skip), digests(Path(b.version.uri), skip)
        ma, mb = ({k: v for k, v in m.items() if not k.startswith("report/")} for m in (ma, mb))
        assert ma == mb, sorted(k for k in ma if ma[k] != mb.get(k))
        if weights:
            assert weights in ma
        assert a.version.lineage["training"]["seed"] == 0 and a.version.lineage["training"]["workers"] == 2
        assert a.version.lineage["training"]["cpus_per_worker"] == 0.5


def test_cpus_per_node_reads_the_cluster_and_falls_back_to_totals(ray_local, monkeypatch):
    """What the auto sizes see: each node's free and total CPUs; where the private per-node view
    cannot answer (a Ray Client connection), every node's total, as if free."""
    from ray._private import state

    from rayline.ray_compat import cpus_per_node

    nodes = cpus_per_node()
    assert nodes and all(0 <= free <= total for free, total in nodes)
    assert 2.0 in [total for _, total in nodes]                         # the session's head: --num-cpus=2

    def unavailable():
        raise RuntimeError("no GCS client in this process")

    monkeypatch.setattr(state, "available_resources_per_node", unavailable)
    fallback = cpus_per_node()
    assert sorted(t for _, t in fallback) == sorted(t for _, t in nodes) and all(f == t for f, t in fallback)
