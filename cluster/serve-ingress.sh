# Sourced by start-head.sh and start-worker.sh: the environment Serve reads when Ray starts on a
# node (the same variables rayline.serve.ingress.ingress_env gives the embedded Ray; a test holds
# them equal).
# Serve's HAProxy ingress (serve.ingress: haproxy; docs/system-patterns.md, Serving): HAProxy on
# Serve's port forwards straight to the replicas; a request whose replica died is sent to another.
# RAY_SERVE_ENABLE_HA_PROXY=0 keeps Serve's Python proxy.
export RAY_SERVE_ENABLE_HA_PROXY=${RAY_SERVE_ENABLE_HA_PROXY:-1}
export RAY_SERVE_HAPROXY_RETRY_ON=${RAY_SERVE_HAPROXY_RETRY_ON:-conn-failure empty-response}
export RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT=${RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT:-1}
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-5}
# Replicas run rayline's handlers on their main event loop (one thread hop less per request).
export RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=${RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD:-0}
# Serve starts HAProxy through rayline-haproxy (installed with rayline): it makes HAProxy hold each
# small request whole, so one in flight on a replica that dies is replayed on another, and answers 408
# when a request takes longer than RAYLINE_BODY_TIMEOUT_S to arrive (serve.body_timeout_s).
launcher=$(command -v rayline-haproxy || true)
if [ -z "${RAY_SERVE_HAPROXY_BINARY_PATH:-}" ] && [ -z "$launcher" ]; then
  echo "$(basename "$0"): rayline-haproxy is not on PATH: install rayline on this node (pip install -e .)" >&2
  exit 2
fi
export RAY_SERVE_HAPROXY_BINARY_PATH=${RAY_SERVE_HAPROXY_BINARY_PATH:-$launcher}
export RAYLINE_BODY_TIMEOUT_S=${RAYLINE_BODY_TIMEOUT_S:-10}
