#!/usr/bin/env bash
# Join this machine to a Ray cluster as a worker.
#   cluster/start-worker.sh HEAD_IP [--num-gpus N]   (extra args go to `ray start`)
# The storage root in the config must be visible here too (NFS mount or object store).
set -euo pipefail
head=${1:?usage: start-worker.sh HEAD_IP [ray start args]}
shift
RAY=${RAY:-ray}
exec "$RAY" start --address="$head:${RAY_PORT:-6379}" --metrics-export-port="${METRICS_PORT:-8080}" \
  --temp-dir="${RAY_TEMP_DIR:-/tmp/ray}" "$@"
