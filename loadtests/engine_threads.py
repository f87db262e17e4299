"""How many cores the in-process engine should compute on: vLLM's CPU default against every core.

vLLM's CPU backend binds its compute threads to all cores but one by default and leaves the last one to its
scheduler and the API process (`VLLM_CPU_OMP_THREADS_BIND=auto`): on a 2-core machine it computes on one core.
This starts the service twice, one after the other in one run, once with vLLM's default (`TTC_CPU_CORES=vllm`)
and once with every core bound (`TTC_CPU_CORES=all`: `VLLM_CPU_OMP_THREADS_BIND` lists them all, none
reserved), and drives the same work through its OpenAI endpoint: `--concurrency` chat completions of n = `--n`
samples each, and one single sequence, every sample `--max-tokens` tokens long (ignore_eos, so the work is
equal). Compares throughput and time to first token.

    python -m loadtests.engine_threads --concurrency 8 --n 4 --max-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import httpx

from loadtests.harness import RESULTS, print_result, running_service


async def drive(url: str, concurrency: int, n: int, max_tokens: int) -> dict[str, float]:
    """`concurrency` streamed chat completions at once: completion tokens per second and mean TTFT."""

    async def one(client: httpx.AsyncClient, index: int) -> tuple[int, float]:
        body = {
            "messages": [{"role": "user", "content": f"Tell me story number {index}."}],
            "n": n,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0.8,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first = None
        tokens = 0
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line.removeprefix("data: "))
                if first is None and any(c["delta"].get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = int(chunk["usage"]["completion_tokens"])
        return tokens, first if first is not None else time.perf_counter() - started

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one(client, -1)  # warm-up
        started = time.perf_counter()
        rows = await asyncio.gather(*(one(client, index) for index in range(concurrency)))
        seconds = time.perf_counter() - started
    return {
        "tokens_per_second": round(sum(tokens for tokens, _ in rows) / seconds, 1),
        "mean_ttft_ms": round(1000 * statistics.mean(ttft for _, ttft in rows), 1),
    }


def measure(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    with running_service(None, RESULTS / "engine_threads", env) as url:
        busy = asyncio.run(drive(url, args.concurrency, args.n, args.max_tokens))
        single = asyncio.run(drive(url, 1, 1, args.max_tokens))
    return {"busy": busy, "single": single}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests at once (default 8)")
    parser.add_argument("--n", type=int, default=4, help="samples per request (default 4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per sample (default 64)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    cases = {"vllm_default": {"TTC_CPU_CORES": "vllm"}, "all_cores": {"TTC_CPU_CORES": "all"}}
    result: dict[str, Any] = {"benchmark": "engine_threads", "cores": cores}
    for name, env in cases.items():
        result[name] = measure(env, args)
        print(f"{name:>12}: {result[name]}", flush=True)
    for load in ("busy", "single"):
        result[f"{load}_throughput_ratio_all_over_default"] = round(
            result["all_cores"][load]["tokens_per_second"]
            / result["vllm_default"][load]["tokens_per_second"],
            3,
        )
    result["faster"] = "all_cores" if result["busy_throughput_ratio_all_over_default"] > 1 else "vllm_default"
    print_result(result)


if __name__ == "__main__":
    main()
