"""The composition without a cluster: train -> evaluate -> report -> track -> register -> link,
over a fake registry, tracker, training and evaluation (RunContext takes them all)."""

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from rayline.config import config_from_dict
from rayline.evaluate import Evaluation
from rayline.evaluate.threshold import ThresholdChoice
from rayline.features.fit import build_spec, partial_stats
from rayline.model.artifact import WEIGHTS, weights_to_bytes
from rayline.model.network import TabularNet
from rayline.pipeline import RunContext, train_in
from rayline.registry import ModelVersion
from rayline.storage import Storage
from rayline.train import TrainResult
from tests.conftest import small_config, small_tables


class FakeRegistry:
    def __init__(self):
        self.versions: list[ModelVersion] = []

    def find_run(self, run_name):
        return next((v for v in self.versions if v.lineage["run_name"] == run_name), None)

    def register(self, files, metrics, lineage):
        v = ModelVersion("m", len(self.versions) + 1, f"mem://m/{len(self.versions) + 1}", metrics, lineage)
        v.files = files
        self.versions.append(v)
        return v


class FakeTracker:
    def __init__(self):
        self.calls = []

    def record_training(self, cfg, ingest, trained, ev, report, parent_run_id=None, tags=None):
        self.calls.append(("record", trained.run_name, ev.value, sorted(report)))
        return SimpleNamespace(run_id="r1", to_json=lambda: {"run_id": "r1"})

    def link_version(self, run, name, version, uri):
        self.calls.append(("link", run.run_id, version))


def _context(tmp_path):
    cfg = config_from_dict(small_config(tmp_path, tmp_path / "root"))
    t = small_tables(200)["trips"]
    t = t.append_column("elevation", pa.array(np.ones(200))).append_column("seats", pa.array(np.ones(200)))
    t = t.append_column("maker", pa.array(["X"] * 200))  # what the joins bring
    spec = build_spec(partial_stats(t, cfg.data.features, np.zeros(200)), cfg)
    ingest = SimpleNamespace(key="k" * 16, path="mem://ingest", spec=spec, split_uri=lambda s: f"mem://ingest/{s}",
                             manifest={"input_fingerprint": "f", "config_hash": "h", "rows": {"train": 200}})
    trained_runs = []

    def train(cfg, ingest, storage, *, run_name, fresh, progress):
        trained_runs.append(run_name)
        blob = weights_to_bytes(TabularNet(ingest.spec, cfg.train.model))
        return TrainResult(run_name=run_name, run_uri="mem://run", checkpoint_uri="mem://ckpt", model_bytes=blob,
                           model_file=WEIGHTS, history=[{"epoch": 1, "train_loss": 0.5, "val_loss": 0.5, "val_auc": 0.7, "epoch_time_s": 1.0,
                                                           "train_samples_per_s": 200.0, "lr": 0.01}],
                           best_epoch=1, metric="auc", best_value=0.7, device="cpu", workers=1, feed="memory",
                           timings_s={"fit": 1.0})

    evaluated = []

    def evaluate(model, uri, slice_columns=None, explain_rows=0):
        evaluated.append((model.family, uri, model.config.threshold))
        return Evaluation(split="test", metrics={"auc": 0.71, "rows": 10}, metric="auc")

    def choose_threshold(model, uri, cfg):
        assert uri == "mem://ingest/valid" and cfg.objective == "f1"   # chosen on validation, never test
        return ThresholdChoice(0.3, "f1", "valid", 0.4, 0.6, 0.48)

    ctx = RunContext(cfg, Storage(str(tmp_path / "root")), FakeRegistry(), FakeTracker(), train=train,
                     evaluate=evaluate, choose_threshold=choose_threshold)
    return ctx, ingest, trained_runs, evaluated


def test_a_run_is_evaluated_on_test_reported_tracked_registered_and_linked(tmp_path):
    ctx, ingest, trained_runs, evaluated = _context(tmp_path)
    out = train_in(ctx, ingest=ingest)
    assert trained_runs == [out.version.lineage["run_name"]]
    assert evaluated == [("mlp", "mem://ingest/test", 0.3)]     # the model that was trained, at its threshold
    v = ctx.registry.versions[0]
    assert out.version is v and v.metrics["test"] == {"auc": 0.71, "rows": 10}
    assert {WEIGHTS, "feature_spec.json", "model_config.json", "report/report.md"} <= set(v.files)
    assert v.lineage["ingest_key"] == "k" * 16 and v.lineage["tracking"] == {"run_id": "r1"}
    assert json.loads(v.files["model_config.json"])["threshold"] == 0.3 and v.lineage["threshold"]["objective"] == "f1"
    assert set(v.lineage["timings_s"]) == {"train", "evaluate", "total"}
    record, link = ctx.tracker.calls
    assert record[0] == "record" and "report.md" in record[3] and link == ("link", "r1", 1)


def test_the_same_data_and_config_reuse_the_registered_version(tmp_path):
    ctx, ingest, trained_runs, _ = _context(tmp_path)
    first = train_in(ctx, ingest=ingest)
    again = train_in(ctx, ingest=ingest)
    assert again.reused and again.version is first.version and len(trained_runs) == 1
    fresh = train_in(ctx, ingest=ingest, fresh=True)
    assert not fresh.reused and fresh.version.version == 2 and len(trained_runs) == 2
