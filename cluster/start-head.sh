#!/usr/bin/env bash
# Start a Ray head on this machine, for a cluster of plain machines.
#   cluster/start-head.sh [--num-cpus N]   (extra args go to `ray start`)
# Ports: GCS 6379, dashboard + Jobs API 8265 (all interfaces), Prometheus metrics 8080,
# Serve HTTP 8000 (when an app is deployed). Token auth is on (Ray 2.60 default): share
# ~/.ray/auth_token with the workers and clients (or set RAY_AUTH_TOKEN_PATH).
set -euo pipefail
RAY=${RAY:-ray}
exec "$RAY" start --head --port="${RAY_PORT:-6379}" --dashboard-host=0.0.0.0 --dashboard-port="${DASHBOARD_PORT:-8265}" \
  --metrics-export-port="${METRICS_PORT:-8080}" --temp-dir="${RAY_TEMP_DIR:-/tmp/ray}" "$@"
