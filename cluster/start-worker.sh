#!/usr/bin/env bash
# Join this machine to a Ray cluster as a worker.
#   cluster/start-worker.sh HEAD_IP [--num-gpus N]   (extra args go to `ray start`)
# The head's token must be here: RAY_AUTH_TOKEN, or the file RAY_AUTH_TOKEN_PATH (default
# ~/.ray/auth_token, copied from the head, mode 0600). The storage root in the config must be
# visible here too (NFS mount or object store).
set -euo pipefail
head=${1:?usage: start-worker.sh HEAD_IP [ray start args]}
shift
RAY=${RAY:-ray}
export RAY_AUTH_MODE=token
# Serve's HAProxy ingress (serve.ingress: haproxy; docs/system-patterns.md, Serving): HAProxy on
# Serve's port forwards straight to the replicas; a request whose replica died is sent to another.
# RAY_SERVE_ENABLE_HA_PROXY=0 keeps Serve's Python proxy.
export RAY_SERVE_ENABLE_HA_PROXY=${RAY_SERVE_ENABLE_HA_PROXY:-1}
export RAY_SERVE_HAPROXY_RETRY_ON=${RAY_SERVE_HAPROXY_RETRY_ON:-conn-failure empty-response}
export RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT=${RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT:-1}
export RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=${RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S:-5}
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
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  token_file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
  if [ ! -s "$token_file" ]; then
    echo "start-worker.sh: no cluster token in $token_file: copy the head's token file here (mode 0600)" >&2
    exit 2
  fi
  chmod 600 "$token_file"
  export RAY_AUTH_TOKEN_PATH=$token_file
fi
exec "$RAY" start --address="$head:${RAY_PORT:-6379}" --metrics-export-port="${METRICS_PORT:-8080}" \
  --temp-dir="${RAY_TEMP_DIR:-/tmp/ray}" "$@"
