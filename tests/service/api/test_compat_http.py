"""Defects that outside clients found (issue 11, section 4), each pinned by a regression test through HTTP."""

import json
import re
import time
from typing import Any

import httpx
import pytest
from openai import NotFoundError, OpenAI

pytestmark = pytest.mark.engine

QUESTION = [{"role": "user", "content": "What is 2 + 3? Answer with just the number."}]


def running_engine_requests(client: httpx.Client) -> float:
    match = re.search(r"^ttc_engine_requests_running (\S+)$", client.get("/metrics").text, re.MULTILINE)
    assert match, "ttc_engine_requests_running missing from /metrics"
    return float(match.group(1))


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


def test_auto_with_a_tiny_budget_on_an_unseen_prompt_is_not_a_500(client: httpx.Client) -> None:
    body = {
        "prompt": f"How many moons does Mars have? ref {time.time_ns()}",
        "strategy": "auto",
        "budget": {"tokens": 2},
        "sampling": {"max_tokens": 1},
    }
    response = client.post("/v1/solve", json=body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["type"] == "budget_exhausted"
    else:
        assert response.json()["usage"]["completion_tokens"] <= 2


RAW_SURROGATE_BODIES = [
    ("chat content", "/v1/chat/completions", '{"messages":[{"role":"user","content":"hi \\ud800"}],"max_tokens":4}'),
    ("chat stop", "/v1/chat/completions", '{"messages":[{"role":"user","content":"hi"}],"stop":["\\ud800"],"max_tokens":4}'),
    ("completion prompt", "/v1/completions", '{"prompt":"a\\udc00b","max_tokens":4}'),
    ("completion stop", "/v1/completions", '{"prompt":"ab","stop":"\\ud800","max_tokens":4}'),
    ("solve prompt", "/v1/solve", '{"prompt":"x \\ud800","strategy":"none","sampling":{"max_tokens":4}}'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "path", "raw"), RAW_SURROGATE_BODIES, ids=[c for c, _, _ in RAW_SURROGATE_BODIES]
)
def test_a_lone_surrogate_is_a_400_and_leaves_no_engine_request_behind(
    client: httpx.Client, case: str, path: str, raw: str
) -> None:
    before = running_engine_requests(client)
    response = client.post(path, content=raw.encode(), headers={"content-type": "application/json"})
    error = assert_error(response, 400)
    assert "surrogate" in error["message"]
    assert running_engine_requests(client) <= before
    assert (
        client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 2}).status_code == 200
    )


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_greedy_with_n_above_1_is_refused_up_front(client: httpx.Client, path: str, stream: bool) -> None:
    body: dict[str, Any] = {"temperature": 0, "n": 2, "max_tokens": 4, "stream": stream}
    body.update({"prompt": "Once upon"} if path == "/v1/completions" else {"messages": QUESTION})
    error = assert_error(client.post(path, json=body), 400)
    assert error["param"] == "n" and "greedy" in error["message"]


def test_ttc_reports_the_chosen_candidates_finish_reason(client: httpx.Client) -> None:
    body = {
        "messages": [{"role": "user", "content": "Write a long story about a dragon and a knight."}],
        "max_tokens": 4,
        "ttc": {"strategy": "none", "return_candidates": True},
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["ttc"]["candidates"][0]["finish_reason"] == "length"
    assert payload["choices"][0]["finish_reason"] == "length"
    stream = client.post("/v1/chat/completions", json={**body, "stream": True})
    finishes = [
        choice["finish_reason"]
        for line in stream.text.splitlines()
        if line.startswith("data: {")
        for choice in json.loads(line[6:])["choices"]
        if choice.get("finish_reason")
    ]
    assert finishes == ["length"]


def test_ttc_says_when_fewer_than_n_choices_come_back(client: httpx.Client) -> None:
    body = {"messages": QUESTION, "max_tokens": 8, "n": 3, "ttc": {"strategy": "none"}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert len(payload["choices"]) == 1
    assert payload["ttc"]["choices_returned"] == 1
    assert any("n=3" in warning for warning in payload["ttc"]["warnings"])


def test_a_wrong_model_is_a_404_model_not_found(client: httpx.Client, service_url: str) -> None:
    for path, body in [
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": QUESTION}),
        ("/v1/completions", {"model": "gpt-4o", "prompt": "hi"}),
    ]:
        error = assert_error(client.post(path, json=body), 404)
        assert error["code"] == "model_not_found" and error["param"] == "model"
    openai = OpenAI(base_url=f"{service_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(NotFoundError):
        openai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_plain_streaming_sends_the_role_together_with_the_first_token(client: httpx.Client) -> None:
    body = {"messages": QUESTION, "max_tokens": 8, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    first = json.loads(lines[0][6:])["choices"][0]
    assert first["delta"]["role"] == "assistant"
    assert first["delta"]["content"] or first["finish_reason"], "the role chunk came before any token"


def test_head_on_health_probes_and_allow_on_405(client: httpx.Client) -> None:
    assert client.head("/healthz").status_code == 200
    assert client.head("/readyz").status_code == 200
    response = client.delete("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert_error(client.get("/v1/chat/completions"), 405)
