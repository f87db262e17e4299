"""The empty-answer rule (strategies.base.settle_empty): a run that ends with no extractable answer abstains and
says why, or returns the best candidate that has an answer; never answer null, text "" and abstained false."""

from __future__ import annotations

import httpx
import pytest

from strategies import answer_default, sampling_defaults
from strategies.base import Candidate, Result, settle_empty


def result(text: str, answer: str | None, candidates: list[Candidate]) -> Result:
    return Result(text=text, answer=answer, candidates=candidates, params={})


def test_empty_final_with_no_candidate_abstains_with_a_reason() -> None:
    settled = settle_empty(result("", None, [Candidate("", None)]))
    assert settled.abstained and settled.answer is None
    assert "empty" in settled.details["abstain_reason"]


def test_unreadable_final_abstains_and_points_at_the_answer_type() -> None:
    settled = settle_empty(result("no digits here", None, []))
    assert settled.abstained and "answer.type" in settled.details["abstain_reason"]


def test_empty_final_returns_the_best_candidate_that_has_an_answer() -> None:
    candidates = [
        Candidate("", None),
        Candidate("It is 7.", "7", votes=1, score=0.9),
        Candidate("It is 5.", "5", votes=2, score=0.1),
    ]
    settled = settle_empty(result("", None, candidates))
    assert not settled.abstained and settled.answer == "5" and settled.text == "It is 5."
    assert "empty_answer" in settled.details


def test_answers_and_abstentions_pass_untouched() -> None:
    answered = result("7", "7", [])
    assert settle_empty(answered) is answered and not answered.abstained and not answered.details
    abstained = Result(text="", answer=None, candidates=[], params={}, abstained=True)
    assert settle_empty(abstained).details == {}


def test_rag_strategies_default_to_greedy_short_text_answers() -> None:
    for name in ("rag", "drag", "iterdrag"):
        assert sampling_defaults(name, True) == {"temperature": 0.0, "max_tokens": 32}
        assert answer_default(name, True) == "text"
    assert sampling_defaults("auto", True) == sampling_defaults("rag", True)
    assert sampling_defaults("auto", False) == {} and answer_default("auto", False) is None
    assert sampling_defaults("best_of_n", False) == {}


@pytest.mark.engine
def test_no_extractable_answer_is_an_abstention_through_http(client: httpx.Client) -> None:
    """The real engine's text cannot match this pattern, so there is no answer: the response must say so."""
    response = client.post(
        "/v1/solve",
        json={
            "prompt": "Say hello.",
            "strategy": "none",
            "answer": {"type": "regex", "pattern": "QQZXQ(\\d{40})"},
            "sampling": {"max_tokens": 8, "temperature": 0},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] is None
    assert body["abstained"] is True
    assert body["details"]["abstain_reason"].startswith("no extractable answer")
