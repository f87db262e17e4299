"""Several engines, one search on one engine: two real vLLM CPU servers (one core each) behind the real
vLLM router (consistent-hash policy), our service on top with TTC_ENGINE=remote pointed at the router.

Which engine served a call is read from each server's own /metrics (request counters), not from our side.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.cluster import Cluster, engine_counters, start_cluster
from loadtests.harness import free_port, stop
from service.runtime.load import RUNNING, parse_metrics
from service.runtime.model_files import resolve_model
from service.runtime.settings import Settings
from tests.conftest import start_service

pytestmark = pytest.mark.engine

QUESTION = (
    "A farmer keeps a careful record of his animals. On Monday he counts 12 hens, 7 ducks and 4 geese in the "
    "yard; on Tuesday two more ducks arrive, and on Wednesday he sells three hens and one goose. How many birds "
    "does he have on Wednesday evening? Solve it step by step, one short step per paragraph."
)
SEARCH = {
    "prompt": QUESTION,
    "strategy": "beam_search",
    "params": {"width": 4, "beam_width": 2, "max_depth": 3, "step_tokens": 16},
    "sampling": {"max_tokens": 64},
    "verifier": {"name": "judge"},
    "budget": {"seconds": 120},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """Two engines, the router, and our service in front of the router."""
    log_dir = tmp_path_factory.mktemp("cluster")
    model_dir = resolve_model(None, Settings().model_cache_dir)
    cluster = start_cluster(model_dir, log_dir)
    try:
        router = cluster.routers["consistent_hash"].url
        service, process = start_service(
            log_dir, "--engine", "remote", "--engine-url", router, "--model", model_dir
        )
        try:
            yield cluster, service
        finally:
            stop(process)
    finally:
        cluster.stop()


def requests_per_engine(cluster: Cluster) -> list[float]:
    return [engine_counters(engine.url)["requests"] for engine in cluster.engines]


def solve(service: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{service}/v1/solve", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_search_reaches_one_engine_only(cluster: tuple[Cluster, str]) -> None:
    engines, service = cluster
    before = requests_per_engine(engines)
    result = solve(service, SEARCH)
    after = requests_per_engine(engines)
    delta = sorted(b - a for a, b in zip(before, after, strict=True))
    calls = result["usage"]["engine_requests"] + result["usage"]["verifier_requests"]
    assert calls > 1
    # vLLM counts a few more finished requests than we make calls (n > 1 samples); what matters is the zero
    assert delta[0] == 0 and delta[1] >= calls, f"calls per engine {delta}, the search made {calls}"
    assert result["usage"]["cached_prompt_tokens"] > 0  # its branches hit the one engine's prefix cache


def test_concurrent_searches_spread_over_both_engines(cluster: tuple[Cluster, str]) -> None:
    """Each search carries its own random key: pairs of concurrent searches until both engines were used
    (a fair hash leaves one engine idle over six pairs with probability 2**-11)."""
    engines, service = cluster
    before = requests_per_engine(engines)
    body = {**SEARCH, "params": {**SEARCH["params"], "max_depth": 1}}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(6):
            list(pool.map(lambda _: solve(service, body), range(2)))
            after = requests_per_engine(engines)
            if all(b > a for a, b in zip(before, after, strict=True)):
                break
    assert all(b > a for a, b in zip(before, after, strict=True)), (before, after)


def test_a_list_of_servers_keeps_a_search_on_one_engine(cluster: tuple[Cluster, str], tmp_path: Path) -> None:
    """Without the router: TTC_ENGINE_URL lists the servers and the service hashes the key itself. The list
    also names a server that is down (nothing listens there): calls that prefer it move on to the key's next
    server, so the search still answers and still stays on one live engine."""
    engines, _ = cluster
    model_dir = resolve_model(None, Settings().model_cache_dir)
    dead = f"http://127.0.0.1:{free_port()}"
    urls = ",".join([dead, *(engine.url for engine in engines.engines)])
    service, process = start_service(
        tmp_path, "--engine", "remote", "--engine-url", urls, "--model", model_dir
    )
    try:
        before = requests_per_engine(engines)
        result = solve(service, SEARCH)
        after = requests_per_engine(engines)
        metrics = httpx.get(f"{service}/metrics", timeout=10).text
    finally:
        stop(process)
    delta = sorted(b - a for a, b in zip(before, after, strict=True))
    calls = result["usage"]["engine_requests"] + result["usage"]["verifier_requests"]
    assert delta[0] == 0 and delta[1] >= calls, f"calls per engine {delta}, the search made {calls}"
    for url in urls.split(","):  # per-engine series, one per server
        assert f'ttc_engine_calls_total{{engine="{url}"}}' in metrics


def gauge(url: str, name: str) -> float:
    """One of a vLLM server's /metrics series, summed over its labels."""
    return sum(parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text).get(name, []))


def streaming(url: str) -> bool:
    """The server is sending tokens right now: a call running on it and its token counter moving. (The
    running gauge alone can lag behind a call that just finished.)"""
    before = gauge(url, "vllm:generation_tokens_total")
    time.sleep(0.1)
    return gauge(url, RUNNING) > 0 and gauge(url, "vllm:generation_tokens_total") > before


# Long calls (200 tokens each, through the OpenAI endpoint with vLLM's min_tokens) beside the searches: the kill
# lands inside a call, not after short searches have all finished, when a kill would redo nothing. Four of them,
# so the engine running the most requests almost always holds some.
LONG = {
    "messages": [{"role": "user", "content": QUESTION}],
    "max_tokens": 200,
    "min_tokens": 200,
    "n": 2,
}


def chat(service: str, body: dict[str, Any]) -> dict[str, Any]:
    model = httpx.get(f"{service}/v1/models", timeout=10).json()["data"][0]["id"]
    response = httpx.post(f"{service}/v1/chat/completions", json={**body, "model": model}, timeout=300)
    assert response.status_code == 200, response.text
    return dict(response.json())


def restarts_metric(service: str, engine_url: str) -> float:
    """The service's count of calls that died on `engine_url` and were redone."""
    series = f'ttc_engine_restarts_total{{engine="{engine_url}"}}'
    for line in httpx.get(f"{service}/metrics", timeout=10).text.splitlines():
        if line.startswith(series):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_killing_one_engine_mid_run_still_answers_every_request(cluster: tuple[Cluster, str]) -> None:
    """Runs last: it kills an engine. Two searches and four long calls in flight; the engine running the most
    calls dies under them (SIGKILL); every request still answers, and the calls that died are redone on the
    other engine."""
    engines, service = cluster
    router = engines.routers["consistent_hash"].url
    search = {**SEARCH, "params": {**SEARCH["params"], "max_depth": 4}}
    redone_before = restarts_metric(service, router)
    with ThreadPoolExecutor(6) as pool:
        searches = [pool.submit(solve, service, search) for _ in range(2)]
        long_calls = [pool.submit(chat, service, LONG) for _ in range(4)]
        deadline = time.monotonic() + 90
        while not any(streaming(engine.url) for engine in engines.engines):
            assert time.monotonic() < deadline, "no engine ever ran a call"
        time.sleep(1.0)  # every long call has started: 200 tokens take several seconds on one core
        victim = max(engines.engines, key=lambda engine: gauge(engine.url, RUNNING))
        assert streaming(victim.url)
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait()
        killed_at = time.monotonic()
        results = [future.result() for future in searches]
        completions = [future.result() for future in long_calls]
    assert all(result["text"] for result in results)
    assert all(
        choice["message"]["content"] and choice["finish_reason"] == "length"
        for completion in completions
        for choice in completion["choices"]
    )
    # vLLM's router answers 503 on /health while any one worker is down; the service must not take that for
    # a dead engine (after engine_dead_seconds it would exit and every replica behind the router with it).
    time.sleep(max(0.0, killed_at + Settings().engine_dead_seconds + 3.0 - time.monotonic()))
    assert httpx.get(f"{service}/healthz", timeout=10).status_code == 200
    assert solve(service, {**SEARCH, "params": {**SEARCH["params"], "max_depth": 1}})["text"]
    assert restarts_metric(service, router) > redone_before, (
        "calls ran on the killed engine: some were redone"
    )
    survivor = next(engine for engine in engines.engines if engine is not victim)
    assert engine_counters(survivor.url)["requests"] > 0
