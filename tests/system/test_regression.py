"""Regression through the public config path: a target in the thousands with a known signal is
learned (R² ≥ 0.9), passes the gate, and the endpoint and batch inference answer in its units."""

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.batch import run_batch_predict
from rayline.config import config_from_dict
from rayline.pipeline import promote_version, train_and_register
from rayline.serve.deploy import deploy
from rayline.storage import Storage
from tests.conftest import SERVE_PORT

EFFECT = {"A": 0.0, "B": 2000.0, "C": 5000.0}


def _truth(x1, x2, group):
    return 10_000 + 60 * x1 - 40 * x2 + np.vectorize(EFFECT.get)(group)


def _data(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.uniform(0, 100, n), rng.uniform(-50, 50, n)
    group = rng.choice(list(EFFECT), n)
    y = _truth(x1, x2, group) + rng.normal(0, 200, n)
    return pa.table({"id": np.arange(n), "x1": x1, "x2": x2, "group": group, "price": y.round(2)})


def _config(tmp_path):
    pq.write_table(_data(3000, 0), tmp_path / "sales.parquet")
    return {
        "name": "prices", "task": "regression", "storage": {"root": str(tmp_path / "root")},
        "data": {"primary": "sales",
                 "sources": {"sales": {"format": "parquet", "path": str(tmp_path / "sales.parquet"),
                                       "columns": {"price": {"type": "float", "nullable": False}}}},
                 "features": {"numeric": ["x1", "x2"], "categorical": ["group"]},
                 "label": {"column": "price"},
                 "split": {"method": "hash", "key": ["id"], "valid_fraction": 0.15, "test_fraction": 0.15},
                 "passthrough": ["id"], "block_rows": 1024},
        "train": {"num_workers": 2, "cpus_per_worker": 0.5, "epochs": 30, "batch_size": 128,
                  "early_stopping_patience": None},
        "serve": {"port": SERVE_PORT, "app_name": "prices", "cpus_per_replica": 0.25,
                  "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "batch": {"cpus_per_actor": 0.25, "gpus_per_actor": 0},
    }


@pytest.mark.parametrize("family", ["mlp", "xgboost"])
def test_regression_learns_the_signal_and_answers_in_original_units(ray_local, tmp_path, family):
    from ray import serve

    raw = _config(tmp_path)
    raw["train"]["model"] = {"family": family, "xgboost": {"num_boost_round": 300, "checkpoint_every": 150}}
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    test = out.version.metrics["test"]
    assert test["r2"] >= 0.9, test                                 # the raw-MSE model reached -0.96 here
    assert test["rmse"] < 0.3 * test["baseline_rmse"] and test["baseline_r2"] <= 0.0
    promote_version(cfg, storage, out.version.version, "production")  # passes the trivial gate

    rows = [{"x1": 10.0, "x2": 20.0, "group": "A"}, {"x1": 90.0, "x2": -40.0, "group": "C"},
            {"x1": 50.0, "x2": 0.0, "group": "B"}]
    truth = _truth(np.array([r["x1"] for r in rows]), np.array([r["x2"] for r in rows]),
                   np.array([r["group"] for r in rows]))
    d = deploy(cfg)
    try:
        r = httpx.post(f"{d.url}/predict", json={"instances": rows}, timeout=30)
        assert r.status_code == 200, r.text
        online = np.array([p["value"] for p in r.json()["predictions"]])
    finally:
        serve.delete(cfg.serve.app_name)
    np.testing.assert_allclose(online, truth, atol=1500)          # thousands, in the target's units
    assert abs(online[1] - online[0]) > 5000

    pq.write_table(pa.Table.from_pylist([{**r, "id": i} for i, r in enumerate(rows)]), tmp_path / "score.parquet")
    res = run_batch_predict(cfg, storage, str(tmp_path / "score.parquet"), str(tmp_path / "scored"), keep=["id"])
    batch = {r["id"]: r["prediction"] for r in pq.read_table(tmp_path / "scored" / "predictions").to_pylist()}
    assert res.rows_out == 3
    np.testing.assert_allclose([batch[i] for i in range(3)], online, rtol=0, atol=1e-3)


def test_a_trivial_regression_model_is_not_promoted(ray_local, tmp_path):
    """A target with no signal in the features: the model cannot beat predicting the mean."""
    raw = _config(tmp_path)
    noise = _data(3000, 1).set_column(4, "price", pa.array(np.random.default_rng(5).normal(10_000, 3000, 3000)))
    pq.write_table(noise, tmp_path / "sales.parquet")
    raw["train"]["epochs"] = 3
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    with pytest.raises(Exception, match="does not beat the trivial model"):
        promote_version(cfg, storage, out.version.version, "production")
    forced = promote_version(cfg, storage, out.version.version, "production", force=True)
    assert forced["forced"] is True


def test_log1p_target_is_learned_and_answered_in_its_units(ray_local, tmp_path):
    """A positive, right-skewed target (prices from ~100 to ~100,000) with label.transform: log1p:
    negative targets are quarantined with their reason, and the model, trained in log space,
    answers in the target's units (batch inference: the endpoint shares the code path above)."""
    rng = np.random.default_rng(3)
    n = 3000
    x1, x2 = rng.uniform(0, 100, n), rng.uniform(-50, 50, n)
    group = rng.choice(list(EFFECT), n)
    log_y = 6 + 0.04 * x1 - 0.02 * x2 + np.vectorize({"A": 0.0, "B": 0.7, "C": 1.5}.get)(group) + rng.normal(0, 0.1, n)
    y = np.exp(log_y)
    y[:7] = -5.0                                                  # impossible for log1p: quarantined, not dropped
    raw = _config(tmp_path)                                       # (writes its own data: replaced below)
    pq.write_table(pa.table({"id": np.arange(n), "x1": x1, "x2": x2, "group": group, "price": y}), tmp_path / "sales.parquet")
    raw["data"]["label"]["transform"] = "log1p"
    raw["train"]["model"] = {"family": "xgboost", "xgboost": {"num_boost_round": 300, "checkpoint_every": 150}}
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    from rayline.data import load_ingest
    ingest = load_ingest(cfg, storage, out.version.lineage["ingest_key"])
    assert sum(ingest.manifest["quarantine_by_rule"].values()) == 7
    q = pq.read_table(ingest.quarantine_uri).to_pylist()
    assert {r["column"] for r in q} == {"price"} and all(r["value"] == "-5.0" for r in q)
    test = out.version.metrics["test"]
    assert test["r2"] >= 0.9, test                               # on the original scale
    assert out.train.metric == "rmsle"
    rows = [{"id": 0, "x1": 5.0, "x2": 40.0, "group": "A"}, {"id": 1, "x1": 95.0, "x2": -45.0, "group": "C"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "score.parquet")
    run_batch_predict(cfg, storage, str(tmp_path / "score.parquet"), str(tmp_path / "scored"), keep=["id"], model=str(out.version.version))
    got = {r["id"]: r["prediction"] for r in pq.read_table(tmp_path / "scored" / "predictions").to_pylist()}
    truth = np.exp([6 + 0.2 - 0.8, 6 + 3.8 + 0.9 + 1.5])
    np.testing.assert_allclose([got[0], got[1]], truth, rtol=0.25)   # ~300 and ~46,000: units, not logs
