#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, types, unit tests and the tests that start the
# real engine and a real HTTP server. Extra arguments go to pytest (e.g. -k budget).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
