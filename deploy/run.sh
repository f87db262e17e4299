#!/usr/bin/env bash
# Set up (idempotent) and run the service on the embedded default model. Extra arguments go to
# `python -m service` (see --help), e.g. deploy/run.sh --port 9000.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
exec .venv/bin/python -m service "$@"
