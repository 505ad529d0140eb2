"""Multiclass through the public config path: three string classes with a known signal are learned,
a label outside the declared classes is quarantined with its reason, and the endpoint and batch
inference answer with the same class names and probabilities."""

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayline.batch import run_batch_predict
from rayline.config import config_from_dict
from rayline.data import load_ingest
from rayline.pipeline import promote_version, train_and_register
from rayline.serve.deploy import deploy
from rayline.storage import Storage
from tests.conftest import SERVE_PORT

CLASSES = ["low", "mid", "high"]


def _grade(x1, ratio):
    """The truth: x1 sets the grade, a feature whose name has a slash (as in public data) shifts it."""
    score = x1 + 20 * ratio
    return np.where(score < 40, "low", np.where(score < 80, "mid", "high"))


def test_three_classes_are_learned_and_answered_by_name_online_and_in_batch(ray_local, tmp_path):
    from ray import serve

    rng = np.random.default_rng(7)
    n = 3000
    x1, ratio = rng.uniform(0, 100, n), rng.uniform(-1, 1, n)
    grade = _grade(x1 + rng.normal(0, 3, n), ratio).astype(object)
    grade[:5] = "unknown"                                          # not a declared class: quarantined
    pq.write_table(pa.table({"id": np.arange(n), "x1": x1, "od280/od315": ratio, "grade": grade.astype(str),
                             "region": rng.choice(["n", "s"], n)}), tmp_path / "wines.parquet")
    cfg = config_from_dict({
        "name": "grades", "task": "multiclass", "storage": {"root": str(tmp_path / "root")},
        "data": {"primary": "wines",
                 "sources": {"wines": {"format": "parquet", "path": str(tmp_path / "wines.parquet")}},
                 "features": {"numeric": ["x1", "od280/od315"], "categorical": ["region"]},
                 "label": {"column": "grade", "classes": CLASSES},
                 "split": {"method": "hash", "key": ["id"], "valid_fraction": 0.15, "test_fraction": 0.15},
                 "passthrough": ["id"], "block_rows": 1024},
        "train": {"num_workers": 1, "cpus_per_worker": 1,
                  "model": {"family": "xgboost", "xgboost": {"num_boost_round": 150, "checkpoint_every": 75}}},
        "serve": {"port": SERVE_PORT, "app_name": "grades", "cpus_per_replica": 0.25,
                  "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "batch": {"cpus_per_actor": 0.25, "gpus_per_actor": 0},
    })
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    ingest = load_ingest(cfg, storage, out.version.lineage["ingest_key"])
    q = pq.read_table(ingest.quarantine_uri).to_pylist()
    assert len(q) == 5 and {(r["rule"], r["column"], r["value"]) for r in q} == {("allowed", "grade", "unknown")}
    test = out.version.metrics["test"]
    assert test["accuracy"] >= 0.85, test                          # chance is ~0.4
    promote_version(cfg, storage, out.version.version, "production")

    rows = [{"id": 0, "x1": 5.0, "od280/od315": 0.0, "region": "n"},
            {"id": 1, "x1": 60.0, "od280/od315": 0.0, "region": "s"},
            {"id": 2, "x1": 95.0, "od280/od315": 0.5, "region": "n"}]
    d = deploy(cfg)
    try:
        r = httpx.post(f"{d.url}/predict", json={"instances": [{k: v for k, v in r.items() if k != "id"} for r in rows]},
                       timeout=30)
        assert r.status_code == 200, r.text
        online = r.json()["predictions"]
    finally:
        serve.delete(cfg.serve.app_name)
    assert [p["label"] for p in online] == ["low", "mid", "high"]
    for p in online:
        assert list(p["probabilities"]) == CLASSES and abs(sum(p["probabilities"].values()) - 1) < 1e-5

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "score.parquet")
    res = run_batch_predict(cfg, storage, str(tmp_path / "score.parquet"), str(tmp_path / "scored"), keep=["id"])
    assert (res.rows_out, res.quarantined) == (3, 0)
    batch = {r["id"]: r for r in pq.read_table(tmp_path / "scored" / "predictions").to_pylist()}
    assert [batch[i]["label"] for i in range(3)] == ["low", "mid", "high"]
    np.testing.assert_allclose([batch[i]["prediction"] for i in range(3)],
                               [[p["probabilities"][c] for c in CLASSES] for p in online], atol=1e-5)
