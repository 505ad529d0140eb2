"""The ingress choice becomes the environment Serve reads when Ray starts."""

from rayline.config import ServeConfig
from rayline.serve.ingress import ingress_env


def test_haproxy_is_the_default_with_retries_and_ports_of_its_own():
    env = ingress_env(ServeConfig())
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert set(env["RAY_SERVE_HAPROXY_RETRY_ON"].split()) == {"conn-failure", "empty-response"}
    assert env["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] == "1"
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) < 30  # drains inside a pod's 30 s grace
    stats, metrics = int(env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(env["RAY_SERVE_HAPROXY_METRICS_PORT"])
    assert stats != metrics and not ({stats, metrics} & {8404, 9101})  # Ray's fixed ports collide between two Rays
    assert not any(10002 <= p <= 19999 for p in (stats, metrics))   # never in Ray's worker port range


def test_the_python_proxy_switches_haproxy_off():
    assert ingress_env(ServeConfig(ingress="proxy")) == {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
