"""Pure pieces of the serving and batch edges: the hot route, media types, request ids, GPU planning."""

import asyncio
import json

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from rayline.batch.predict import gpu_plan
from rayline.errors import ResourceError
from rayline.serve import http
from rayline.serve.http import FastRoutes, json_content, request_id as _request_id, route_path, within


def _call(app, method, path, root_path="", body=b""):
    """One HTTP exchange through an ASGI app: (status, decoded JSON body or text)."""
    sent, scope = [], {"type": "http", "method": method, "path": root_path + path, "root_path": root_path,
                       "raw_path": (root_path + path).encode(), "query_string": b"", "headers": [], "http_version": "1.1"}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)
    asyncio.run(app(scope, receive, send))
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _routes():
    api, hits = FastAPI(), []

    async def hot(request):
        hits.append("hot")
        body = await request.body()
        if body == b"boom":
            raise RuntimeError("a bug")
        return JSONResponse({"fast": True, "body": body.decode()})

    async def slow(request=None):
        hits.append("fastapi")
        return {"fast": False}
    api.add_api_route("/predict", slow, methods=["POST"])
    api.add_api_route("/model", slow, methods=["GET"])
    return FastRoutes(api, {("POST", "/predict"): hot}), hits


@pytest.mark.parametrize("root", ["", "/flights"])
def test_the_hot_route_skips_fastapi_and_everything_else_reaches_it(root):
    app, hits = _routes()
    assert _call(app, "POST", "/predict", root, b"{}") == (200, {"fast": True, "body": "{}"})
    assert _call(app, "GET", "/model", root) == (200, {"fast": False})
    assert hits == ["hot", "fastapi"]
    assert _call(app, "GET", "/predict", root)[0] == 405          # a wrong method: FastAPI's answer
    assert _call(app, "POST", "/nope", root)[0] == 404
    assert _call(app, "POST", "/predict/", root)[0] == 307         # FastAPI's slash redirect
    assert hits == ["hot", "fastapi"]
    assert app.add_exception_handler == app.app.add_exception_handler  # Serve registers its handlers on it


def test_a_bug_in_the_hot_route_answers_500_with_a_body():
    app, _ = _routes()
    status, body = _call(app, "POST", "/predict", body=b"boom")
    assert status == 500 and body["error"] == "internal_error"


@pytest.mark.parametrize("python_310", [False, True])
def test_within_returns_or_times_out_nested_deadlines_included(python_310, monkeypatch):
    if python_310:  # no asyncio.timeout: the task-making wait_for
        monkeypatch.setattr(http, "_timeout", None)

    async def slow(s, value="done"):
        await asyncio.sleep(s)
        return value

    async def nested(inner_s, outer_s, work_s):
        async def body():
            try:
                return await within(slow(work_s), inner_s)
            except asyncio.TimeoutError:
                return "inner"
        try:
            return await within(body(), outer_s)
        except asyncio.TimeoutError:
            return "outer"
    assert asyncio.run(within(slow(0, 7), 1)) == 7
    assert asyncio.run(nested(1, 1, 0)) == "done"
    assert asyncio.run(nested(0.05, 1, 0.5)) == "inner"      # the body's deadline: a 408 in read_body
    assert asyncio.run(nested(1, 0.05, 0.5)) == "outer"      # the request's: a 503


@pytest.mark.parametrize("path,root,route", [
    ("/predict", "", "/predict"), ("/api/predict", "/api", "/predict"), ("/api", "/api", "/"),
    ("/apix/predict", "/api", "/apix/predict"), ("/predict", "/api", "/predict"),  # Serve's proxy: root not in path
])
def test_route_path_strips_the_mount_point_only(path, root, route):
    assert route_path({"path": path, "root_path": root}) == route


@pytest.mark.parametrize("value,ok", [
    ("application/json", True), ("Application/JSON", True), ("application/json; charset=utf-8", True),
    ('application/json; charset="UTF-8"', True), ("application/json;charset=utf8", True),
    ("application/json; charset=latin-1", False), ("text/plain", False), ("application/x-www-form-urlencoded", False),
    ("multipart/form-data; boundary=x", False), ("application/jsonp", False), ("", False), (None, False),
])
def test_only_utf8_json_is_accepted(value, ok):
    assert json_content(value) is ok


def test_client_request_ids_are_echoed_only_when_sane():
    assert _request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in ("<script>", "a" * 65, "ünï", "a b", "", None):
        rid = _request_id(bad)
        assert rid != bad and len(rid) == 16 and rid.isalnum()


@pytest.mark.parametrize("asked,total,free,plan", [
    ("auto", 0, 0, (0.0, 3)), ("auto", 1, 0, (0.0, 3)), ("auto", 2, 2, (1.0, 2)), ("auto", 4, 4, (1.0, 3)),
    (0, 8, 8, (0.0, 3)), (0.5, 1, 1, (0.5, 2)), (1, 2, 1, (1.0, 1)),
])
def test_gpu_plan_fits_what_is_free(asked, total, free, plan):
    assert gpu_plan(asked, 3, total, free) == plan


def test_gpu_plan_fails_at_once_instead_of_waiting():
    with pytest.raises(ResourceError, match=r"gpus_per_actor=1 but the cluster has 0 GPU\(s\); set batch.gpus_per_actor=0"):
        gpu_plan(1, 2, 0, 0)
    with pytest.raises(ResourceError, match=r"only 0 of the cluster's 1 GPU\(s\) are free .*Serve replicas"):
        gpu_plan(1, 2, 1, 0)


def test_deploy_progress_counts_replicas_by_state():
    from types import SimpleNamespace

    from ray.serve._private.common import ReplicaState

    from rayline.serve.deploy import replica_line

    app = SimpleNamespace(deployments={"ModelServer": SimpleNamespace(
        replica_states={ReplicaState.RUNNING: 1, ReplicaState.STARTING: 1})})
    assert replica_line(app) == "replicas: 1 running, 1 starting"
    assert replica_line(SimpleNamespace(deployments={})) is None


@pytest.mark.parametrize("sets, level", [([], "WARNING"), (["serve.access_log=true"], "INFO"),
                                         (["serve.replica_log_level=DEBUG", "serve.access_log=true"], "DEBUG"),
                                         (["serve.replica_log_level=ERROR"], "ERROR")])
def test_serves_own_replica_log_level_is_warning_unless_asked_and_the_access_log_brings_info(sets, level):
    from rayline.config import load_config
    from rayline.serve.options import ReplicaArgs, deployment_options
    from tests.conftest import FLIGHTS_CONFIG

    cfg = load_config(FLIGHTS_CONFIG, sets)
    opts = deployment_options(ReplicaArgs.from_config(cfg), None, cfg.serve)
    assert opts["logging_config"] == {"enable_access_log": cfg.serve.access_log, "log_level": level}


def test_an_unknown_replica_log_level_is_refused_naming_the_field():
    from rayline.config import load_config
    from rayline.errors import ConfigError
    from tests.conftest import FLIGHTS_CONFIG

    with pytest.raises(ConfigError, match="serve.replica_log_level"):
        load_config(FLIGHTS_CONFIG, ["serve.replica_log_level=VERBOSE"])
