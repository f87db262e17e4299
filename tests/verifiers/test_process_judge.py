"""The process judge and the calculator through the real engine and HTTP (`/v1/solve`)."""

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.engine

QUESTION = "What is 12 + 7? Write the calculation as an equation, then give the answer."


def solve(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/solve", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_process_judge_scores_the_latest_step_of_each_candidate(client: httpx.Client) -> None:
    result = solve(
        client,
        prompt=QUESTION,
        strategy="best_of_n",
        verifier={"name": "process_judge"},
        params={"n": 3, "selection": "max"},
        sampling={"max_tokens": 32, "seed": 3},
        return_candidates=True,
    )
    scores = [candidate["score"] for candidate in result["candidates"]]
    assert len(scores) == 3 and all(0.0 <= score <= 1.0 for score in scores)
    assert result["usage"]["verifier_requests"] == 3  # aggregate "last": one judge call per candidate


def test_process_judge_with_min_judges_every_step(client: httpx.Client) -> None:
    result = solve(
        client,
        prompt=QUESTION,
        strategy="best_of_n",
        verifier={"name": "process_judge", "aggregate": "min", "delimiter": "\n"},
        params={"n": 2, "selection": "max"},
        sampling={"max_tokens": 48, "seed": 5},
        return_candidates=True,
    )
    steps = sum(
        len([line for line in candidate["text"].split("\n") if line.strip()])
        for candidate in result["candidates"]
    )
    assert result["usage"]["verifier_requests"] == steps
    assert all(0.0 <= candidate["score"] <= 1.0 for candidate in result["candidates"])


def test_calculator_scores_engine_samples_by_their_arithmetic(client: httpx.Client) -> None:
    result = solve(
        client,
        prompt=QUESTION,
        strategy="best_of_n",
        verifier={"name": "calculator", "aggregate": "min"},
        params={"n": 6, "selection": "max"},
        sampling={"max_tokens": 32, "seed": 11},
        return_candidates=True,
    )
    assert result["usage"]["verifier_requests"] == 0  # no engine calls: it computes
    from verifiers.calculator import CalculatorOptions, CalculatorVerifier

    assert any(candidate["score"] != 0.5 for candidate in result["candidates"])  # some arithmetic checked
    local = CalculatorVerifier(CalculatorOptions(aggregate="min"))
    for candidate in result["candidates"]:
        assert candidate["score"] == pytest.approx(local.candidate_score(candidate["text"]))
        assert candidate["score"] in (0.05, 0.5, 0.9)


@pytest.mark.parametrize(
    ("verifier", "param", "words"),
    [
        ({"name": "calculator", "aggregate": "mean"}, "verifier.aggregate", "'last', 'min' or 'product'"),
        ({"name": "calculator", "wrong_score": 0.7}, "verifier", "wrong_score <= neutral_score"),
        ({"name": "process_judge", "max_solution_tokens": 4}, "verifier.max_solution_tokens", "16"),
        ({"name": "process_judge", "temperature": 1}, "verifier.temperature", "has no option"),
        ({"name": "reward_model"}, "verifier.model", "required"),
        (
            {"name": "reward_model", "model": "nobody-registered-this"},
            "verifier.model",
            "registered ones are",
        ),
        ({"name": "reward_model", "url": "http://x", "model": "prm"}, "verifier.url", "has no option 'url'"),
        ({"name": "reward_model", "model": "prm", "mode": "orm"}, "verifier.mode", "has no option 'mode'"),
    ],
)
def test_bad_process_verifier_options_are_a_clear_400(
    client: httpx.Client, verifier: dict[str, Any], param: str, words: str
) -> None:
    response = client.post(
        "/v1/solve", json={"prompt": "1 + 1?", "strategy": "best_of_n", "verifier": verifier}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_the_process_verifiers_are_listed(client: httpx.Client) -> None:
    names = {row["id"] for row in client.get("/v1/verifiers").json()["data"]}
    assert {"process_judge", "calculator", "reward_model"} <= names
