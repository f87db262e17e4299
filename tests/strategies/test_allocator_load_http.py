"""Load-aware `auto` through the real engine and HTTP: on an idle engine nothing changes; while concurrent
requests keep the engine busy, the `latency` goal chooses a smaller plan than the idle-engine choice, and
`details.allocation.load` says what the load was and what it changed."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.engine

QUESTION = "What is 38 + 47? Answer with just the number."


def auto(client: httpx.Client, **params: Any) -> dict[str, Any]:
    body = {
        "prompt": QUESTION,
        "strategy": "auto",
        # cost_weight 0: the plan is the most accurate that fits, so on an idle engine the largest that fits
        # the 1100 tokens (32 samples of 32), and any shrinking of the caps shows as a smaller plan
        "params": {
            "strategies": ["best_of_n"],
            "memory": f"load-{uuid.uuid4().hex}",
            "cost_weight": 0,
            **params,
        },
        "budget": {"tokens": 1100},
        "sampling": {"max_tokens": 32},
    }
    response = client.post("/v1/solve", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def running(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("ttc_engine_requests_running "):
            return float(line.split()[-1])
    return 0.0


def test_idle_engine_changes_nothing(client: httpx.Client) -> None:
    load = auto(client, goal="latency")["details"]["allocation"]["load"]
    assert load["running"] == 0 and load["waiting"] == 0 and load["goal"] == "latency"
    assert load["slowdown"] == 1.0 and load["changed"].startswith("nothing")


def test_a_busy_engine_gets_a_smaller_plan(client: httpx.Client, service_url: str) -> None:
    model = client.get("/v1/models").json()["data"][0]["id"]
    stop = threading.Event()

    def busy() -> None:
        """Long streamed generations, one after another, until the test is done; then the stream is closed
        mid-way, which stops its engine work (a disconnect), so the test does not wait for it to finish."""
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Write a long story about the sea."}],
            "n": 12,
            "max_tokens": 160,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.Client(base_url=service_url, timeout=300) as http:
            while not stop.is_set():
                with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    for _ in response.iter_lines():
                        if stop.is_set():
                            break

    # 48 sequences: under the admission's per-key share (64 of 128), so the auto request is not queued
    threads = [threading.Thread(target=busy) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while running(client) < 16 and time.monotonic() < deadline:
            time.sleep(0.2)
        loaded = auto(client, goal="latency")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
    load = loaded["details"]["allocation"]["load"]
    assert load["running"] + load["waiting"] >= 16, load  # vLLM counts each of the n samples
    assert load["slowdown"] > 1.1 and load["cap_factor"] < 1.0
    chosen = loaded["details"]["allocation"]["chosen"]
    idle_choice = load["idle_engine_choice"]
    assert chosen["params"]["n"] < idle_choice["params"]["n"], load
    assert load["changed"].startswith("best_of_n") and "instead of" in load["changed"]
    assert idle_choice["params"]["n"] == 32
    assert loaded["usage"]["completion_tokens"] <= 1100
    blind = auto(client, goal="latency", load_aware=False)
    # with load_aware false the allocator does not look: the same request plans as if the engine were idle
    assert blind["details"]["allocation"]["load"]["source"] == "not read: params.load_aware is false"
    assert blind["details"]["allocation"]["load"]["changed"] == "nothing"
