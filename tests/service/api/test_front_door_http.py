"""Issue 10, hostile callers through the real service: every response carries X-Request-Id (the caller's or a
new one) and error bodies name it; /metrics counts every route by method, template and status; a body over
TTC_MAX_BODY_BYTES is a 413 before it is parsed (declared or chunked); hostile patterns and model output
are answered within a second while a small request still completes."""

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.engine

SMALL_CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}


def counter(client: httpx.Client, method: str, route: str, code: int) -> float:
    wanted = f'ttc_http_requests_total{{code="{code}",method="{method}",route="{route}"}}'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


def test_the_callers_request_id_is_echoed_and_a_missing_one_is_made(client: httpx.Client) -> None:
    given = client.get("/healthz", headers={"X-Request-Id": "trace-abc.123"})
    assert given.headers["x-request-id"] == "trace-abc.123"
    made = [client.get("/healthz").headers["x-request-id"] for _ in range(2)]
    assert all(re.fullmatch(r"req-[0-9a-f]{32}", item) for item in made) and made[0] != made[1]
    odd = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert odd.headers["x-request-id"].startswith("req-")  # not copied into our logs as it is


def test_error_bodies_name_the_request_id(client: httpx.Client) -> None:
    response = client.post(
        "/v1/solve", json={"prompt": "hi", "strategy": "magic"}, headers={"X-Request-Id": "e-1"}
    )
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "e-1" and response.json()["request_id"] == "e-1"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["request_id"] == missing.headers["x-request-id"]


def test_metrics_count_a_plain_chat_request_by_route_and_status(client: httpx.Client) -> None:
    before = counter(client, "POST", "/v1/chat/completions", 200)
    bad_before = counter(client, "POST", "/v1/chat/completions", 400)
    assert client.post("/v1/chat/completions", json=SMALL_CHAT).status_code == 200
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 400
    assert counter(client, "POST", "/v1/chat/completions", 200) == before + 1
    assert counter(client, "POST", "/v1/chat/completions", 400) == bad_before + 1
    client.get("/v1/corpora/no-such-corpus-for-metrics")
    text = client.get("/metrics").text
    assert 'route="/v1/corpora/{name}"' in text and "no-such-corpus-for-metrics" not in text


def chunks(size: int) -> Iterator[bytes]:
    sent = 0
    yield b'{"messages": [{"role": "user", "content": "'
    while sent < size:
        yield b"a" * 65536
        sent += 65536
    yield b'"}]}'


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_413_at_once_while_a_small_request_completes(service_url: str, chunked: bool) -> None:
    size = 5 * 1024 * 1024  # over the default TTC_MAX_BODY_BYTES (4 MiB)
    with httpx.Client(base_url=service_url, timeout=60) as http, ThreadPoolExecutor(2) as pool:
        small = pool.submit(http.post, "/v1/chat/completions", json=SMALL_CHAT)
        started = time.monotonic()
        content = chunks(size) if chunked else b"x" * size
        response = http.post(
            "/v1/chat/completions",
            content=content,
            headers={"Content-Type": "application/json", "X-Request-Id": "huge-1"},
        )
        assert time.monotonic() - started < 1.0
        assert response.status_code == 413, response.text
        assert response.headers["x-request-id"] == "huge-1" and response.json()["request_id"] == "huge-1"
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "TTC_MAX_BODY_BYTES" in response.json()["error"]["message"]
        assert small.result().status_code == 200


def test_a_catastrophic_pattern_over_real_model_output_answers_within_a_second(client: httpx.Client) -> None:
    """Any English sentence makes `([\\w\\s,]|[a-z\\s,])+[.!?]{5}$` backtrack 2^(run length) times before it
    fails (Python's re takes hours on the model's 48 tokens); here every candidate has one pattern allowance."""
    body = {
        "prompt": "Describe the sea in two sentences.",
        "strategy": "best_of_n",
        "params": {"n": 4},
        "sampling": {"max_tokens": 48, "temperature": 0.7, "seed": 1},
        "answer": {"type": "text"},
    }
    plain = client.post("/v1/solve", json=body)
    assert plain.status_code == 200
    hostile_body = {**body, "answer": {"type": "regex", "pattern": r"([\w\s,]|[a-z\s,])+[.!?]{5}$"}}
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        hostile = pool.submit(client.post, "/v1/solve", json=hostile_body)
        small = pool.submit(client.post, "/v1/chat/completions", json=SMALL_CHAT)
        assert hostile.result().status_code == 200, hostile.result().text
        elapsed = time.monotonic() - started
        assert small.result().status_code == 200
    # the same engine work as the plain request's, plus at most the pattern's allowance (0.5 s)
    assert elapsed < plain.json()["usage"]["seconds"] + 2.0


@pytest.mark.parametrize(
    "reference", ["7" * 5000, "(" * 100_000 + "1" + ")" * 100_000], ids=["5000-digits", "1e5-parentheses"]
)
def test_hostile_reference_answers_get_a_normal_answer(client: httpx.Client, reference: str) -> None:
    body = {
        "prompt": "What is 2 + 3?",
        "strategy": "best_of_n",
        "params": {"n": 2},
        "sampling": {"max_tokens": 16, "temperature": 0.7, "seed": 2},
        "verifier": {"name": "reference", "answer": reference},
    }
    response = client.post("/v1/solve", json=body)
    assert response.status_code == 200, response.text
    calculator = client.post("/v1/solve", json={**body, "verifier": {"name": "calculator"}})
    assert calculator.status_code == 200, calculator.text


def test_a_prompt_too_long_for_any_tokenisation_is_refused_before_tokenising(client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "word " * 600_000}], "max_tokens": 4}  # 3 MB
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        long = pool.submit(client.post, "/v1/chat/completions", json=body)
        small = pool.submit(client.post, "/v1/chat/completions", json=SMALL_CHAT)
        response = long.result()
        assert response.status_code == 400 and "characters" in response.json()["error"]["message"]
        assert time.monotonic() - started < 1.0
        assert small.result().status_code == 200
