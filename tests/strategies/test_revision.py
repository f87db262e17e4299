"""Sequential revision: planning and stopping (pure logic), then chains through the real engine and HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from strategies.base import Candidate
from strategies.revision import Attempt, _stable, feedback


def attempts(*answers: str | None) -> list[Attempt]:
    return [Attempt(Candidate(text=str(a), answer=a)) for a in answers]


def test_a_chain_is_stable_after_k_unchanged_revisions() -> None:
    assert _stable(attempts("3", "5", "5", "5"), 2)
    assert not _stable(attempts("5", "5"), 2)
    assert not _stable(attempts(None, None, None), 2)


def test_feedback_carries_the_verifier_verdict() -> None:
    assert "0.20" in feedback(1, 0.2) and "probably wrong" in feedback(1, 0.2)
    assert "Check it" in feedback(2, None)


@pytest.mark.engine
def test_revision_keeps_every_attempt_and_reuses_the_prefix(client: httpx.Client) -> None:
    body: dict[str, Any] = {
        "prompt": "What is 23 + 45? Answer with just the number.",
        "strategy": "revision",
        "params": {"chains": 2, "depth": 3, "stable_k": 5},
        "verifier": {"name": "reference", "answer": "68"},
        "sampling": {"max_tokens": 40, "seed": 3},
        "return_candidates": True,
    }
    result = client.post("/v1/solve", json=body).json()
    chains = result["details"]["chains"]
    assert len(chains) == 2 and all(1 <= len(chain) <= 3 for chain in chains)
    assert len(result["candidates"]) == sum(len(chain) for chain in chains)
    # A chain stops as soon as the (reference) verifier is confident, i.e. at its first right attempt.
    for chain in chains:
        assert "68" not in chain[:-1]
    right = any("68" in chain for chain in chains)
    assert (result["answer"] == "68") == right
    # Every revision prompt extends the previous one: the engine serves the shared prefix from its cache.
    assert result["usage"]["cached_prompt_tokens"] > 0
    assert result["usage"]["engine_requests"] == len(result["candidates"])


@pytest.mark.engine
def test_revision_plans_chains_and_depth_from_the_budget(client: httpx.Client) -> None:
    body: dict[str, Any] = {
        "prompt": "What is 4 + 1? Answer with just the number.",
        "strategy": "revision",
        "budget": {"tokens": 160},
        "sampling": {"max_tokens": 32},
    }
    result = client.post("/v1/solve", json=body).json()
    params = result["params"]
    assert params["chains"] * params["depth"] <= 5 and params["depth"] >= 2
    assert result["usage"]["completion_tokens"] <= 160
