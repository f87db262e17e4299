"""`python -m service`: run the HTTP service. Every option is also a TTC_* environment variable."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import uvicorn

from service.runtime.settings import Settings


def parse_args(argv: list[str]) -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=(
            "Test-time compute service: /v1/solve with a budget, OpenAI-compatible /v1/chat/completions and "
            "/v1/completions (with an optional `ttc` object), /metrics, /healthz, /readyz. Each option can also "
            "be set as an environment variable TTC_<OPTION> (e.g. TTC_PORT=9000); the command line wins."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=defaults.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=defaults.port, help="port to listen on")
    parser.add_argument(
        "--model",
        default=defaults.model,
        help="local model folder or vLLM model name (default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--served-model-name", default=defaults.served_model_name, help="name in /v1/models")
    parser.add_argument(
        "--engine",
        choices=["inprocess", "remote", "none"],
        default=defaults.engine,
        help="engine backend (none: corpora and retrieval only)",
    )
    parser.add_argument(
        "--engine-url", default=defaults.engine_url, help="OpenAI-compatible server for --engine remote"
    )
    parser.add_argument("--max-model-len", type=int, default=defaults.max_model_len, help="context length")
    parser.add_argument(
        "--hardware",
        choices=["cpu", "h100", "h200", "b200", "a100"],
        default=defaults.hardware,
        help="hardware profile for eFLOPs (cpu is measured on this machine once)",
    )
    parser.add_argument(
        "--log-level", default=defaults.log_level, choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="serve callers without a key (scope user) on a non-loopback address while no keys exist",
    )
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    return Settings(**{**defaults.model_dump(), **overrides})


async def _keys_exist(settings: Settings) -> bool:
    from service.store.client import connect
    from service.store.keys import KeyStore

    redis = connect(settings.redis_url, settings.redis_timeout_seconds)
    try:
        return await KeyStore(redis, settings.keys_namespace).any()
    finally:
        await redis.aclose()


def refusal(settings: Settings) -> str | None:
    """Why this service must not start (reachable from other hosts with nobody to authenticate), or None."""
    from service.api.auth import is_loopback

    if is_loopback(settings.host) or settings.allow_anonymous or settings.admin_key:
        return None
    try:
        if asyncio.run(_keys_exist(settings)):
            return None
    except Exception as exc:
        return f"cannot check for API keys in Redis at {settings.redis_url}: {exc!r}"
    return (
        f"refusing to listen on {settings.host} without API keys: anyone who can reach it could use it. "
        "Create a key (python -m service.keys create NAME), set TTC_ADMIN_KEY, listen on 127.0.0.1, "
        "or pass --allow-anonymous (TTC_ALLOW_ANONYMOUS=true) to serve anonymous callers on purpose."
    )


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
    reason = refusal(settings)
    if reason is not None:
        logging.getLogger("service").error(reason)
        print(f"python -m service: {reason}", file=sys.stderr)
        sys.exit(2)
    from service.api.app import create_app
    from service.api.middleware import RequestIdFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())

    fatal: list[str] = []

    def stop_for_restart(reason: str) -> None:
        """The engine failed to start or died: stop serving (graceful, like SIGTERM) and exit non-zero below,
        so systemd or Kubernetes restart the process (vLLM's own server does the same)."""
        fatal.append(reason)
        server.should_exit = True

    config = uvicorn.Config(
        create_app(settings, on_fatal=stop_for_restart),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        # Longer than load balancers' idle timeouts (60 s is common), so the balancer, not the service,
        # closes idle connections and never sends a request down one the service is closing.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    server.run()
    if fatal:
        logging.getLogger("service").critical("exiting with status 1: the engine %s", fatal[0])
        sys.exit(1)


if __name__ == "__main__":
    main()
