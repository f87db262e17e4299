#!/usr/bin/env bash
# Set up (idempotent) and run the service on the embedded default model. Extra arguments go to
# `python -m service` (see --help), e.g. deploy/run.sh --port 9000.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
# The durable Redis setup.sh started (append-only, fsync every second), unless TTC_REDIS_URL names another.
export TTC_REDIS_URL="${TTC_REDIS_URL:-redis://127.0.0.1:${TTC_SERVICE_REDIS_PORT:-6380}/0}"
exec .venv/bin/python -m service "$@"
