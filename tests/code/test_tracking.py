"""Experiment tracking: what a training and a tuning run leave in MLflow (a real SQLite store, no Ray)."""

import math

import pytest
from mlflow.tracking import MlflowClient

from rayline.config import config_from_dict
from rayline.data.dataset import IngestResult
from rayline.evaluate.evaluate import Evaluation
from rayline.storage import Storage
from rayline.tracking import MAX_PARAM_CHARS, Tracker, flatten, history_metrics, tracking_uri
from rayline.train.trainer import TrainResult
from rayline.tune.tuner import TuneResult
from tests.conftest import small_config


def _cfg(root, **tracking):
    return config_from_dict(small_config(root / "data", root / "store", tracking=tracking or {}))


def _ingest() -> IngestResult:
    return IngestResult(key="k" * 16, path="/x", reused=False, spec=None,
                        manifest={"input_fingerprint": "fp123", "rows": {"read": 600, "train": 420, "test": 90}})


def _train(run_name="trips-run") -> TrainResult:
    history = [{"epoch": e, "train_loss": 0.7 - e / 10, "val_loss": 0.71 - e / 10, "val_auc": 0.6 + e / 20,
                "precision": "fp32", "epoch_time_s": 1.5, "grad_norm": float("nan")} for e in (1, 2, 3)]
    return TrainResult(run_name=run_name, run_uri="/runs/r", checkpoint_uri="/runs/r/ckpt", model_bytes=b"m",
                       model_file="weights.pt", history=history, best_epoch=3, metric="auc", best_value=0.75,
                       device="cpu", workers=2, feed="memory", timings_s={"fit": 12.5})


def _evaluation() -> Evaluation:
    return Evaluation(split="test", metrics={"auc": 0.74, "log_loss": 0.5, "rows": 90, "note": "text"}, metric="auc")


def test_a_training_run_is_recorded_with_params_epochs_test_metrics_and_artifacts(tmp_path):
    cfg = _cfg(tmp_path)
    storage = Storage(cfg.storage.root)
    tracker = Tracker(cfg, storage)
    assert tracker.uri == f"sqlite:///{storage.path('mlflow', 'mlflow.db')}"  # embedded: under the storage root
    run = tracker.record_training(cfg, _ingest(), _train(), _evaluation(), {"report.md": b"# report", "roc.png": b"png"})
    assert run is not None and run.experiment == "trips"
    tracker.link_version(run, "trips", 4, "/store/models/trips/4")

    c = MlflowClient(tracking_uri=tracker.uri)
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "trips-run"
    params = got.data.params
    assert params["train.epochs"] == "3" and params["task"] == "binary"
    assert params["data.label.column"] == "delay" and "serve.port" not in params  # what made the model only
    tags = got.data.tags
    assert tags["rayline.data_fingerprint"] == "fp123" and tags["rayline.config_hash"] == cfg.config_hash()
    assert tags["rayline.model_version"] == "4" and tags["rayline.model_uri"] == "/store/models/trips/4"
    m = got.data.metrics
    assert m["test_auc"] == pytest.approx(0.74) and m["best_val_auc"] == pytest.approx(0.75)
    assert m["rows_train"] == 420 and m["seconds_fit"] == pytest.approx(12.5) and "test_note" not in m
    # one point per epoch, the epoch as the step; NaN (never logged) skipped
    curve = c.get_metric_history(run.run_id, "val_auc")
    assert [(p.step, round(p.value, 3)) for p in curve] == [(1, 0.65), (2, 0.7), (3, 0.75)]
    assert c.get_metric_history(run.run_id, "grad_norm") == []
    arts = {a.path for a in c.list_artifacts(run.run_id)} | {a.path for a in c.list_artifacts(run.run_id, "report")}
    assert {"config.yaml", "history.json", "evaluation.json", "report/report.md", "report/roc.png"} <= arts
    assert storage.exists("mlflow", "artifacts", "trips")  # artifacts beside the store, under the root


def test_a_second_run_joins_the_same_experiment(tmp_path):
    cfg = _cfg(tmp_path, experiment="flights-delay")
    storage = Storage(cfg.storage.root)
    a = Tracker(cfg, storage).record_training(cfg, _ingest(), _train("a"), _evaluation(), {})
    b = Tracker(cfg, storage).record_training(cfg, _ingest(), _train("b"), _evaluation(), {})
    assert a.experiment_id == b.experiment_id and a.run_id != b.run_id and a.experiment == "flights-delay"
    runs = MlflowClient(tracking_uri=a.uri).search_runs([a.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["a", "b"]


def test_a_tuning_run_is_a_parent_with_one_child_per_trial(tmp_path):
    cfg = _cfg(tmp_path)
    storage = Storage(cfg.storage.root)
    best = _train("tune-x-t2")
    result = TuneResult(name="tune-x", uri="/tune/x", space={"train.lr": {"loguniform": [1e-4, 1e-2]}},
                        trials=[{"trial_id": "t2", "params": {"train.lr": 0.003}, "score": 0.75, "status": "done"},
                                {"trial_id": "t1", "params": {"train.lr": 0.0001}, "score": 0.61, "status": "done"},
                                {"trial_id": "t3", "params": {"train.lr": 0.01}, "score": None, "status": "error"}],
                        best=best, best_trial={"trial_id": "t2", "score": 0.75}, curves={"t1": [0.58, 0.61]})
    tracker = Tracker(cfg, storage)
    parent = tracker.start_tuning(cfg, result)
    child = tracker.record_training(cfg, _ingest(), best, _evaluation(), {}, parent_run_id=parent.run_id,
                                    tags={"rayline.trial_id": "t2"})
    c = MlflowClient(tracking_uri=tracker.uri)
    p = c.get_run(parent.run_id)
    assert p.data.params["space.train.lr.loguniform"] == "[0.0001, 0.01]" and p.data.params["trials"] == "3"
    kids = c.search_runs([parent.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    by_trial = {r.data.tags["rayline.trial_id"]: r for r in kids}
    assert set(by_trial) == {"t1", "t2", "t3"} and by_trial["t2"].info.run_id == child.run_id
    assert [pt.value for pt in c.get_metric_history(by_trial["t1"].info.run_id, "val_auc")] == [0.58, 0.61]
    assert by_trial["t3"].info.status == "FAILED" and by_trial["t1"].data.params["train.lr"] == "0.0001"


def test_an_unwritable_store_is_a_warning_not_a_lost_model(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, uri="http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    said = []
    tracker = Tracker(cfg, Storage(cfg.storage.root), progress=said.append)
    assert tracker.record_training(cfg, _ingest(), _train(), _evaluation(), {}) is None
    assert len(said) == 1 and "not recorded in MLflow at http://127.0.0.1:9" in said[0]


def test_remote_storage_without_a_uri_says_why_once(tmp_path):
    cfg = _cfg(tmp_path)
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"root": "s3://bucket/rayline"})})
    said = []
    tracker = Tracker(cfg, Storage("s3://bucket/rayline?endpoint_override=127.0.0.1:9"), progress=said.append)
    assert tracking_uri(cfg, Storage(str(tmp_path))) is not None
    assert not tracker.enabled
    assert tracker.record_training(cfg, _ingest(), _train(), _evaluation(), {}) is None
    assert tracker.record_training(cfg, _ingest(), _train(), _evaluation(), {}) is None
    assert len(said) == 1 and "set it to a shared MLflow server" in said[0]


def test_disabled_tracking_writes_nothing(tmp_path):
    cfg = _cfg(tmp_path, enabled=False)
    storage = Storage(cfg.storage.root)
    said = []
    assert Tracker(cfg, storage, progress=said.append).record_training(cfg, _ingest(), _train(), _evaluation(), {}) is None
    assert said == [] and not storage.exists("mlflow")


def test_config_rejects_a_uri_that_is_not_one(tmp_path):
    from rayline.errors import ConfigError

    with pytest.raises(ConfigError, match="tracking.uri: expected an MLflow tracking URI"):
        _cfg(tmp_path, uri="localhost:5000")
    with pytest.raises(ConfigError, match="no longer starts on a directory"):
        _cfg(tmp_path, uri="file:///tmp/mlruns")


def test_flatten_and_history_metrics():
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x" * (MAX_PARAM_CHARS + 10), "e": None})
    assert flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and flat["e"] == "null"
    assert len(flat["d"]) == MAX_PARAM_CHARS and flat["d"].endswith("...")
    got = history_metrics([{"epoch": 1, "loss": 0.5, "ok": True, "dev": "cuda", "bad": math.inf}])
    assert got == [("loss", 0.5, 1)]


def test_changing_where_a_model_is_served_keeps_its_run_name(tmp_path):
    a = _cfg(tmp_path)
    b = a.model_copy(update={"serve": a.serve.model_copy(update={"port": 9999}),
                             "tracking": a.tracking.model_copy(update={"enabled": False})})
    c = a.model_copy(update={"train": a.train.model_copy(update={"epochs": 9})})
    assert a.model_hash() == b.model_hash() != c.model_hash()
    assert a.model_hash("tune") != a.model_copy(update={"tune": a.tune.model_copy(update={"trials": 2})}).model_hash("tune")
