#!/usr/bin/env bash
# Start a Ray head on this machine, for a cluster of plain machines.
#   cluster/start-head.sh [ray start args...]
#
# Token authentication is always on. Ray 2.60 turns it on for `ray start` only when asked
# (RAY_AUTH_MODE=token) or when a token file already exists, and without it anyone who reaches
# the GCS (6379), the dashboard/Jobs API (8265) or Ray Client can run code here with this
# machine's credentials. The token comes from RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH
# (default ~/.ray/auth_token); a missing file is created with a random token, mode 0600.
# Copy that file (0600) to every worker (cluster/start-worker.sh) and to every client.
#
# The dashboard (Jobs API, Serve REST API) binds DASHBOARD_HOST, 127.0.0.1 by default: submit
# jobs on the head or through a tunnel (ssh -L 8265:127.0.0.1:8265 head). DASHBOARD_HOST=0.0.0.0
# opens it to the network, still behind the token; the token then crosses the network in clear
# unless a TLS proxy sits in front, so do that only on a private network.
# Other ports: GCS RAY_PORT (6379), Prometheus metrics METRICS_PORT (8080), Serve 8000.
set -euo pipefail
RAY=${RAY:-ray}
if [ "${RAY_AUTH_MODE:-token}" != token ]; then
  echo "start-head.sh: refusing to start a head without token authentication (RAY_AUTH_MODE=$RAY_AUTH_MODE)" >&2
  exit 2
fi
export RAY_AUTH_MODE=token
. "$(dirname "$0")/serve-ingress.sh"  # Serve's HAProxy ingress and rayline-haproxy (exits 2 without it)
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  token_file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}
  if [ ! -s "$token_file" ]; then
    (umask 077 && mkdir -p "$(dirname "$token_file")" && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$token_file")
    echo "start-head.sh: new cluster token written to $token_file (copy it to workers and clients, mode 0600)" >&2
  fi
  chmod 600 "$token_file"
  export RAY_AUTH_TOKEN_PATH=$token_file
fi
exec "$RAY" start --head --port="${RAY_PORT:-6379}" --dashboard-host="${DASHBOARD_HOST:-127.0.0.1}" \
  --dashboard-port="${DASHBOARD_PORT:-8265}" --metrics-export-port="${METRICS_PORT:-8080}" \
  --temp-dir="${RAY_TEMP_DIR:-/tmp/ray}" "$@"
