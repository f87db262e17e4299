"""/v1/solve through the real engine and a real HTTP server."""

import json
import time
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.engine

ADDITIONS = [(2, 3), (4, 1), (3, 3), (7, 2), (12, 5), (23, 45)]


def ask(a: int, b: int) -> str:
    return f"What is {a} + {b}? Answer with just the number."


def solve(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/solve", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_best_of_n_with_reference_verifier_answers_arithmetic(client: httpx.Client) -> None:
    """With a verifier that knows the answer, best-of-N finds it whenever any sample has it."""
    right = 0
    for a, b in ADDITIONS:
        result = solve(
            client,
            prompt=ask(a, b),
            strategy="best_of_n",
            verifier={"name": "reference", "answer": str(a + b)},
            params={"n": 16, "selection": "max"},
            sampling={"max_tokens": 48, "seed": 7},
            return_candidates=True,
        )
        assert result["params"]["n"] == 16 and len(result["candidates"]) == 16
        any_right = any(c["answer"] == str(a + b) for c in result["candidates"])
        assert (result["answer"] == str(a + b)) == any_right
        right += result["answer"] == str(a + b)
    assert right >= 4


def test_majority_vote_picks_the_most_common_answer(client: httpx.Client) -> None:
    result = solve(
        client,
        prompt=ask(2, 3),
        strategy="best_of_n",
        params={"n": 12},
        sampling={"max_tokens": 32},
        return_candidates=True,
    )
    votes: dict[str, int] = {}
    for candidate in result["candidates"]:
        if candidate["answer"] is not None:
            votes[candidate["answer"]] = votes.get(candidate["answer"], 0) + 1
    assert votes[result["answer"]] == max(votes.values())
    usage = result["usage"]
    assert usage["completion_tokens"] == sum(c["tokens"] for c in result["candidates"])
    assert (
        usage["engine_requests"] == 1
        and usage["eflops"] > 0
        and usage["peak_kv_tokens"] > usage["prompt_tokens"]
    )


def test_judge_verifier_scores_through_the_engine(client: httpx.Client) -> None:
    result = solve(
        client,
        messages=[{"role": "user", "content": ask(3, 4)}],
        strategy="best_of_n",
        verifier={"name": "judge"},
        params={"n": 4, "selection": "weighted"},
        sampling={"max_tokens": 32},
        return_candidates=True,
    )
    assert all(0.0 <= c["score"] <= 1.0 for c in result["candidates"])
    assert result["usage"]["verifier_requests"] == 4


@pytest.mark.parametrize("verifier", [None, {"name": "judge"}])
def test_token_budget_is_a_hard_cap(client: httpx.Client, verifier: dict[str, str] | None) -> None:
    body: dict[str, Any] = {
        "prompt": ask(12, 5),
        "strategy": "best_of_n",
        "budget": {"tokens": 100},
        "sampling": {"max_tokens": 40},
    }
    if verifier:
        body["verifier"] = verifier
    result = solve(client, **body, return_candidates=True)
    assert 0 < result["usage"]["completion_tokens"] <= 100
    assert result["budget"]["requested"]["tokens"] == 100


def test_budget_alone_decides_n(client: httpx.Client) -> None:
    result = solve(
        client, prompt=ask(2, 3), strategy="best_of_n", budget={"tokens": 320}, sampling={"max_tokens": 32}
    )
    assert result["params"]["n"] == 10


def test_eflops_budget_is_a_hard_cap(client: httpx.Client) -> None:
    reference = solve(
        client, prompt=ask(2, 3), strategy="best_of_n", params={"n": 1}, sampling={"max_tokens": 32}
    )
    cap = reference["usage"]["eflops"] * 3
    result = solve(
        client, prompt=ask(2, 3), strategy="best_of_n", budget={"eflops": cap}, sampling={"max_tokens": 32}
    )
    assert 0 < result["usage"]["eflops"] <= cap


def test_seconds_budget_returns_in_time_with_the_best_so_far(client: httpx.Client) -> None:
    started = time.monotonic()
    result = solve(
        client,
        prompt="Write a very long story about a dragon.",
        strategy="best_of_n",
        budget={"seconds": 2.0},
        params={"n": 32},
        sampling={"max_tokens": 1500, "temperature": 1.0},
        answer={"type": "text"},
        return_candidates=True,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 6.0
    assert result["usage"]["seconds"] < 3.0
    assert any(c["finish_reason"] == "abort" for c in result["candidates"])
    assert result["text"]


def test_unaffordable_budget_is_a_clear_400(client: httpx.Client) -> None:
    response = client.post("/v1/solve", json={"prompt": ask(2, 3), "budget": {"eflops": 1.0}})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "budget_exhausted"


def test_streamed_solve_sends_progress_then_result(client: httpx.Client) -> None:
    body = {
        "prompt": ask(2, 3),
        "strategy": "best_of_n",
        "params": {"n": 8, "adaptive": True, "round_size": 2},
        "stream": True,
    }
    events = []
    with client.stream("POST", "/v1/solve", json=body) as response:
        assert response.status_code == 200
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event:
                events.append((event, json.loads(line[5:])))
                event = None
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result" and "progress" in kinds
    assert events[-1][1]["usage"]["completion_tokens"] > 0


def test_listings_and_ops(client: httpx.Client) -> None:
    assert {s["id"] for s in client.get("/v1/strategies").json()["data"]} >= {"best_of_n", "none"}
    assert {v["id"] for v in client.get("/v1/verifiers").json()["data"]} >= {"judge", "reference"}
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert "ttc_solve_requests_total" in metrics and "ttc_engine_requests_running" in metrics
