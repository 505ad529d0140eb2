"""How HTTP reaches the replicas: Serve's HAProxy ingress (the default) or its Python proxy.

Serve reads the choice from its processes' environment, so it is made where Ray starts: the
embedded Ray of `rayline` sets these variables from `serve.ingress` before it starts; a
cluster's definitions (`cluster/serve-ingress.sh` for the start scripts, the launcher YAMLs, KubeRay) export
the same ones. With HAProxy, each replica runs its own HTTP server (ports 30000-31000, bound to
`serve.host`, answering with the same app and API-key check) and HAProxy, bound to
`serve.host:serve.port`, forwards to them: no Python proxy hop (docs/system-patterns.md has the
numbers). Serve starts HAProxy through `rayline-haproxy` (serve/haproxy_launch.py), which adds
request buffering to Serve's config so that a request on a replica that dies is replayed.
"""

from __future__ import annotations

import shutil
import sysconfig
import warnings

from rayline.config import ServeConfig
from rayline.runtime import free_port
from rayline import ray_compat as rc
from rayline.serve.haproxy_launch import ENV_BODY_TIMEOUT

HAPROXY = rc.SERVE_HAPROXY
# A prediction is idempotent: a request whose replica died (connection refused, or closed with
# no answer) is sent to another replica instead of failing. Only those two: a slow answer is
# not retried (the request may still be running).
RETRY_ON = "conn-failure empty-response"
# A replica is taken out of rotation on its first failed connection, not the third: with
# leastconn a dead replica (no connections) is every retry's first pick until then. Measured on
# a SIGKILL under 16 clients: 6-7 failed requests with 3, 2 with 1 (those in flight on it).
ERROR_LIMIT = "1"
# A stopping replica keeps accepting for this long so the ingress can drop it first (Ray's
# default, 30 s, is meant for outside load balancers; HAProxy is updated within ~0.1 s). 30 s
# would make every rollout, scale-down and `serve.delete` take 30 s, and a pod's SIGTERM drain
# outlast Kubernetes' default 30 s grace period.
DRAIN_S = "5"
LAUNCHER = "rayline-haproxy"  # installed with rayline ([project.scripts])
# Replicas run rayline's handlers on their main event loop instead of a second loop in another
# thread (Serve's default): one thread hop less each way per request. The handlers never block
# for long (storage reads run in worker threads; a forward pass of a batch takes milliseconds).
# Alternating runs on this host, one replica, HAProxy: c=1 p50 3.1-3.9 ms vs 3.6-6.3 ms, c=16
# 842-977 req/s vs 625-745.
USER_CODE_THREAD = rc.SERVE_USER_CODE_THREAD


def launcher_path() -> str | None:
    """The absolute path of rayline-haproxy: beside this interpreter's scripts, else on PATH."""
    return shutil.which(LAUNCHER, path=sysconfig.get_path("scripts")) or shutil.which(LAUNCHER)


def ingress_env(serve: ServeConfig) -> dict[str, str]:
    """Environment for a Ray about to start. HAProxy's stats page and Prometheus exporter get
    free ports (Ray's fixed 8404/9101 collide between two Rays on one host)."""
    if serve.ingress == "proxy":
        return {HAPROXY: "0", USER_CODE_THREAD: "0"}
    env = {HAPROXY: "1", USER_CODE_THREAD: "0", rc.SERVE_HAPROXY_RETRY_ON: RETRY_ON,
           rc.SERVE_HAPROXY_ERROR_LIMIT: ERROR_LIMIT, rc.SERVE_DRAINING_PERIOD: DRAIN_S,
           ENV_BODY_TIMEOUT: f"{serve.body_timeout_s:g}",
           rc.SERVE_HAPROXY_STATS_PORT: str(free_port()), rc.SERVE_HAPROXY_METRICS_PORT: str(free_port())}
    launcher = launcher_path()
    if launcher:
        env[rc.SERVE_HAPROXY_BINARY] = launcher
    else:
        warnings.warn(f"{LAUNCHER} is not installed (pip install rayline): Serve starts HAProxy without request "
                      "buffering, so a request on a replica that dies fails instead of going to another", stacklevel=2)
    return env

