"""Prometheus metrics, one registry per app (never the global one, so tests and replicas stay separate)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.runtime.budget import Spend

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "ttc_http_requests",
            "HTTP requests by method, route template and status code (every route, OpenAI ones included).",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "ttc_jobs",
            "Background job events: submitted, succeeded, failed, cancelled, taken_over, handed_back.",
            ["event"],
            registry=self.registry,
        )
        self.solves = Counter(
            "ttc_solve_requests",
            "Strategy runs by strategy and outcome.",
            ["strategy", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ttc_solve_seconds",
            "Wall time of strategy runs.",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "ttc_prompt_tokens", "Prompt tokens sent to the engine.", ["strategy"], registry=self.registry
        )
        self.cached_tokens = Counter(
            "ttc_cached_prompt_tokens",
            "Prompt tokens served from the prefix cache.",
            ["strategy"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "ttc_completion_tokens",
            "Tokens generated (samples and verifier calls).",
            ["strategy"],
            registry=self.registry,
        )
        self.eflops = Counter("ttc_eflops", "Equivalent FLOPs spent.", ["strategy"], registry=self.registry)
        self.engine_running = Gauge(
            "ttc_engine_requests_running", "Engine requests not yet finished.", registry=self.registry
        )
        self.rejected = Counter(
            "ttc_rejected_requests",
            "Requests refused at the front door, by reason (unauthenticated, forbidden, quota, admission).",
            ["reason"],
            registry=self.registry,
        )
        self.quota_spend = Counter(
            "ttc_quota_spend",
            "What each API key spent against its quota (key name, never the secret), by axis.",
            ["key", "axis"],
            registry=self.registry,
        )
        self.ready = Gauge("ttc_ready", "1 once the engine is loaded and warm.", registry=self.registry)

    def track_engine(self, running: Callable[[], int]) -> None:
        self.engine_running.set_function(lambda: float(running()))

    def observe_solve(self, strategy: str, status: str, seconds: float, spend: Spend) -> None:
        self.solves.labels(strategy, status).inc()
        self.latency.labels(strategy).observe(seconds)
        self.prompt_tokens.labels(strategy).inc(spend.prompt_tokens)
        self.cached_tokens.labels(strategy).inc(spend.cached_prompt_tokens)
        self.completion_tokens.labels(strategy).inc(spend.completion_tokens)
        self.eflops.labels(strategy).inc(spend.eflops)

    def render(self) -> bytes:
        return generate_latest(self.registry)
