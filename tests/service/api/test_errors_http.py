"""Malformed requests get a 400 with an OpenAI error object, and the server keeps answering."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.engine

QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]

BAD_SOLVE_BODIES: list[tuple[str, Any]] = [
    ("missing messages", {"strategy": "best_of_n"}),
    ("both prompt and messages", {"prompt": "hi", "messages": QUESTION}),
    ("empty messages", {"messages": []}),
    ("missing role", {"messages": [{"content": "hi"}]}),
    ("negative token budget", {"prompt": "hi", "budget": {"tokens": -5}}),
    ("zero token budget", {"prompt": "hi", "budget": {"tokens": 0}}),
    ("huge token budget", {"prompt": "hi", "budget": {"tokens": 10**12}}),
    ("huge seconds budget", {"prompt": "hi", "budget": {"seconds": 10**9}}),
    ("negative eflops", {"prompt": "hi", "budget": {"eflops": -1}}),
    ("unknown budget axis", {"prompt": "hi", "budget": {"dollars": 3}}),
    ("wrong type of n", {"prompt": "hi", "params": {"n": "many"}}),
    ("wrong type of prompt", {"prompt": 12}),
    ("unknown strategy", {"prompt": "hi", "strategy": "magic"}),
    ("unknown verifier", {"prompt": "hi", "verifier": {"name": "oracle"}}),
    ("reference without answer", {"prompt": "hi", "verifier": {"name": "reference"}}),
    ("weighted without verifier", {"prompt": "hi", "params": {"selection": "weighted"}}),
    ("unknown param", {"prompt": "hi", "params": {"beams": 3}}),
    ("temperature < 0", {"prompt": "hi", "sampling": {"temperature": -0.5}}),
    ("top_p > 1", {"prompt": "hi", "sampling": {"top_p": 1.5}}),
    ("max_tokens 0", {"prompt": "hi", "sampling": {"max_tokens": 0}}),
    ("max_tokens beyond the context", {"prompt": "hi", "sampling": {"max_tokens": 30000}}),
    ("regex without pattern", {"prompt": "hi", "answer": {"type": "regex"}}),
    ("body is a list", [1, 2, 3]),
]


def assert_openai_error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return dict(error)


@pytest.mark.parametrize(("case", "body"), BAD_SOLVE_BODIES, ids=[case for case, _ in BAD_SOLVE_BODIES])
def test_bad_solve_requests_are_400(client: httpx.Client, case: str, body: Any) -> None:
    assert_openai_error(client.post("/v1/solve", json=body))


def test_errors_name_what_exists(client: httpx.Client) -> None:
    error = assert_openai_error(client.post("/v1/solve", json={"prompt": "hi", "strategy": "magic"}))
    assert "best_of_n" in error["message"] and error["param"] == "strategy"
    error = assert_openai_error(client.post("/v1/solve", json={"prompt": "hi", "sampling": {"top_p": 2}}))
    assert error["param"] == "sampling.top_p"


def test_non_json_and_wrong_content_type(client: httpx.Client) -> None:
    assert_openai_error(
        client.post("/v1/solve", content=b"{not json", headers={"content-type": "application/json"})
    )
    assert_openai_error(
        client.post("/v1/solve", content=b"prompt=hi", headers={"content-type": "text/plain"})
    )
    assert_openai_error(
        client.post("/v1/chat/completions", content=b"", headers={"content-type": "application/json"})
    )


BAD_CHAT_BODIES: list[dict[str, Any]] = [
    {"messages": []},
    {"messages": [{"content": "hi"}]},
    {"messages": QUESTION, "max_tokens": 0},
    {"messages": QUESTION, "temperature": -1},
    {"messages": QUESTION, "top_p": 1.5},
    {"messages": QUESTION, "max_tokens": 100000},
    {"messages": QUESTION, "max_tokens": 3000},
    {"messages": QUESTION, "n": 0},
    {"messages": QUESTION, "logprobs": True, "top_logprobs": 50},
    {"messages": QUESTION, "ttc": {"strategy": "nope"}},
]


@pytest.mark.parametrize("body", BAD_CHAT_BODIES)
def test_bad_chat_requests_are_400(client: httpx.Client, body: dict[str, Any]) -> None:
    assert_openai_error(client.post("/v1/chat/completions", json=body))


def test_bad_completion_requests_are_400(client: httpx.Client) -> None:
    for body in (
        {"prompt": ""},
        {"prompt": ["a", "b"]},
        {"prompt": "hi", "logprobs": 99},
        {"prompt": "hi", "max_tokens": 5000},
    ):
        assert_openai_error(client.post("/v1/completions", json=body))


def test_unknown_route_is_an_error_object(client: httpx.Client) -> None:
    assert_openai_error(client.get("/v1/nothing"), status=404)


def test_floods_of_bad_requests_leave_the_server_working(service_url: str) -> None:
    """100 invalid requests, then 50 concurrent ones mixed 25/75 with valid ones; all answered correctly."""
    with httpx.Client(base_url=service_url, timeout=120.0) as http:
        for _ in range(100):
            assert http.post("/v1/solve", json={"prompt": 5}).status_code == 400

        def one(index: int) -> int:
            if index % 4 == 0:
                return http.post("/v1/chat/completions", json={"messages": [], "max_tokens": 1}).status_code
            body = {"messages": QUESTION, "max_tokens": 4}
            return http.post("/v1/chat/completions", json=body).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(one, range(50)))
        assert codes.count(400) == 13 and codes.count(200) == 37
        assert http.get("/readyz").status_code == 200
