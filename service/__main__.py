"""`python -m service`: run the HTTP service. Every option is also a TTC_* environment variable."""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    return Settings(**{**defaults.model_dump(), **overrides})


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
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
