"""The closed loop on a real cluster: a real endpoint, real HTTP, real training and the registry.

A shift is injected twice over (new rows land at the source, shifted records reach the
endpoint): the watcher's triggers fire, it retrains, the candidate takes half the traffic, the
true outcomes come back and it is promoted. Then a planted candidate (production's network with
its output negated: it loads and answers, every ranking upside down) is canaried and, once its
outcomes come back, rolled back by a watcher that replaced one killed mid-canary."""

import io
import time

import httpx
import numpy as np
import pyarrow as pa
import pytest
import torch

from rayline import layout
from rayline.config import config_from_dict
from rayline.pipeline import promote_version, train_and_register
from rayline.registry import Registry
from rayline.serve.deploy import deploy
from rayline.serve.partlog import read_parts
from rayline.storage import Storage
from rayline.watch import Watcher
from rayline.watch.journal import Journal
from tests.conftest import SERVE_PORT, small_config, small_tables, write_tables

APP, PREFIX = "watch", "/watch"


def _trips(n: int, seed: int, distance_scale: float = 1.0) -> pa.Table:
    """small_tables' trips with a label the features explain (station and hour), so that live
    AUC separates a model from its negation on a few hundred outcomes."""
    t = small_tables(n, seed)["trips"]
    rng = np.random.default_rng(seed + 100)
    station, hour = t.column("station").to_numpy(zero_copy_only=False), t.column("hour").to_numpy()
    delay = rng.normal(0, 10, n) + (station == "CCC") * 40 + (hour >= 17) * 25
    t = t.set_column(t.schema.get_field_index("delay"), "delay", pa.array(delay.round(1)))
    dist = t.column("distance").to_numpy() * distance_scale
    t = t.set_column(t.schema.get_field_index("distance"), "distance", pa.array(dist))
    return t.set_column(0, "trip_id", pa.array(np.arange(n) + seed * 1_000_000))


@pytest.fixture(scope="module")
def loop(ray_local, tmp_path_factory):
    from ray import serve

    d = tmp_path_factory.mktemp("watch")
    tables = small_tables(3000, 0)
    tables["trips"] = _trips(3000, 0)
    write_tables(tables, d / "data")
    raw = small_config(d / "data", d / "root")
    raw["train"].update(epochs=4, batch_size=256)
    raw["serve"] = {"port": SERVE_PORT, "app_name": APP, "route_prefix": PREFIX, "cpus_per_replica": 0.25,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}, "model_poll_s": 1,
                    "prediction_log": {"flush_s": 1}}
    raw["promote"] = {"tolerance": 1.0}  # the loop is under test here, not the offline gate
    raw["watch"] = {"triggers": {"drift_psi": 0.25, "drift_min_records": 300},
                    "canary": {"weight": 50, "min_s": 0, "max_s": 900, "min_requests": 30, "min_outcomes": 200,
                               "margin": 0.2, "max_latency_ratio": 50}}
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    first = train_and_register(cfg, storage).version.version
    promote_version(cfg, storage, first, "production")
    dep = deploy(cfg)
    yield cfg, storage, d, dep.url, first
    serve.delete(APP)


def _records(t: pa.Table) -> tuple[list[dict], np.ndarray]:
    rows = t.select(["station", "vehicle", "distance", "hour", "ts"]).to_pylist()
    for r in rows:
        r["ts"] = r["ts"].isoformat()
    return rows, (t.column("delay").to_numpy() > 30).astype(int)


def _traffic_with_outcomes(url: str, t: pa.Table, requests: int, per: int = 10, tag: str = "",
                           storage: Storage | None = None, name: str = "") -> dict[int, int]:
    """`requests` requests of `per` records, each with its own routing key; then their true
    outcomes, waited for until the endpoint has written them and their predictions (with
    `storage`). Returns requests answered per version."""
    records, y = _records(t)
    by, outcomes = {}, []
    with httpx.Client(timeout=60) as c:
        for i in range(requests):
            lo = (i * per) % (len(records) - per)
            r = c.post(f"{url}/predict", json={"instances": records[lo:lo + per]}, headers={"x-routing-key": f"{tag}{i}"})
            assert r.status_code == 200, r.text
            body = r.json()
            by[body["model_version"]] = by.get(body["model_version"], 0) + 1
            outcomes += [{"request_id": body["request_id"], "index": j, "label": int(y[lo + j])} for j in range(per)]
        for k in range(0, len(outcomes), 1000):
            r = c.post(f"{url}/outcomes", json={"outcomes": outcomes[k:k + 1000]})
            assert r.status_code == 202, r.text
    if storage is not None:
        _wait_written(storage, name, {o["request_id"] for o in outcomes})
    return by


def _wait_written(storage: Storage, name: str, rids: set[str], timeout: float = 60.0) -> None:
    """Until every request id is in both written logs (each flushes every second; a slow host
    takes longer): what the watcher reads next is then on storage."""
    since, deadline = time.time() - 600, time.time() + timeout
    while True:
        seen = []
        for kind in (layout.PREDICTIONS, layout.OUTCOMES):
            t = read_parts(storage, layout.live_log(name, APP, kind), since)
            seen.append(set() if t is None else set(t.column("request_id").to_pylist()))
        if rids <= seen[0] and rids <= seen[1]:
            return
        assert time.time() < deadline, f"not written within {timeout:g}s: {len(rids - seen[0])} predictions, {len(rids - seen[1])} outcomes"
        time.sleep(0.5)


def test_shift_fires_the_triggers_and_the_retrained_version_is_canaried_then_promoted(loop):
    cfg, storage, d, url, first = loop
    reg = Registry.of(cfg, storage)
    quiet = Watcher.of(cfg, storage).step(dry_run=True)
    assert quiet["action"] == "none" and quiet["production"] == first

    shifted = _trips(1000, 7, distance_scale=4.0)        # longer trips: far past the training deciles
    _traffic_with_outcomes(url, shifted, 40, tag="shift-", storage=storage, name=cfg.name)
    write_tables({"trips": pa.concat_tables([_trips(3000, 0), shifted])}, d / "data")  # new rows at the source
    deadline = time.time() + 30
    while time.time() < deadline:                          # replicas push their counts every 5 s
        plan = Watcher.of(cfg, storage).step(dry_run=True)
        if {t["trigger"] for t in plan.get("triggers", [])} == {"drift", "new_data"}:
            break
        time.sleep(1)
    assert plan["action"] == "retrain" and "distance" in plan["triggers"][1 if plan["triggers"][0]["trigger"] == "new_data" else 0]["psi"], plan
    assert Journal(storage, cfg.name, APP).last() is None  # the dry run wrote nothing

    started = Watcher.of(cfg, storage).step()
    assert started["action"] == "canary", started
    cand = started["version"]
    lineage = reg.get(cand).lineage["watch"]
    assert {t["trigger"] for t in lineage["triggers"]} == {"drift", "new_data"}
    assert lineage["data_window"]["rows"]["read"] == 4000
    assert reg.aliases() == {"production": first, "candidate": cand}

    served = _traffic_with_outcomes(url, _trips(2000, 11), 100, tag="canary-", storage=storage, name=cfg.name)
    assert served.get(first, 0) >= 30 and served.get(cand, 0) >= 30, served   # both arms took traffic
    done = Watcher.of(cfg, storage).step()                # a new watcher: everything it knows is on disk
    assert done["action"] == "promoted", done
    assert reg.aliases()["production"] == cand
    assert reg.alias_log("production")[-1]["watch_seq"] == 3
    after = _traffic_with_outcomes(url, _trips(300, 12), 20, tag="after-", storage=storage, name=cfg.name)
    assert set(after) == {cand}                            # the canary weight went back with the promotion
    assert [e.state for e in Journal(storage, cfg.name, APP).entries()] == ["retraining", "canary", "promoting", "promoted"]


def test_the_cli_dry_run_says_what_it_would_do_and_writes_nothing(loop, tmp_path):
    """`rayline watch --once --dry-run` (and its --json): after the first test, production
    serves the promoted version, the sources are unchanged, the canary window is over."""
    import json

    from typer.testing import CliRunner

    from rayline.cli import app as cli
    from rayline.config import dump_config

    cfg, storage, _, _, _ = loop
    path = tmp_path / "watch.yaml"
    path.write_text(dump_config(cfg))
    before = len(Journal(storage, cfg.name, APP).entries())
    r = CliRunner().invoke(cli, ["watch", "--config", str(path), "--once", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["steps"][0]["action"] in ("none", "retrain") and out["journal"].endswith(f"watch/{cfg.name}/{APP}/journal")
    assert len(Journal(storage, cfg.name, APP).entries()) == before
    r = CliRunner().invoke(cli, ["watch", "--config", str(path), "--once", "--dry-run", "--set", "watch.canary.alias=production"])
    assert r.exit_code != 0 and "watch.canary.alias" in r.output


def test_a_planted_worse_candidate_is_rolled_back_by_a_watcher_resuming_a_killed_one(loop):
    cfg, storage, _, url, _ = loop
    reg = Registry.of(cfg, storage)
    prod = reg.resolve("production")
    state = torch.load(io.BytesIO(reg.read_file(prod, "weights.pt")), weights_only=True)
    out_w, out_b = [k for k in state if k.endswith("weight")][-1], [k for k in state if k.endswith("bias")][-1]
    state[out_w], state[out_b] = -state[out_w], -state[out_b]  # every ranking upside down
    buf = io.BytesIO()
    torch.save(state, buf)
    files = {n: reg.read_file(prod, n) for n in ("feature_spec.json", "model_config.json")}
    mv = reg.get(prod)
    planted = reg.register({**files, "weights.pt": buf.getvalue()}, mv.metrics,
                           {**mv.lineage, "run_name": "planted-negated"}).version

    c2 = cfg.model_copy(update={"watch": cfg.watch.model_copy(update={
        "triggers": cfg.watch.triggers.model_copy(update={"every_s": 1, "drift_psi": None, "new_data": False})})})
    w = Watcher.of(c2, storage)
    w.hooks.retrain = lambda fired, claim: reg.get(planted)  # it looked fine offline: same test metrics
    started = w.step()
    assert started["action"] == "canary" and started["version"] == planted, started
    served = _traffic_with_outcomes(url, _trips(2000, 21), 100, tag="planted-", storage=storage, name=cfg.name)
    assert served.get(planted, 0) >= 30, served

    killed = Watcher.of(c2, storage)
    killed.hooks.live_report = lambda since: (_ for _ in ()).throw(SystemExit("killed mid-canary"))
    with pytest.raises(SystemExit):
        killed.step()
    out = Watcher.of(c2, storage).step()
    assert out["action"] == "rolled_back" and "worse" in out["why"], out
    assert out["figures"]["difference"] < -0.2
    assert reg.aliases()["production"] == prod
    assert [e["event"] for e in reg.alias_log("candidate")][-2:] == ["canary", "canary_rolled_back"]
    after = _traffic_with_outcomes(url, _trips(300, 22), 20, tag="back-", storage=storage, name=cfg.name)
    assert set(after) == {prod}


def test_a_retrain_may_be_a_tune_search_within_a_budget(ray_local, tmp_path):
    """watch.retrain.tune_trials: the retrain is a Ray Tune search (2 trials here); its best trial
    is registered with both the search and the trigger in its lineage, then gated as any retrain."""
    write_tables(small_tables(1500, 3), tmp_path / "data")
    raw = small_config(tmp_path / "data", tmp_path / "root")
    raw["train"]["model"] = {"family": "xgboost", "xgboost": {"num_boost_round": 30, "early_stopping_rounds": None}}
    raw["tune"] = {"report_every_rounds": 10, "grace_period": 2,
                   "search_space": {"train.model.xgboost.max_depth": {"randint": [2, 5]}}}
    raw["promote"] = {"tolerance": 1.0}
    raw["watch"] = {"triggers": {"drift_psi": None}, "retrain": {"tune_trials": 2}, "canary": {"enabled": False}}
    cfg = config_from_dict(raw)
    storage = Storage(cfg.storage.root)
    promote_version(cfg, storage, train_and_register(cfg, storage).version.version, "production")
    tables = small_tables(1500, 3)
    tables["trips"] = pa.concat_tables([tables["trips"], _trips(500, 9)])   # new rows at the source
    write_tables({"trips": tables["trips"]}, tmp_path / "data")
    out = Watcher.of(cfg, storage).step()
    assert out["action"] == "promoted", out
    mv = Registry.of(cfg, storage).get(out["version"])
    assert len(mv.lineage["tuning"]["search_space"]) == 1 and mv.lineage["tuning"]["trials"] == 2
    assert mv.lineage["watch"]["triggers"][0]["trigger"] == "new_data"
    assert mv.lineage["watch"]["data_window"]["rows"]["read"] == 2000
