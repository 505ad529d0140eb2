"""The ingress choice becomes the environment Serve reads when Ray starts."""

import json
import os
import subprocess
from pathlib import Path

from rayline.config import ServeConfig
from rayline.runtime import free_port
from rayline.serve.haproxy_launch import error_408, patch_config
from rayline.serve.ingress import ingress_env


def test_haproxy_is_the_default_with_retries_and_ports_of_its_own():
    env = ingress_env(ServeConfig())
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert set(env["RAY_SERVE_HAPROXY_RETRY_ON"].split()) == {"conn-failure", "empty-response"}
    assert env["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] == "1"
    assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"  # handlers on the replica's main loop
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) < 30  # drains inside a pod's 30 s grace
    stats, metrics = int(env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])
    assert stats != metrics and not ({stats, metrics} & {8404, 9101})  # Ray's fixed ports collide between two Rays
    assert not any(10002 <= p <= 19999 for p in (stats, metrics))   # never in Ray's worker port range


def test_the_python_proxy_switches_haproxy_off():
    assert ingress_env(ServeConfig(ingress="proxy")) == {"RAY_SERVE_ENABLE_HA_PROXY": "0",
                                                         "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def test_serve_starts_haproxy_through_rayline_haproxy_with_the_body_timeout():
    env = ingress_env(ServeConfig(body_timeout_s=7.5))
    launcher = env["RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert os.path.isabs(launcher) and os.access(launcher, os.X_OK) and launcher.endswith("rayline-haproxy")
    assert env["RAYLINE_BODY_TIMEOUT_S"] == "7.5"


SERVE_CONFIG = """global
    stats socket {sock} mode 666 level admin expose-fd listeners
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    option splice-request
    retry-on conn-failure empty-response
frontend prometheus
    bind :{port3}
    mode http
    http-request use-service prometheus-exporter if {{ path /metrics }}
    no log
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend b
backend b
    http-reuse always
    server r1 127.0.0.1:{port2}
listen stats
  bind *:{port4}
  stats enable
  stats uri /stats
"""


def _config(tmp_path=None, **ports):
    sock = f"{tmp_path}/admin.sock" if tmp_path else "/x/admin.sock"
    return SERVE_CONFIG.format(sock=sock, **{"port": 1, "port2": 2, "port3": 3, "port4": 4, **ports})


def test_the_patch_holds_small_requests_and_bounds_their_arrival():
    text = _config()
    out = patch_config(text, 2.5, "/x/408.http", keep_stats=True)
    defaults = out.split("defaults\n", 1)[1].split("frontend", 1)[0]
    frontend = out.split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    assert "    timeout http-request 2500ms\n" in defaults and "    errorfile 408 /x/408.http\n" in defaults
    assert defaults.index("timeout http-request") < defaults.index("mode http")  # Serve's own lines still win
    assert ("    http-request wait-for-body time 2500ms unless { req.hdr(content-length) -m len gt 4 }\n"
            in frontend)
    added = [line for line in out.splitlines(keepends=True) if line not in text.splitlines(keepends=True)]
    changed = {"mode 666": "mode 600", "bind :3": "bind 127.0.0.1:3", "bind *:4": "bind 127.0.0.1:4"}
    original = text
    for old, new in changed.items():
        original = original.replace(old, new)
    assert len(added) == 14 + len(changed)  # 3 in defaults, 10 in the frontend, the exporter's 404; listeners
    assert "".join(line for line in out.splitlines(keepends=True)
                   if line not in added or any(new in line for new in changed.values())) == original
    assert patch_config("global\n    maxconn 1\ndefaults\n    mode http\n", 1, "/x") is None  # no frontend


def test_the_408_answer_is_raw_http_with_rayline_json_error():
    head, body = error_408(10).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ") and f"content-length: {len(body)}".encode() in head
    assert json.loads(body)["error"] == "body_timeout" and "10s" in json.loads(body)["message"]


def test_the_launcher_execs_the_real_binary_on_a_patched_copy(tmp_path):
    """The installed rayline-haproxy, run as Serve runs it, with a stand-in HAProxy that shows
    what it was given; then the real HAProxy checks the patched config."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(_config(tmp_path, port=free_port(), port2=free_port(), port3=free_port(), port4=free_port()))
    fake = tmp_path / "fake-haproxy"
    fake.write_text('#!/bin/sh\necho "ARGS $*"\nwhile [ $# -gt 0 ]; do [ "$1" = -f ] && cat "$2"; shift; done\n')
    fake.chmod(0o755)
    env = {**os.environ, **ingress_env(ServeConfig(body_timeout_s=4)), "RAYLINE_HAPROXY_BINARY": str(fake)}
    out = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(config), "-sf", "123"],
                         env=env, capture_output=True, text=True, check=True).stdout
    patched = f"{config}.rayline"
    assert out.splitlines()[0] == f"ARGS -db -f {patched} -sf 123"
    assert "http-request wait-for-body time 4000ms" in out and "timeout http-request 4000ms" in out
    assert "wait-for-body" not in config.read_text()                 # Serve's own file is left as written
    assert Path(f"{patched}.408.http").read_bytes() == error_408(4)
    env.pop("RAYLINE_HAPROXY_BINARY")                                 # the real one (Ray's bundled HAProxy)
    check = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-c", "-f", str(config)], env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_listeners_bind_where_serve_host_says_and_the_admin_socket_is_private():
    out = patch_config(_config(), 1, "/x/408.http")
    assert "mode 600 level admin" in out and "mode 666" not in out
    assert "    bind 127.0.0.1:3\n" in out and "bind :" not in out and "bind *:" not in out
    assert "listen stats" not in out and "stats uri" not in out  # off unless RAYLINE_HAPROXY_STATS=1
    prometheus = out.split("frontend prometheus\n", 1)[1].split("frontend", 1)[0]
    assert prometheus.index("use-service prometheus-exporter") < prometheus.index("return status 404")
    wide = patch_config(_config().replace("bind 127.0.0.1:1", "bind 0.0.0.0:1"), 1, "/x", keep_stats=True)
    assert "    bind 0.0.0.0:3\n" in wide and "  bind 0.0.0.0:4\n" in wide


def test_header_rules_come_before_the_body_is_held_and_name_every_header_serve_reads():
    from rayline.serve.haproxy_launch import SERVE_HEADERS

    frontend = patch_config(_config(), 1, "/x").split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    assert all(f"req.fhdr({h}) -m reg" in frontend for h in SERVE_HEADERS)
    assert frontend.index("bad_header") < frontend.index("missing_host") < frontend.index("wait-for-body")
    assert "req.fhdr_cnt(authorization) gt 1" in frontend and "del-header expect if { req.ver 1.0 }" in frontend


def test_predict_requests_go_to_the_replica_marked_so_serve_awaits_the_handler_directly():
    """/predict carries its own deadline in the replica, so HAProxy sets the two headers that make
    Serve skip its per-request disconnect watcher and deadline (overriding what a client sent);
    the other routes keep both."""
    frontend = patch_config(_config(), 1, "/x").split("frontend http_frontend\n", 1)[1].split("backend", 1)[0]
    rules = [line.strip() for line in frontend.splitlines()]
    assert "http-request set-header x-request-disconnect-disabled ?1 if { method POST } { path_end /predict }" in rules
    assert "http-request set-header x-request-timeout-seconds 0 if { method POST } { path_end /predict }" in rules
    assert frontend.index("bad_header") < frontend.index("set-header x-request-disconnect-disabled")
