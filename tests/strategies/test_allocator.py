"""`auto` through the real engine and HTTP: the default strategy, its allocation object, spend within the cap,
verifier calibration stored in Redis and listed, and the engine's runtime model."""

import json
import uuid
from typing import Any

import httpx
import pytest
import redis

pytestmark = pytest.mark.engine

QUESTION = "What is 3 + 4? Answer with just the number."


def solve(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/solve", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_budget_alone_runs_auto_and_explains_itself(client: httpx.Client) -> None:
    result = solve(
        client, prompt=QUESTION, budget={"tokens": 400}, sampling={"max_tokens": 24}, return_candidates=True
    )
    assert result["strategy"] == "auto"
    allocation = result["details"]["allocation"]
    chosen = allocation["chosen"]
    assert chosen["strategy"] in {"best_of_n", "abstain"} | {
        s["id"] for s in client.get("/v1/strategies").json()["data"]
    }
    assert 0.0 <= chosen["predicted_accuracy"] <= 1.0 and chosen["predicted_eflops"] >= 0
    assert 0.0 <= allocation["difficulty"]["p"] <= 1.0 and allocation["difficulty"]["bin"] in range(5)
    assert (
        allocation["reason"].endswith(".")
        and allocation["plans_considered"] >= allocation["plans_within_budget"] >= 1
    )
    for plan in allocation["runners_up"]:
        assert (
            plan["expected_utility"] <= chosen["expected_utility"] + 1e-9
            or plan["predicted_eflops"] >= chosen["predicted_eflops"]
        )
    cost = allocation["cost"]
    assert cost["spent_eflops"] == pytest.approx(result["usage"]["eflops"])
    assert cost["predicted_eflops"] > 0 and cost["spent_seconds"] > 0
    assert (
        result["usage"]["completion_tokens"] <= 400
        and cost["spent_tokens"] == result["usage"]["completion_tokens"]
    )
    # The probe's samples joined the final vote.
    probe = allocation["difficulty"]["probe_samples"]
    assert len(result["candidates"]) >= probe
    if chosen["strategy"] == "best_of_n":
        assert len(result["candidates"]) <= chosen["params"]["n"]
        assert result["params"]["n"] == chosen["params"]["n"]


@pytest.mark.parametrize("memory", ["fresh", "warm"])
def test_eflops_cap_is_never_exceeded(client: httpx.Client, memory: str) -> None:
    """A cap below one full-length sample's worst case still gets an answer (the probe shortens its samples),
    also when similar past prompts would otherwise let auto skip the probe."""
    greedy = {"max_tokens": 24, "temperature": 0.0}
    # A prompt the engine has not seen: a prefix-cache hit would make this sample, and so the cap, cheaper than
    # the uncached worst case auto plans with. Its greedy answer must be short, so the cap is far below 24
    # tokens' worst case; which case tags give one depends on the CPU's dtype (in bf16 some run to 24 tokens).
    for _ in range(8):
        question = f"{QUESTION} (case {uuid.uuid4().hex[:8]})"
        one = solve(client, prompt=question, strategy="best_of_n", params={"n": 1}, sampling=greedy)
        if one["usage"]["completion_tokens"] <= 8:
            break
    assert one["usage"]["completion_tokens"] <= 8, "no case tag of eight gave a short greedy answer"
    cap = one["usage"]["eflops"] * 2  # about 16 tokens: above the shortest probe, below 24 tokens
    params = {"memory": f"test-{uuid.uuid4().hex[:8]}"}
    if memory == "warm":
        for _ in range(3):
            solve(client, prompt=question, params=params, sampling={"max_tokens": 24})
    result = solve(
        client, prompt=question, budget={"eflops": cap}, params=params, sampling={"max_tokens": 24}
    )
    assert 0 < result["usage"]["eflops"] <= cap
    allocation = result["details"]["allocation"]
    assert allocation["cost"]["budget_eflops"] == cap
    assert allocation["difficulty"]["probe_samples"] >= 1


def test_uncalibrated_verifier_says_so_and_penalty_is_reported(client: httpx.Client) -> None:
    family = f"never-calibrated-{uuid.uuid4().hex[:8]}"
    result = solve(
        client,
        prompt=QUESTION,
        budget={"tokens": 300},
        verifier={"name": "judge"},
        params={"family": family, "false_positive_penalty": 1.0},
        sampling={"max_tokens": 24},
    )
    allocation = result["details"]["allocation"]
    verifier = allocation["verifier"]
    assert verifier["calibration"] == "default" and "not calibrated" in verifier["note"]
    c, s = verifier["completeness"], verifier["soundness"]
    assert 0.0 <= verifier["ceiling"] <= 1.0 and (c, s) == (0.8, 0.5)
    assert allocation["false_positive_penalty"] == 1.0
    if allocation["chosen"]["strategy"] == "abstain":
        assert result["abstained"] and result["answer"] is None


def test_calibrate_stores_c_and_s_in_redis_and_lists_them(client: httpx.Client) -> None:
    family = f"test-{uuid.uuid4().hex[:8]}"
    body = {
        "family": family,
        "examples": [
            {"question": "What is 2 + 2? Answer with just the number.", "answer": "4"},
            {"question": "What is 5 + 3? Answer with just the number.", "answer": "8"},
        ],
        "samples_per_question": 2,
        "sampling": {"max_tokens": 16},
    }
    response = client.post("/v1/verifiers/judge/calibrate", json=body)
    assert response.status_code == 200, response.text
    measured = response.json()
    assert measured["source"] == "measured" and measured["correct_examples"] + measured["wrong_examples"] == 4
    assert 0 < measured["completeness"] < 1 and 0 < measured["soundness"] < 1
    stored = json.loads(
        redis.Redis.from_url("redis://127.0.0.1:6379/0").get(f"ttc:verifier_calibration:judge:{family}")
        or b"{}"
    )
    assert stored["completeness"] == measured["completeness"] and stored["soundness"] == measured["soundness"]
    listing = {v["id"]: v for v in client.get("/v1/verifiers").json()["data"]}
    assert any(item["family"] == family for item in listing["judge"]["calibrations"])
    # auto uses it for that family.
    result = solve(
        client,
        prompt=QUESTION,
        budget={"tokens": 200},
        verifier={"name": "judge"},
        params={"family": family},
        sampling={"max_tokens": 16},
    )
    verifier = result["details"]["allocation"]["verifier"]
    assert verifier["calibration"] == "measured" and verifier["completeness"] == measured["completeness"]


def test_unknown_verifier_calibration_is_a_400(client: httpx.Client) -> None:
    response = client.post(
        "/v1/verifiers/magic/calibrate", json={"examples": [{"question": "q", "answer": "1"}]}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "name"


def test_engine_runtime_model_and_allocator_view(client: httpx.Client) -> None:
    response = client.post(
        "/v1/allocator/calibrate-engine", json={"batch_sizes": [1, 4], "max_tokens": [8, 16]}
    )
    assert response.status_code == 200, response.text
    model = response.json()["seconds_model"]
    assert model["observations"] >= 4 and model["fitted"] is True and model["per_token"] >= 0
    view = client.get("/v1/allocator").json()
    assert view["seconds_model"]["fitted"] is True and view["model_shape"]["layers"] > 0
    assert view["hardware"]["intensity"] > 0


def test_calibrations_run_under_a_budget_capped_by_the_settings(client: httpx.Client) -> None:
    body = {"batch_sizes": [1, 4], "max_tokens": [8, 16], "budget": {"tokens": 40}}
    response = client.post("/v1/allocator/calibrate-engine", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    # (1 x 8) and (4 x 8) fit in 40 tokens; the sweep stops before a call it cannot pay in full
    assert [call[1] for call in result["calls"]] == [1, 4] and result["usage"]["completion_tokens"] <= 40
    too_much = client.post("/v1/allocator/calibrate-engine", json={"budget": {"tokens": 10**6}})
    assert too_much.status_code == 400 and too_much.json()["error"]["param"] == "budget.tokens"
    nothing = client.post(
        "/v1/allocator/calibrate-engine", json={"max_tokens": [64], "budget": {"tokens": 10}}
    )
    assert nothing.status_code == 400 and nothing.json()["error"]["type"] == "budget_exhausted"
    examples = [
        {"question": f"What is {i} + {i}? Answer with just the number.", "answer": str(2 * i)}
        for i in range(6)
    ]
    verifier_body = {
        "family": f"test-{uuid.uuid4().hex[:8]}",
        "examples": examples,
        "samples_per_question": 2,
        "sampling": {"max_tokens": 16},
        "budget": {"tokens": 48},
    }
    measured = client.post("/v1/verifiers/reference/calibrate", json=verifier_body)
    assert measured.status_code == 200, measured.text
    seen = measured.json()["correct_examples"] + measured.json()["wrong_examples"]
    assert 1 <= seen < 12  # not all 6 x 2 candidates (16 tokens each): 48 tokens stopped it


def test_memory_of_past_prompts_gives_a_prior_and_then_skips_the_probe(client: httpx.Client) -> None:
    """Probed requests remember their estimate of p in Redis; once enough similar prompts are known, the
    next one gets its difficulty from them and draws no probe."""
    memory = f"test-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {
        "prompt": QUESTION,
        "budget": {"tokens": 200},
        "sampling": {"max_tokens": 16},
        "params": {"memory": memory, "probe_samples": 2},
    }
    probed = [solve(client, **body)["details"]["allocation"]["difficulty"] for _ in range(3)]
    assert all(d["probe_samples"] == 2 for d in probed)
    assert probed[0]["neighbour_prior"] is None
    assert probed[1]["neighbour_prior"]["neighbours"] == 1
    last = solve(client, **body)["details"]["allocation"]["difficulty"]
    assert last["neighbour_prior"]["neighbours"] == 3 and last["neighbour_prior"]["skipped_probe"]
    assert last["probe_samples"] == 0 and "similar past prompts" in last["source"]
    # The memory holds the probe's estimate of p (the first request had no prior to mix in), not the answers'
    # agreement share.
    stored = redis.Redis.from_url("redis://127.0.0.1:6379/0").lrange(
        f"ttc:allocator:outcomes:{memory}", 0, -1
    )
    assert len(stored) == 3
    assert json.loads(stored[0])["p"] == pytest.approx(probed[0]["p"], abs=1e-3)


def test_auto_probes_only_when_the_probe_is_worth_its_cost(client: httpx.Client) -> None:
    """The decision to probe is reported and kept; `probe: always` restores probing first."""
    body: dict[str, Any] = {
        "prompt": QUESTION,
        "budget": {"tokens": 2000},
        "sampling": {"max_tokens": 24},
        "return_candidates": True,
    }
    fresh = {"memory": f"test-{uuid.uuid4().hex[:8]}"}  # no neighbour prior: the choice is the probe's value
    result = solve(client, **body, params={**fresh, "cost_weight": 0})
    allocation = result["details"]["allocation"]
    decision = allocation["difficulty"]["probe_decision"]
    probed = allocation["difficulty"]["probe_samples"] == 4
    assert decision["probed"] == probed
    with_probe, without = decision["expected_score_with_probe"], decision["best_score_without_probe"]
    assert (with_probe >= without) == probed
    if probed:
        assert allocation["reason"].startswith("Probed")
    else:
        assert allocation["reason"].startswith("Skipped the probe")
        assert allocation["chosen"]["strategy"] == "best_of_n"
        assert len(result["candidates"]) == allocation["chosen"]["params"]["n"]
        assert "no probe" in allocation["difficulty"]["source"]

    always = solve(client, **body, params={**fresh, "probe": "always"})["details"]["allocation"]
    assert always["difficulty"]["probe_decision"] is None and always["difficulty"]["probe_samples"] == 4
