"""Prometheus metrics, one registry per app (never the global one, so tests and replicas stay separate)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.runtime.budget import Spend

if TYPE_CHECKING:
    from service.runtime.engine_remote import EngineStats

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
        self.stopped_requests = Counter(
            "ttc_engine_requests_stopped",
            "Engine calls a strategy aborted in the engine while they ran (deepconf's low-confidence traces).",
            ["strategy"],
            registry=self.registry,
        )
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

    def track_engines(self, stats: Callable[[], Sequence[EngineStats]]) -> None:
        """Per-engine series (label `engine`: the server's URL) for a remote engine of one or more servers."""
        self.registry.register(_EngineCollector(stats))

    def observe_solve(self, strategy: str, status: str, seconds: float, spend: Spend) -> None:
        self.solves.labels(strategy, status).inc()
        self.latency.labels(strategy).observe(seconds)
        self.prompt_tokens.labels(strategy).inc(spend.prompt_tokens)
        self.cached_tokens.labels(strategy).inc(spend.cached_prompt_tokens)
        self.completion_tokens.labels(strategy).inc(spend.completion_tokens)
        self.eflops.labels(strategy).inc(spend.eflops)
        self.stopped_requests.labels(strategy).inc(spend.engine_requests_stopped)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    """Reads the remote engine's per-server counters at scrape time."""

    def __init__(self, stats: Callable[[], Sequence[EngineStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        engines = self._stats()
        counters = {
            "calls": ("ttc_engine_calls", "Engine calls sent to this server (tries included)."),
            "failures": ("ttc_engine_failures", "Calls this server failed (connection, 5xx, cut stream)."),
            "restarts": ("ttc_engine_restarts", "Calls that died mid-way on this server and were redone."),
            "prompt_tokens": ("ttc_engine_prompt_tokens", "Prompt tokens this server processed."),
            "cached_prompt_tokens": (
                "ttc_engine_cached_prompt_tokens",
                "Prompt tokens it served from cache.",
            ),
        }
        for attribute, (name, help_text) in counters.items():
            family = CounterMetricFamily(name, help_text, labels=["engine"])
            for engine in engines:
                family.add_metric([engine.url], float(getattr(engine, attribute)))
            yield family
        in_flight = GaugeMetricFamily(
            "ttc_engine_in_flight", "Calls running on this server.", labels=["engine"]
        )
        up = GaugeMetricFamily(
            "ttc_engine_up", "0 while this server is passed over after a failure.", labels=["engine"]
        )
        for engine in engines:
            in_flight.add_metric([engine.url], float(engine.in_flight))
            up.add_metric([engine.url], 1.0 if engine.up else 0.0)
        yield in_flight
        yield up
