"""GPU placement on a node that advertises one GPU without having it (`ray start --num-gpus 1`):
a GPU replica lands there, and batch inference never waits forever behind it."""

import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.batch import run_batch_predict
from rayline.config import load_config
from rayline.errors import ResourceError
from rayline.registry import Registry
from rayline.serve.deploy import deploy
from tests.conftest import FLIGHTS_CONFIG
from tests.conftest import SERVE_PORT as PORT


@pytest.fixture(scope="module")
def gpu_node(ray_local, ray_nodes, flights_model):
    import ray

    pids = ray_nodes.add_worker(1, "gpu", num_gpus=1)
    deadline = time.time() + 60
    while ray.cluster_resources().get("GPU", 0) < 1 and time.time() < deadline:
        time.sleep(0.5)
    assert ray.cluster_resources().get("GPU", 0) == 1
    yield flights_model
    ray_nodes.kill(pids)


def _overrides(cfg, **extra):
    base = {"storage.root": cfg.storage.root, "serve.port": PORT, "serve.app_name": "gpu",
            "serve.autoscaling.min_replicas": 1, "serve.autoscaling.max_replicas": 1, "serve.cpus_per_replica": 0.25,
            "batch.cpus_per_actor": 0.25, "batch.max_actors": 1, **extra}
    return [f"{k}={v}" for k, v in base.items()]


def test_gpu_replica_and_batch_inference_share_one_gpu_without_waiting(gpu_node, tmp_path):
    import ray
    from ray import serve

    cfg, storage, _ = gpu_node
    overrides = _overrides(cfg, **{"serve.gpus_per_replica": 1})
    scfg = load_config(FLIGHTS_CONFIG, overrides)
    d = deploy(scfg)
    try:
        assert ray.available_resources().get("GPU", 0) == 0          # the replica holds the GPU
        info = httpx.get(f"{d.url}/model", timeout=30).json()
        assert info["device"] == "cpu"                                 # no CUDA there: said, not hidden
        _, model = Registry(storage, cfg.name).load(d.model_version)
        record = model.spec.example_record()
        assert httpx.post(f"{d.url}/predict", json=record, timeout=30).status_code == 200
        pq.write_table(pa.Table.from_pylist([record] * 20), tmp_path / "in.parquet")

        t0 = time.time()
        asks_gpu = load_config(FLIGHTS_CONFIG, _overrides(cfg, **{"batch.gpus_per_actor": 1}))
        with pytest.raises(ResourceError, match=r"only 0 of the cluster's 1 GPU\(s\) are free"):
            run_batch_predict(asks_gpu, storage, str(tmp_path / "in.parquet"), str(tmp_path / "out1"))
        assert time.time() - t0 < 30                                   # at once, not after a wait

        auto = load_config(FLIGHTS_CONFIG, _overrides(cfg))            # gpus_per_actor: auto -> CPU now
        assert run_batch_predict(auto, storage, str(tmp_path / "in.parquet"), str(tmp_path / "out2")).rows_out == 20
    finally:
        serve.delete("gpu")
    deadline = time.time() + 30
    while ray.available_resources().get("GPU", 0) < 1 and time.time() < deadline:
        time.sleep(0.5)
    res = run_batch_predict(asks_gpu, storage, str(tmp_path / "in.parquet"), str(tmp_path / "out3"))
    assert res.rows_out == 20                                          # the freed GPU is used (CPU fallback inside)


def test_training_and_serving_are_sized_to_the_gpus_the_cluster_has(gpu_node):
    """The default config (auto workers, use_gpu auto) on a one-GPU cluster plans one GPU worker;
    two workers asked for train on the one GPU there is and say so, instead of waiting forever for
    a second; impossible asks fail at once."""
    from rayline.serve.deploy import check_replica_resources
    from rayline.train.resources import cluster_worker_plan

    cfg, _, _ = gpu_node
    plan = cluster_worker_plan(load_config(FLIGHTS_CONFIG, [f"storage.root={cfg.storage.root}"]).train)
    assert (plan.workers, plan.use_gpu, plan.resources) == (1, True, {"CPU": 1.0, "GPU": 1})
    notes = []
    plan = cluster_worker_plan(load_config(FLIGHTS_CONFIG, [f"storage.root={cfg.storage.root}",
                                                            "train.num_workers=2"]).train, notes.append)
    assert (plan.workers, plan.use_gpu, plan.resources["GPU"]) == (1, True, 1)
    assert notes and "training on 1 GPU worker" in notes[0]
    t0 = time.time()
    with pytest.raises(ResourceError, match=r"needs 2 GPU\(s\), one per worker, but the cluster has 1"):
        cluster_worker_plan(load_config(FLIGHTS_CONFIG, ["train.use_gpu=true", "train.num_workers=2"]).train)
    with pytest.raises(ResourceError, match=r"serve.gpus_per_replica=1 x serve.autoscaling.min_replicas=2 needs 2 GPU"):
        check_replica_resources(load_config(FLIGHTS_CONFIG, ["serve.gpus_per_replica=1", "serve.autoscaling.min_replicas=2"]))
    assert time.time() - t0 < 5
