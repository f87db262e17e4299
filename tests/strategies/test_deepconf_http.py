"""DeepConf through the real engine and HTTP: online traces stopped inside the engine, the budget as a hard
cap, the same answer format as best-of-N, and a 400 for bad parameters."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.engine

QUESTION = (
    "A baker makes 48 rolls in the morning and 36 in the afternoon. He sells 5 bags of 12 rolls and gives 7 "
    "rolls away. How many rolls are left? Give the final answer as a number after 'The answer is'."
)
# eta = 10 (DeepConf-low): the threshold is the 90th percentile of the warm-up's lowest group confidence, so
# most later traces dip below it somewhere; a consensus of 1.0 keeps sampling unless every trace agrees.
AGGRESSIVE = {"n": 8, "warmup": 4, "keep_percent": 10, "window": 8, "round_size": 4, "consensus": 1.0}


def solve(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/solve", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def stopped_counter(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    match = re.search(r'^ttc_engine_requests_stopped_total\{strategy="deepconf"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_online_stops_traces_in_the_engine_within_the_budget(client: httpx.Client) -> None:
    before = stopped_counter(client)
    result = solve(
        client,
        prompt=QUESTION,
        strategy="deepconf",
        params=AGGRESSIVE,
        sampling={"max_tokens": 96, "seed": 5},
        budget={"tokens": 900, "seconds": 120},
        return_candidates=True,
    )
    details, usage = result["details"], result["usage"]
    assert result["strategy"] == "deepconf" and details["mode"] == "online"
    assert usage["completion_tokens"] <= 900
    # every token the engine wrote is charged, the stopped traces' included
    assert (
        usage["completion_tokens"] == details["trace_tokens"] == sum(t["tokens"] for t in details["traces"])
    )
    stopped = [t for t in details["traces"] if t["finish_reason"] == "stopped"]
    assert stopped, details
    for trace in stopped:
        assert trace["phase"] == "online" and not trace["voted"] and trace["answer"] is None
        assert 8 <= trace["stopped_at"] == trace["tokens"] < 96  # a full window first, then cut mid-way
        assert trace["confidence"]["lowest_group"] < details["threshold"]
    assert details["traces_stopped"] == len(stopped) == usage["engine_requests_stopped"]
    assert details["tokens_saved_estimate"] > 0
    # one warm-up call, then one engine call per further trace
    assert usage["engine_requests"] == 1 + details["traces_drawn"] - 4
    # the engine's own counters: the stopped calls are counted, and none is left running in the engine
    assert stopped_counter(client) - before == len(stopped)
    metrics = client.get("/metrics").text
    assert re.search(r"^ttc_engine_requests_running 0\.0$", metrics, re.MULTILINE), metrics[:2000]


def test_same_answer_format_as_best_of_n(client: httpx.Client) -> None:
    common: dict[str, Any] = {
        "prompt": "What is 7 + 5? Answer with just the number.",
        "sampling": {"max_tokens": 24, "seed": 2},
        "return_candidates": True,
    }
    deepconf = solve(client, strategy="deepconf", params={"n": 6}, **common)
    best = solve(client, strategy="best_of_n", params={"n": 6}, **common)
    assert deepconf.keys() == best.keys()
    assert deepconf["usage"].keys() == best["usage"].keys()
    assert deepconf["candidates"][0].keys() == best["candidates"][0].keys()
    assert deepconf["answer"] is None or deepconf["answer"].lstrip("-").replace(".", "").isdigit()
    assert deepconf["answer"] in {c["answer"] for c in deepconf["candidates"]}
    assert deepconf["params"]["n"] == 6 and deepconf["params"]["mode"] == "online"
    assert deepconf["details"]["traces_drawn"] <= 6


def test_offline_filters_and_votes_by_confidence(client: httpx.Client) -> None:
    result = solve(
        client,
        prompt="What is 38 + 47? Answer with just the number.",
        strategy="deepconf",
        params={"mode": "offline", "n": 8, "keep_percent": 50, "metric": "tail"},
        sampling={"max_tokens": 24},
        return_candidates=True,
    )
    details = result["details"]
    assert details["traces_drawn"] == 8 and details["traces_stopped"] == 0
    assert result["usage"]["engine_requests"] == 1
    voted = [t for t in details["traces"] if t["voted"]]
    assert 1 <= len(voted) <= 8
    if not details["vote_fallback"]:
        assert all(t["confidence"]["tail"] >= details["threshold"] for t in voted)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"keep_percent": 0}, "params.keep_percent"),
        ({"mode": "sideways"}, "params.mode"),
        ({"top_logprobs": 50}, "params.top_logprobs"),
        ({"surprise": 1}, "params.surprise"),
    ],
)
def test_invalid_params_are_a_400_error_object(
    client: httpx.Client, params: dict[str, Any], param: str
) -> None:
    response = client.post(
        "/v1/solve", json={"prompt": "What is 1 + 1?", "strategy": "deepconf", "params": params}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_openai_chat_with_deepconf(client: httpx.Client) -> None:
    """Through the OpenAI route: the choices carry OpenAI finish reasons (a stopped trace is "length")."""
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": client.get("/v1/models").json()["data"][0]["id"],
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 96,
            "seed": 5,
            "n": 4,
            "ttc": {"strategy": "deepconf", "params": AGGRESSIVE, "budget": {"tokens": 900}},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert all(choice["finish_reason"] in {"stop", "length"} for choice in body["choices"])
    report = body["ttc"]
    assert report["strategy"] == "deepconf" and report["usage"]["completion_tokens"] <= 900
    assert report["usage"]["engine_requests_stopped"] == report["details"]["traces_stopped"]
