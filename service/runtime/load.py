"""How busy the engine is right now, as vLLM itself counts it: sequences running, sequences waiting, KV-cache use.

The in-process engine reads vLLM's own Prometheus gauges (its stat logger updates them every engine step, in this
process's default registry); a remote engine reads each server's `/metrics`. `auto` uses it to predict how long
a plan takes on a busy engine (strategies/allocator.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from service.runtime.engine import Engine

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True)
class EngineLoad:
    running: int
    waiting: int
    kv_cache_usage: float  # 0..1, the most used server's
    source: str

    @property
    def sequences(self) -> int:
        """Sequences a new call shares the engine with (the waiting ones join the batch before it ends)."""
        return self.running + self.waiting

    def describe(self) -> dict[str, object]:
        return {
            "running": self.running,
            "waiting": self.waiting,
            "kv_cache_usage": round(self.kv_cache_usage, 4),
            "source": self.source,
        }


@runtime_checkable
class LoadReporter(Protocol):
    async def load(self) -> EngineLoad: ...


async def read_load(engine: Engine) -> EngineLoad | None:
    """The engine's load, or None when it cannot tell (a test double, a server without metrics)."""
    if not isinstance(engine, LoadReporter):
        return None
    try:
        return await engine.load()
    except Exception:  # load is advice; never fail a request for it
        return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfINFaN]+)")


def parse_metrics(text: str) -> dict[str, list[float]]:
    """Prometheus text format -> every sample value per metric name (labels dropped)."""
    values: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            try:
                values.setdefault(match.group(1), []).append(float(match.group(3)))
            except ValueError:
                continue
    return values


def combine(samples: Iterable[dict[str, list[float]]], source: str) -> EngineLoad:
    """Sum running and waiting over servers (and engine indices); the fullest KV cache counts."""
    running = waiting = 0.0
    kv = 0.0
    for values in samples:
        running += sum(values.get(RUNNING, []))
        waiting += sum(values.get(WAITING, []))
        kv = max([kv, *values.get(KV_USAGE, [])])
    return EngineLoad(int(running), int(waiting), kv, source)
