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
. "$(dirname "$0")/serve-ingress.sh"  # Serve's HAProxy ingress and rayline-haproxy (exits 2 without it)
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
