"""The traffic split (weighted, sticky), the replica's routes over a bounded LRU of versions, and
the shadow runner (never waits, never fails the live path), without Serve."""

import asyncio
import threading
import time

import pytest

from rayline.config import ServeConfig, load_config
from rayline.serve.lifecycle import ModelHolder
from rayline.serve.deploy import serve_config
from rayline.serve.options import ReplicaArgs, user_config
from rayline.serve.shadow import ShadowRunner
from rayline.serve.traffic import Arm, Routes, key_point, routing_key, traffic_plan
from tests.code.test_serve_lifecycle import _model
from tests.conftest import FLIGHTS_CONFIG

KEYS = [f"client-{i}" for i in range(10_000)]


def _routes(*weights):
    return Routes(tuple(Arm(f"a{i}", w, i + 1) for i, w in enumerate(weights)))


def test_split_holds_its_weights_over_10000_keys_and_each_key_is_sticky():
    r = _routes(90, 10)
    picks = [r.pick(key_point(k)).alias for k in KEYS]
    share = picks.count("a1") / len(KEYS)
    assert 0.085 <= share <= 0.115, share                             # 10 % +- 1.5 %
    assert picks == [r.pick(key_point(k)).alias for k in KEYS]        # the same key, the same arm, every time
    assert key_point("client-7") == key_point("client-7") and 0 <= key_point("") < 1


def test_a_weight_change_moves_only_the_keys_on_the_stretch_that_changed_hands():
    before = [_routes(90, 10).pick(key_point(k)).alias for k in KEYS]
    after = [_routes(80, 20).pick(key_point(k)).alias for k in KEYS]
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert set(moved) == {("a0", "a1")} and 0.085 <= len(moved) / len(KEYS) <= 0.115
    assert {_routes(0, 1).pick(key_point(k)).alias for k in KEYS[:500]} == {"a1"}  # weight 0: never picked
    assert {_routes(1, 0).pick(key_point(k)).alias for k in KEYS[:500]} == {"a0"}


def test_routing_key_comes_from_the_header_else_the_configured_fields():
    assert routing_key("user-1", {"tailnum": "N1"}, ["tailnum"]) == "user-1"
    assert routing_key(None, {"tailnum": "N1", "carrier": "UA"}, ["carrier", "tailnum"]) == "UA\x1fN1"
    assert routing_key(None, {"distance": 1}, ["tailnum"]) is None and routing_key(None, None, ["x"]) is None
    assert routing_key(None, {"tailnum": "N1"}, []) is None


def test_traffic_and_shadow_travel_in_user_config_and_are_validated_with_field_names():
    cfg = load_config(FLIGHTS_CONFIG, ["serve.traffic=[{alias: production, weight: 90}, {alias: candidate, weight: 10}]",
                                       "serve.shadow.alias=shadow", "serve.shadow.fraction=0.5"])
    args = ReplicaArgs.from_config(cfg)
    assert not args.serve.traffic and args.serve.shadow.alias is None  # not in the replicas' args: a weight change
    uc = user_config(args, sc=cfg.serve)                               # reconfigures them, it does not replace them
    assert traffic_plan(uc, "production") == ([("production", 90.0), ("candidate", 10.0)], ("shadow", 0.5))
    assert serve_config(cfg)["applications"][0]["deployments"][0]["user_config"] == uc
    pinned = user_config(args, model="7", sc=cfg.serve)                # one pinned reference replaces the split
    assert traffic_plan(pinned, "production")[0] == [("7", 1.0)]
    assert traffic_plan({"model": "production"}, "x") == ([("production", 1.0)], None)
    with pytest.raises(ValueError, match="names an alias twice"):
        ServeConfig(traffic=[{"alias": "a", "weight": 1}, {"alias": "a", "weight": 2}])
    with pytest.raises(ValueError, match="must not all be 0"):
        ServeConfig(traffic=[{"alias": "a", "weight": 0}])
    with pytest.raises(ValueError, match="shadow.fraction > 0 needs shadow.alias"):
        ServeConfig(shadow={"fraction": 0.1})
    with pytest.raises(ValueError, match="weight"):
        ServeConfig(traffic=[{"alias": "a", "weight": -1}])


def _holder(models, alias, max_versions=3):
    loads = []

    def loader(ref):
        loads.append(int(ref))
        return int(ref), models[int(ref)]
    return ModelHolder(loader, lambda ref: alias[ref] if ref in alias else int(ref), lambda v: {},
                       max_versions=max_versions), loads


def test_the_replica_holds_every_arm_and_the_shadow_and_evicts_only_unused_versions():
    models = {v: _model(v) for v in (1, 2, 3, 4, 5)}
    alias = {"production": 1, "candidate": 2, "shadow": 3}
    h, loads = _holder(models, alias)
    h.follow([("production", 90), ("candidate", 10)], ("shadow", 1.0))
    assert h.current == (1, models[1]) and sorted(h.routes.loaded) == [1, 2, 3] and loads == [1, 2, 3]
    assert h.routes.describe()["arms"][1] == {"alias": "candidate", "version": 2, "share": 0.1}
    mem = h.memory()["versions"]
    assert set(mem) == {"1", "2", "3"} and all(b > 0 for b in mem.values())

    async def pin():
        return await h.version(4)
    assert asyncio.run(pin()) is models[4]
    assert 4 not in h.models                                       # the LRU is full of versions in use: the pin goes
    h.follow([("production", 90), ("candidate", 10)], ("shadow", 1.0))
    assert loads == [1, 2, 3, 4]                                   # unchanged routes: nothing reloaded
    alias["candidate"] = 5
    h.follow([("production", 50), ("candidate", 50)], None)        # new weights, a new candidate, no shadow
    assert sorted(h.routes.loaded) == [1, 5] and h.routes.shadow is None and len(h.models) <= 3
    alias.pop("candidate")
    with pytest.raises(ValueError):                               # (the registry raises RegistryError)
        h.follow([("production", 50), ("candidate", 50)], None)    # an arm that does not resolve changes nothing
    assert sorted(h.routes.loaded) == [1, 5]


def _runner(score, queue=4, timeout_s=0.3):
    recorded = []
    return ShadowRunner(score, lambda items, results: recorded.extend(zip(items, results)), queue, timeout_s), recorded


def test_a_raising_shadow_is_counted_and_recorded_as_failed():
    def score(items):
        raise RuntimeError("shadow model broke")

    async def run():
        r, recorded = _runner(score)
        assert r.submit("a") and r.submit("b")
        await asyncio.sleep(0.2)
        return r, recorded
    r, recorded = asyncio.run(run())
    assert r.stats()["errors"] == 2 and all(isinstance(res, RuntimeError) for _, res in recorded)


def test_a_hanging_shadow_never_blocks_the_caller_and_what_it_cannot_take_is_dropped_and_counted():
    release = threading.Event()

    def score(items):
        release.wait(10)
        return [("ok", 1)] * len(items)

    async def run():
        r, recorded = _runner(score, queue=4, timeout_s=0.2)
        started = time.perf_counter()
        accepted = [r.submit(i) for i in range(50)]                # the live path: never waits
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.6)
        for i in range(3):                                         # the thread is still hung: dropped, not queued
            r.submit(100 + i)
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.sleep(0.2)
        r.submit(200)
        await asyncio.sleep(0.3)
        return r, recorded, accepted, elapsed
    r, recorded, accepted, elapsed = asyncio.run(run())
    s = r.stats()
    assert elapsed < 0.05 and accepted.count(True) == 4 and s["dropped_queue_full"] == 46
    assert s["timed_out"] >= 1 and s["dropped_busy"] >= 1
    assert recorded and recorded[-1] == (200, ("ok", 1))            # the shadow recovers when the model does
