"""Reading the engine's load from vLLM's Prometheus gauges (pure parsing; the real engines are tested over HTTP
in tests/strategies/test_allocator_load_http.py)."""

from __future__ import annotations

import asyncio

from service.runtime.load import EngineLoad, combine, parse_metrics, read_load

VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smol"} 7.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smol"} 3.0
vllm:kv_cache_usage_perc{engine="0",model_name="smol"} 0.25
vllm:prefix_cache_hits_total{engine="0",model_name="smol"} 640.0
"""


def test_gauges_are_read_and_summed_over_servers() -> None:
    values = parse_metrics(VLLM_METRICS)
    assert values["vllm:num_requests_running"] == [7.0]
    assert values["vllm:prefix_cache_hits_total"] == [640.0]
    other = parse_metrics(VLLM_METRICS.replace("7.0", "1.0").replace("0.25", "0.75"))
    load = combine([values, other, {}], "two servers")
    assert (load.running, load.waiting, load.kv_cache_usage) == (8, 6, 0.75)
    assert load.sequences == 14 and load.describe()["source"] == "two servers"


def test_an_engine_that_cannot_tell_has_no_load() -> None:
    class Silent:
        pass

    class Broken:
        async def load(self) -> EngineLoad:
            raise RuntimeError("no metrics")

    assert asyncio.run(read_load(Silent())) is None  # type: ignore[arg-type]
    assert asyncio.run(read_load(Broken())) is None  # type: ignore[arg-type]
