"""The same code on a 3-node cluster on this machine (head + 2 workers started with `ray start`):
training spreads over nodes and survives losing one; the endpoint survives losing a replica's node."""

import asyncio
import threading
import time

import httpx
import psutil
import pytest

from rayline.config import config_from_dict
from rayline.pipeline import promote_version, train_and_register
from rayline.serve.deploy import deploy
from rayline.storage import Storage
from tests.conftest import SERVE_PORT, small_config, small_tables, write_tables


@pytest.fixture(scope="module")
def three_nodes(ray_local, ray_nodes):
    import ray

    workers = [ray_nodes.add_worker(1, "w0"), ray_nodes.add_worker(1, "w1")]
    deadline = time.time() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.time() < deadline:
        time.sleep(0.5)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    yield ray_nodes, workers
    for pids in workers:
        ray_nodes.kill(pids)


def _node_of(pid: int, node_pids: list[list[int]]) -> int | None:
    """Index of the worker node whose raylet is an ancestor of `pid`."""
    try:
        parents = {p.pid for p in psutil.Process(pid).parents()}
    except psutil.Error:
        return None
    for i, pids in enumerate(node_pids):
        if parents & set(pids):
            return i
    return None


def _config(tmp_path, **train):
    write_tables(small_tables(3000), tmp_path / "data")
    raw = small_config(tmp_path / "data", tmp_path / "root")
    raw["train"].update({"epochs": 6, "placement_strategy": "STRICT_SPREAD", "max_failures": 2,
                         "early_stopping_patience": None, **train})
    return raw


def test_auto_sizes_put_one_worker_on_each_node(three_nodes, tmp_path):
    """The default sizes on a cluster: one worker per node with a whole CPU free, spread (no
    placement strategy set), each with the smallest such node's whole free CPUs (1 here)."""
    raw = _config(tmp_path, epochs=2)
    for key in ("num_workers", "cpus_per_worker", "placement_strategy"):
        raw["train"].pop(key, None)                                  # the defaults: auto, auto, unset
    cfg = config_from_dict(raw)
    assert (cfg.train.num_workers, cfg.train.cpus_per_worker) == ("auto", "auto")
    out = train_and_register(cfg, Storage(cfg.storage.root), run_name="auto-sizes", fresh=True)
    # both one-CPU worker nodes, and the head unless an earlier test's replica holds its CPUs
    assert out.train.workers in (2, 3) and out.train.cpus_per_worker == 1.0
    assert len(set(out.train.history[0]["nodes"])) == out.train.workers, "one worker per node"
    assert (out.version.lineage["training"]["workers"], out.version.lineage["training"]["cpus_per_worker"]) == \
        (out.train.workers, 1.0)


def test_training_spreads_over_nodes_and_survives_losing_one(three_nodes, tmp_path):
    nodes, workers = three_nodes
    cfg = config_from_dict(_config(tmp_path, cpus_per_worker=0.5))
    storage = Storage(cfg.storage.root)
    killed = []

    def kill_a_workers_node():
        from tests.system.test_training import _train_workers, _wait_for_checkpoint
        from pathlib import Path

        _wait_for_checkpoint(Path(storage.root, "runs", "multinode"))
        for proc in _train_workers():
            i = _node_of(proc.pid, workers)
            if i is not None:
                nodes.kill(workers[i])  # the whole node: raylet, its workers, its agents
                killed.append(i)
                return
    t = threading.Thread(target=kill_a_workers_node, daemon=True)
    t.start()
    out = train_and_register(cfg, storage, run_name="multinode", fresh=True)
    t.join(5)
    history = out.train.history
    assert len(set(history[0]["nodes"])) == 2, "the two workers ran on different nodes"
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert killed, "no training worker ran on a removable worker node"
    assert history[-1]["attempt"] >= 2 and history[0]["attempt"] == 1


@pytest.fixture
def delete_app_after():
    names = []
    yield names
    from ray import serve

    for name in names:  # even when the test failed: a leftover replica would starve later tests
        serve.delete(name)


def _replica_nodes(app: str) -> set[str]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", f"ServeReplica:{app}:ModelServer"), ("state", "=", "ALIVE")])
    return {a.node_id for a in actors}


def test_endpoint_survives_losing_a_replica_node(three_nodes, tmp_path, delete_app_after):
    import ray

    nodes, workers = three_nodes
    # back to three nodes if the training test removed one
    for i, w in enumerate(workers):
        if not any(psutil.pid_exists(p) for p in w):
            workers[i] = nodes.add_worker(1, f"w{i}x")
    deadline = time.time() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.time() < deadline:
        time.sleep(0.5)
    raw = _config(tmp_path, epochs=1)
    raw["serve"] = {"port": SERVE_PORT, "cpus_per_replica": 0.25, "app_name": "multinode", "route_prefix": "/mn",
                    "max_replicas_per_node": 1, "model_poll_s": 0, "autoscaling": {"min_replicas": 2, "max_replicas": 2}}
    cfg = config_from_dict(raw)
    delete_app_after.append(cfg.serve.app_name)
    storage = Storage(cfg.storage.root)
    out = train_and_register(cfg, storage)
    promote_version(cfg, storage, out.version.version, "production")
    d = deploy(cfg)
    rec = {"station": "AAA", "vehicle": "V001", "distance": 100.0, "hour": 3}
    replica_nodes = _replica_nodes(cfg.serve.app_name)
    head = ray.get_runtime_context().get_node_id()
    assert len(replica_nodes) == 2, f"replicas not spread over nodes: {replica_nodes}"
    victim_node_id = next(n for n in replica_nodes if n != head)
    # which of our worker nodes it is: each carries a custom resource node_w<i>[x]
    resources = {n["NodeID"]: n["Resources"] for n in ray.nodes()}[victim_node_id]
    victim = next(int(k[len("node_w")]) for k in resources if k.startswith("node_w"))
    stats = {"ok": 0, "retried": 0, "failed": 0}

    async def load(seconds=15):
        async with httpx.AsyncClient(timeout=10) as c:
            async def one():
                end = time.time() + seconds
                while time.time() < end:
                    for attempt in range(8):  # client retries with backoff
                        try:
                            if (await c.post(f"{d.url}/predict", json=rec)).status_code == 200:
                                stats["ok"] += 1
                                break
                        except httpx.HTTPError:
                            pass
                        stats["retried"] += 1
                        await asyncio.sleep(min(0.1 * 2 ** attempt, 1.5))
                    else:
                        stats["failed"] += 1
            await asyncio.gather(*(one() for _ in range(4)))

    async def scenario():
        task = asyncio.create_task(load())
        await asyncio.sleep(3)
        nodes.kill(workers[victim])
        await task
    asyncio.run(scenario())
    print(f"replica node removed under load: {stats}")
    assert stats["failed"] == 0 and stats["ok"] > 0
