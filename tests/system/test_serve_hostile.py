"""Hostile and careless clients against a real endpoint (2 replicas, real HTTP on 127.0.0.1).

Every case must get a 4xx whose message names the problem, never a 5xx, while valid requests
sent alongside keep getting 200. Then: mixed value types in one dynamic batch (one client must
not break another), slow uploads held open, and contract parity between /predict and batch
inference on one table of good and bad records.
"""

import asyncio
import json
import os
import socket
import threading
import time

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayline.batch import run_batch_predict
from rayline.config import load_config
from rayline.registry import Registry
from rayline.serve.deploy import deploy
from tests.conftest import FLIGHTS_CONFIG
from tests.conftest import SERVE_PORT as PORT

BODY_TIMEOUT_S = 3
MAX_BODY = 65_536


@pytest.fixture(scope="module")
def hostile(flights_model):
    from ray import serve

    cfg, storage, _ = flights_model
    overrides = [f"storage.root={cfg.storage.root}", f"serve.port={PORT}", "serve.app_name=hostile",
                 "serve.autoscaling.min_replicas=2", "serve.autoscaling.max_replicas=2", "serve.cpus_per_replica=0.25",
                 f"serve.body_timeout_s={BODY_TIMEOUT_S}", f"serve.max_body_bytes={MAX_BODY}",
                 "serve.max_instances_per_request=100", "batch.cpus_per_actor=0.25", "batch.gpus_per_actor=0"]
    scfg = load_config(FLIGHTS_CONFIG, overrides)
    d = deploy(scfg)
    _, model = Registry(storage, cfg.name).load(d.model_version)
    yield scfg, storage, d, model.spec.example_record()
    serve.delete(scfg.serve.app_name)


def with_(rec: dict, **changes) -> dict:
    out = dict(rec)
    for k, v in changes.items():
        if v is DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


DROP = object()
JSON = {"content-type": "application/json"}


def cases(good: dict) -> list[tuple[str, dict, int, str]]:
    """(name, httpx request kwargs, expected status, fragment of the message)."""
    j = lambda obj: json.dumps(obj, allow_nan=True)  # noqa: E731
    deep = "[" * 500 + "1" + "]" * 500
    return [
        # -- malformed JSON
        ("malformed", {"content": b"{not json"}, 400, "not valid JSON"),
        ("trailing_comma", {"content": b'{"distance": 1,}'}, 400, "not valid JSON"),
        ("single_quotes", {"content": b"{'distance': 1}"}, 400, "not valid JSON"),
        ("nan_literal", {"content": j(with_(good, distance=float("nan")))}, 400, "NaN is not valid JSON"),
        ("infinity_literal", {"content": j(with_(good, distance=float("inf")))}, 400, "Infinity is not valid JSON"),
        ("minus_infinity", {"content": j(with_(good, temp=float("-inf")))}, 400, "Infinity is not valid JSON"),
        ("empty_body", {"content": b""}, 400, "empty"),
        ("whitespace_body", {"content": b"  \n\t "}, 400, "empty"),
        ("invalid_utf8", {"content": b'{"dest": "\xff\xfe"}'}, 400, "not valid JSON"),
        ("utf16_body", {"content": j(good).encode("utf-16")}, 400, "not valid JSON"),
        ("deep_nesting_over_limit", {"content": b"[" * 100_000 + b"]" * 100_000}, 413, "limit"),
        ("deep_nesting_parser_limit", {"content": b"[" * 30_000 + b"]" * 30_000}, 400, "nested too deeply"),
        ("deep_value_under_limit", {"content": j(good)[:-1] + ', "temp": ' + deep + "}"}, 422, "temp must be a finite number"),
        ("truncated_json", {"content": j(good)[:-5]}, 400, "not valid JSON"),
        # -- wrong top-level shapes
        ("top_level_array", {"content": j([good])}, 422, "got array"),
        ("top_level_string", {"content": j("hello")}, 422, "got string"),
        ("top_level_number", {"content": b"42"}, 422, "got integer"),
        ("top_level_null", {"content": b"null"}, 422, "got null"),
        ("instances_not_list", {"content": j({"instances": good})}, 422, "'instances' must be a list"),
        ("instances_empty", {"content": j({"instances": []})}, 422, "'instances' is empty"),
        ("empty_record", {"content": j({})}, 422, "record has none of the model's input fields"),
        ("instance_empty_object", {"content": j({"instances": [good, {}]})}, 422, "instances[1] has none of the model's"),
        # small records: the count, not the body size, must be what is refused
        ("instances_too_many", {"content": j({"instances": [{"carrier": "UA"}] * 101})}, 422, "the limit is 100"),
        ("instance_not_object", {"content": j({"instances": [good, 7]})}, 422, "instances[1] must be a JSON object"),
        ("instance_null", {"content": j({"instances": [None]})}, 422, "instances[0] must be a JSON object"),
        ("extra_top_level", {"content": j({"instances": [good], "x": 1})}, 422, "expected only 'instances'"),
        ("extra_top_level_surrogate", {"content": j({"instances": [good], "\udfff": 1})}, 422, "expected only 'instances'"),
        ("unknown_field", {"content": j(with_(good, bogus=1))}, 422, "unknown field(s) ['bogus']"),
        ("unknown_field_surrogate_name", {"content": j(with_(good, **{"\ud800": 1}))}, 422, "unknown field(s)"),
        # -- wrong types and values
        ("number_as_string", {"content": j(with_(good, distance="1400"))}, 422, "record.distance must be a finite number"),
        ("number_as_bool", {"content": j(with_(good, distance=True))}, 422, "got boolean true"),
        ("number_as_array", {"content": j(with_(good, distance=[1]))}, 422, "got an array of 1"),
        ("number_as_object", {"content": j(with_(good, distance={"v": 1}))}, 422, "got an object with 1 key(s)"),
        ("required_null", {"content": j(with_(good, distance=None))}, 422, "record.distance is required"),
        ("required_missing", {"content": j(with_(good, distance=DROP))}, 422, "record.distance is required"),
        ("below_range", {"content": j(with_(good, distance=-1))}, 422, "outside the allowed range"),
        ("above_range", {"content": j(with_(good, distance=6001))}, 422, "outside the allowed range"),
        ("float_edge_high", {"content": j(with_(good, distance=1.7e308))}, 422, "outside the allowed range"),
        ("float_edge_low", {"content": j(with_(good, temp=-1.7e308))}, 422, "outside the allowed range"),
        ("int_2_64", {"content": j(with_(good, distance=2 ** 64))}, 422, "outside the allowed range"),
        ("int_beyond_float", {"content": j(with_(good, precip=10 ** 400))}, 422, "precip must be a finite number"),
        ("exponent_overflow", {"content": j(good)[:-1] + ', "precip": 1e400}'}, 422, "precip must be a finite number"),
        ("category_as_bool", {"content": j(with_(good, dest=False))}, 422, "record.dest must be a string or an integer"),
        ("category_as_object", {"content": j(with_(good, dest={}))}, 422, "record.dest must be a string"),
        ("category_1e20", {"content": j(with_(good, dest=1e20))}, 422, "record.dest must be a string or an integer"),
        ("category_fraction", {"content": j(with_(good, dest=1.5))}, 422, "record.dest must be a string or an integer"),
        ("category_int_2_64", {"content": j(with_(good, dest=2 ** 64))}, 422, "record.dest must be a string"),
        ("category_surrogate", {"content": j(with_(good, dest="\ud800"))}, 422, "record.dest must be a string"),
        ("category_too_long", {"content": j(with_(good, dest="A" * 10_000))}, 422, "longer than 256 characters"),
        ("time_not_a_time", {"content": j(with_(good, time_hour="yesterday"))}, 422, "time_hour must be an ISO 8601"),
        ("time_as_number", {"content": j(with_(good, time_hour=1356994800))}, 422, "time_hour must be an ISO 8601"),
        ("time_surrogate", {"content": j(with_(good, time_hour="2013-01-01T10:00:00\ud800"))}, 422, "time_hour must be"),
        ("time_too_long", {"content": j(with_(good, time_hour="2013-01-01T10:00:00Z" + "0" * 100))}, 422, "at most 40"),
        ("batch_one_bad_names_it", {"content": j({"instances": [good, with_(good, distance=-1)]})}, 422,
         "instances[1].distance = -1.0 is outside"),
        # -- HTTP level: media type, size, headers, methods, paths
        ("text_plain", {"content": j(good), "headers": {"content-type": "text/plain"}}, 415, "Content-Type: application/json"),
        ("form_urlencoded", {"content": b"distance=1", "headers": {"content-type": "application/x-www-form-urlencoded"}},
         415, "application/json"),
        ("multipart", {"content": b"--x--", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 415, "application/json"),
        ("no_content_type", {"content": j(good), "headers": {"content-type": ""}}, 415, "application/json"),
        ("json_latin1_charset", {"content": j(good), "headers": {"content-type": "application/json; charset=latin-1"}},
         415, "UTF-8"),
        ("body_too_large", {"content": b" " * (MAX_BODY + 1)}, 413, "limit"),
        ("chunked_too_large", {"content": iter([b" " * 40_000, b" " * 40_000])}, 413, "over the limit"),
        ("version_not_number", {"content": j(good), "headers": {**JSON, "x-model-version": "abc"}}, 400, "x-model-version"),
        ("version_unicode_digits", {"content": j(good), "headers": {**JSON, "x-model-version": "١٢".encode()}}, 400, "x-model-version"),
        ("version_huge", {"content": j(good), "headers": {**JSON, "x-model-version": "9" * 40}}, 400, "x-model-version"),
        ("version_unknown", {"content": j(good), "headers": {**JSON, "x-model-version": "987654"}}, 404, "does not exist"),
        ("request_id_garbage", {"content": j(with_(good, distance=-1)), "headers": {**JSON, "x-request-id": "<script>" * 50}},
         422, '"request_id":"'),
        ("request_timeout_header_ignored", {"content": j(with_(good, distance=-1)),
                                            "headers": {**JSON, "x-request-timeout-seconds": "0"}}, 422, "distance"),
        ("get_predict", {"method": "GET"}, 405, ""),
        ("put_predict", {"method": "PUT", "content": j(good)}, 405, ""),
        ("unknown_path", {"path": "/nope"}, 404, ""),
    ]


def _send(url: str, kw: dict) -> httpx.Response:
    kw = dict(kw)
    method, path = kw.pop("method", "POST"), kw.pop("path", "/predict")
    headers = {**JSON, **kw.pop("headers", {})}
    if headers.get("content-type") == "":
        headers.pop("content-type")
    return httpx.request(method, f"{url}{path}", headers=headers, timeout=30, **kw)


def test_at_least_sixty_distinct_hostile_cases_all_get_a_named_4xx(hostile):
    _, _, d, good = hostile
    all_cases = cases(good)
    assert len({name for name, *_ in all_cases}) == len(all_cases) >= 60
    stop, valid = threading.Event(), []

    def keep_predicting():  # a well-behaved client, all along
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                valid.append(c.post(f"{d.url}/predict", json=good).status_code)
    t = threading.Thread(target=keep_predicting)
    t.start()
    failures = []
    try:
        for name, kw, status, fragment in all_cases:
            r = _send(d.url, kw)
            text = r.text
            if r.status_code != status or fragment not in text:
                failures.append(f"{name}: {r.status_code} {text[:300]}")
    finally:
        stop.set()
        t.join()
    assert not failures, "\n".join(failures)
    assert valid and set(valid) == {200}, valid[:20]
    assert _send(d.url, {"content": json.dumps(good)}).status_code == 200  # and after


def test_declared_length_over_the_limit_is_refused_before_the_body(hostile):
    _, _, d, good = hostile
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000000\r\n\r\n{}")
        reply = b""
        while b"limit" not in reply and (chunk := s.recv(4096)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"limit" in reply, reply[:300]


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"POST /\x00predict HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["request_line", "header_no_colon", "bad_chunk_size", "negative_length", "two_lengths", "nul_in_path"])
def test_raw_protocol_errors_never_get_a_5xx(hostile, raw):
    _, _, d, good = hostile
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
        s.sendall(raw)
        try:
            reply = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            reply = b""
    status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/") else b""
    assert not status.startswith(b"5"), reply[:200]
    assert reply == b"" or status.startswith(b"4"), reply[:200]
    assert _send(d.url, {"content": json.dumps(good)}).status_code == 200


async def _mixed_burst(url: str, bodies: list[dict]) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:
        rs = await asyncio.gather(*(c.post(f"{url}/predict", json=b) for b in bodies))
    return [r.status_code for r in rs]


def test_one_client_cannot_break_another_in_a_shared_batch(hostile):
    """Categories as text and as numbers, and invalid records, land in the same dynamic batches."""
    _, _, d, good = hostile
    texts = [with_(good, dest="ZZZ") for _ in range(80)]
    numbers = [with_(good, dest=7) for _ in range(80)]
    bad = [with_(good, dest=1.5) for _ in range(40)] + [with_(good, distance="x") for _ in range(40)]
    bodies = [b for group in zip(texts, numbers, bad[:80]) for b in group]
    statuses = asyncio.run(_mixed_burst(d.url, bodies))
    got = {i: s for i, s in enumerate(statuses)}
    assert all(got[i] == 200 for i in range(0, len(bodies), 3)), statuses
    assert all(got[i] == 200 for i in range(1, len(bodies), 3)), statuses
    assert all(got[i] == 422 for i in range(2, len(bodies), 3)), statuses


def test_slow_uploads_do_not_starve_valid_requests(hostile):
    """150 clients promise 4096 bytes, send 2 and hold; valid requests keep being answered
    within 2 s each, and each slow upload is cut with a 408 (by HAProxy, which holds small
    bodies, at the body timeout its Ray started with; bodies that stream to a replica are cut at
    the app's serve.body_timeout_s: the next test)."""
    _, _, d, good = hostile
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4096\r\n\r\n{\"")
    slow = []
    for _ in range(150):
        s = socket.create_connection(("127.0.0.1", PORT), timeout=BODY_TIMEOUT_S + 20)
        s.sendall(head)
        slow.append(s)
    try:
        latencies = []
        t_end = time.time() + BODY_TIMEOUT_S + 1
        with httpx.Client(timeout=30) as c:
            while time.time() < t_end:
                t0 = time.perf_counter()
                assert c.post(f"{d.url}/predict", json=good).status_code == 200
                latencies.append(time.perf_counter() - t0)
        assert latencies and max(latencies) < 2.0, (len(latencies), max(latencies))
        replies = [_reply(s, b'"body_timeout"') for s in slow[:10]]
        assert all(r.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in r for r in replies), replies[:3]
    finally:
        for s in slow:
            s.close()


def _reply(sock, marker: bytes) -> bytes:
    """What the server sends until `marker` appears or it closes (headers and body may come in
    separate segments)."""
    reply = b""
    while marker not in reply and (chunk := sock.recv(4096)):
        reply += chunk
    return reply


def test_a_large_body_arriving_slowly_is_cut_by_the_replica_at_the_apps_body_timeout(hostile):
    """A declared body of 10,000 bytes or more is not held by HAProxy: it streams to a replica,
    which cuts it at this app's serve.body_timeout_s."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=BODY_TIMEOUT_S + 20) as s:
        t0 = time.time()
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 20000\r\n\r\n{\"instances\": [")
        reply = _reply(s, b'"body_timeout"')
    assert reply.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in reply, reply
    assert BODY_TIMEOUT_S - 0.5 < time.time() - t0 < BODY_TIMEOUT_S + 5


def test_headers_sent_slowly_are_cut_at_the_body_timeout(hostile):
    """Serve sets no request timeout in HAProxy: headers trickling in held a connection for an
    hour (`timeout client`). rayline-haproxy bounds headers (and a held body) by
    serve.body_timeout_s."""
    limit = float(os.environ["RAYLINE_BODY_TIMEOUT_S"])  # HAProxy's: set when this session's Ray started
    with socket.create_connection(("127.0.0.1", PORT), timeout=limit + 20) as s:
        t0 = time.time()
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        reply = _reply(s, b"complete request in time")
    # HAProxy's own page when no request line and headers were parsed (the errorfile applies
    # only to a parsed request): it names the problem too
    assert reply.startswith(b"HTTP/1.1 408") and b"complete request in time" in reply, reply
    assert limit - 0.5 < time.time() - t0 < limit + 5


def test_same_verdicts_and_predictions_from_predict_and_batch(hostile, tmp_path):
    scfg, storage, d, good = hostile
    rows = [good, with_(good, distance=-1.0), with_(good, distance=None), with_(good, dest="ZZZ"),
            with_(good, temp=None), with_(good, dest="A" * 300), with_(good, time_hour="not a time"),
            with_(good, distance=5999.5, temp=129.0), with_(good, precip=1e300), with_(good, dest="7")]
    for i, r in enumerate(rows):
        r["flight"] = str(1000 + i)  # a key to match rows by
    online = []
    for r in rows:
        resp = _send(d.url, {"content": json.dumps(r)})
        assert resp.status_code in (200, 422), resp.text
        online.append(resp.json()["predictions"][0]["probability"] if resp.status_code == 200 else resp.json()["error"])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    res = run_batch_predict(scfg, storage, str(tmp_path / "in.parquet"), str(tmp_path / "out"), model=str(d.model_version),
                            keep=["flight"])
    assert res.rows_in == len(rows) == res.rows_out + res.quarantined
    batch = {r["flight"]: r["prediction"] for r in pq.read_table(tmp_path / "out" / "predictions").to_pylist()}
    quarantined = {json.loads(q["row"])["flight"]: q["rule"] for q in pq.read_table(tmp_path / "out" / "quarantine").to_pylist()}
    reasons = {"range": "out_of_range", "not_null": "missing_field", "too_long": "too_long", "type": "wrong_type"}
    for r, on in zip(rows, online):
        if isinstance(on, float):
            assert r["flight"] in batch, (r, on)
            np.testing.assert_allclose(batch[r["flight"]], on, atol=1e-6)
        else:
            assert reasons[quarantined[r["flight"]]] == on, (r, on, quarantined.get(r["flight"]))
    assert len(batch) == 6 and len(quarantined) == 4


def _raw(raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
        s.sendall(raw)
        reply = b""
        while b"\r\n\r\n" not in reply or (b"}" not in reply.split(b"\r\n\r\n", 1)[1]):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


@pytest.mark.parametrize("header", ["x-request-id", "x-session-id", "serve_multiplexed_model_id",
                                    "x-request-timeout-seconds", "x-request-disconnect-disabled"])
@pytest.mark.parametrize("value", [b"\xff\xfe", b"caf\xc3\xa9", b"a\x01b"])
def test_bytes_beyond_ascii_in_headers_serve_reads_get_a_named_400(hostile, header, value):
    _, _, d, good = hostile
    body = json.dumps(good).encode()
    reply = _raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + header.encode()
                 + b": " + value + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    error = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert error["error"] == "bad_header" and header in error["message"]
    assert _send(d.url, {"content": json.dumps(good)}).status_code == 200


def test_http_edges_host_duplicate_authorization_and_expect_on_http_1_0(hostile):
    _, _, d, good = hostile
    body = json.dumps(good).encode()
    length = b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    no_host = _raw(b"POST /predict HTTP/1.1\r\nContent-Type: application/json\r\n" + length + b"Connection: close\r\n\r\n" + body)
    assert no_host.startswith(b"HTTP/1.1 400") and b"missing_host" in no_host, no_host[:200]
    two_keys = _raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n"
                    b"Content-Type: application/json\r\n" + length + b"Connection: close\r\n\r\n" + body)
    assert two_keys.startswith(b"HTTP/1.1 400") and b"duplicate_header" in two_keys, two_keys[:200]
    old = _raw(b"POST /predict HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n"
               + length + b"\r\n" + body)
    assert b"100 Continue" not in old and b" 200 " in old.split(b"\r\n", 1)[0], old[:200]


def test_haproxy_listens_only_where_serve_host_says_with_a_private_admin_socket(hostile):
    import psutil

    scfg, _, _, _ = hostile
    procs = [p for p in psutil.process_iter(["name", "cmdline"])
             if p.info["cmdline"] and any(a.endswith(".rayline") for a in p.info["cmdline"])]
    assert procs, "no HAProxy started through rayline-haproxy"
    for p in procs:
        listening = {(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert listening and {ip for ip, _ in listening} == {scfg.serve.host}, listening
        assert scfg.serve.port in {port for _, port in listening}
        assert len(listening) == 2  # the HTTP frontend and the Prometheus exporter; no stats page
        config = next(a for a in p.info["cmdline"] if a.endswith(".rayline"))
        sock = next(line.split()[2] for line in open(config) if line.strip().startswith("stats socket "))
        assert os.stat(sock).st_mode & 0o777 == 0o600



def test_a_clients_serve_timeout_and_disconnect_headers_do_not_reach_predict(hostile):
    """HAProxy sets x-request-timeout-seconds: 0 and x-request-disconnect-disabled: ?1 on POST
    /predict, whatever the client sent: Serve then awaits the handler directly, and the replica's
    own deadline (serve.request_timeout_s) bounds the request. A body over 10 KB goes to the
    replica as it arrives, so its handler waits for the rest: had the client's 50 ms reached
    Serve, it would have cut the request with a 408 (it did before)."""
    _, _, d, good = hostile
    n = 10_000 // len(json.dumps(good)) + 2
    body = json.dumps({"instances": [good] * n}).encode()
    assert len(body) > 10_000 and n <= 100
    for sent in (b"x-request-timeout-seconds: 0.05\r\n", b"x-request-timeout-seconds: 0.05\r\nx-request-disconnect-disabled: ?0\r\n"):
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + sent
                      + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body[:100])
            time.sleep(0.3)
            s.sendall(body[100:])
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        assert len(json.loads(reply.split(b"\r\n\r\n", 1)[1])["predictions"]) == n
