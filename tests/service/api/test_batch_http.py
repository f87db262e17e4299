"""POST /v1/solve/batch through the session's real service: one total budget over many problems, never
exceeded; easy and hopeless problems get fewer samples than middling ones; progress events; bad bodies are
400s in OpenAI's error format; the same batch from the openai client's batch file."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.fit_profiles import WORKED_SUMS, Problem
from tests.service.api.test_jobs_http import sse_events, wait_for

pytestmark = pytest.mark.engine

SUFFIX = " Answer with just the number."


def problems(seed: int, per_family: int) -> list[dict[str, Any]]:
    """One-digit additions (the issue's easy kind) and two-digit additions (its middling kind), asked after the
    batch benchmark's worked sums: then they are easy and middling for this 135M model too (asked bare,
    one-digit addition is its middling kind and two-digit nearly hopeless)."""
    rng = random.Random(seed)
    out = []
    for i in range(per_family):
        for family, low, high in (("add1", 1, 9), ("add2", 10, 99)):
            a, b = rng.randint(low, high), rng.randint(low, high)
            problem = Problem(f"{family}-{i}", family, f"What is {a} + {b}?", str(a + b), 24, WORKED_SUMS)
            out.append(
                {
                    "id": problem.id,
                    "messages": problem.messages(),
                    "reference_answer": problem.answer,
                    "sampling": {"max_tokens": problem.max_tokens},
                }
            )
    return out


def run_batch(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    accepted = client.post("/v1/solve/batch", json=body)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["kind"] == "solve.batch" and job["budget"] == body["budget"]
    done = wait_for(client, job["id"], ("succeeded", "failed", "cancelled"), seconds=600)
    assert done["status"] == "succeeded", done
    return done


# about 20 samples a problem ("a + b = c" is about 9 tokens): not enough for every problem to get its most
TOKENS = 6000


def test_a_batch_never_exceeds_its_budget_and_easy_problems_get_fewer_samples(client: httpx.Client) -> None:
    # 16 of each kind: one problem's samples vary from run to run; the family means tell the kinds apart
    body = {"problems": problems(1, 16), "budget": {"tokens": TOKENS}}
    job = run_batch(client, body)
    result = job["result"]
    assert result["object"] == "ttc.solve.batch"
    assert result["usage"]["completion_tokens"] <= TOKENS
    assert result["budget"]["requested"]["tokens"] == TOKENS
    assert [p["id"] for p in result["problems"]] == [p["id"] for p in body["problems"]]
    assert (
        sum(p["usage"]["completion_tokens"] for p in result["problems"])
        == result["usage"]["completion_tokens"]
    )
    for problem in result["problems"]:
        allocation = problem["details"]["allocation"]
        assert problem["samples"] >= 1 and allocation["samples"] == problem["samples"]
        assert allocation["reason"] and allocation["status"] in (
            "settled",
            "hopeless",
            "capped",
            "budget",
            "answered",
        )
        assert allocation["steps"][0]["why"] == "probe"
        assert problem["correct"] in (True, False)
        # the default vote is DeepConf's offline one (samples drawn with logprobs), unless a whole run answered
        assert allocation["selection"] == "confidence"
        if allocation["status"] != "answered":
            assert problem["params"] == {
                "strategy": "deepconf",
                "mode": "offline",
                "n": problem["samples"],
                "keep_percent": 10.0,
            }

    def mean_samples(family: str) -> float:
        chosen = [p["samples"] for p in result["problems"] if p["id"].startswith(family)]
        return sum(chosen) / len(chosen)

    samples = {f: mean_samples(f) for f in ("add1", "add2")}
    summary = result["summary"]
    assert summary["problems"] == 32 and summary["known_answers"] == 32
    assert summary["accuracy"] == pytest.approx(summary["correct"] / 32, abs=1e-4)
    # progress events: problems done, spend and accuracy so far
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
        seen = sse_events(events)
    progress = [data for _, event, data in seen if event == "progress"]
    assert progress and progress[0]["phase"] == "probe"
    assert progress[-1]["problems_done"] == 32 and progress[-1]["spent"]["completion_tokens"] > 0
    assert progress[-1]["accuracy_so_far"] is not None
    print("samples per family", samples)  # reported with -s; the batch benchmark has the figures at scale
    # easy problems settle at their probe; middling ones get the rest
    assert samples["add1"] < samples["add2"], samples


def test_an_eflops_cap_holds_with_a_maximum_share(client: httpx.Client) -> None:
    one = client.post(
        "/v1/solve",
        json={"messages": problems(2, 1)[0]["messages"], "strategy": "best_of_n", "params": {"n": 4}},
    ).json()
    # a few calls per problem (a call's worst case, every sample at max_tokens, is what the tracker reserves)
    cap = one["usage"]["eflops"] * 12 * 5
    body = {
        "problems": problems(2, 6),  # twelve
        "budget": {"eflops": cap},
        "allocation": {"max_share": 0.25, "probe_samples": 2, "vote": "majority"},
    }
    result = run_batch(client, body)["result"]
    assert 0 < result["usage"]["eflops"] <= cap
    assert {p["details"]["allocation"]["selection"] for p in result["problems"]} == {"majority"}
    assert all(p["usage"]["eflops"] <= 0.25 * cap or p["samples"] == 1 for p in result["problems"])


def test_a_problem_can_be_answered_by_a_whole_run_of_another_strategy(client: httpx.Client) -> None:
    # two-digit additions scatter (the probe's answers mostly disagree): DeepConf's measured profile predicts
    # a run of it beats the vote of the probe, and only whole DeepConf runs are allowed after the probe
    rng = random.Random(7)
    pairs = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(6)]
    body = {
        "problems": [
            {"id": f"add2-{i}", "prompt": f"What is {a} + {b}?{SUFFIX}", "sampling": {"max_tokens": 24}}
            for i, (a, b) in enumerate(pairs)
        ],
        "budget": {"tokens": 8000},
        "allocation": {"strategies": ["deepconf"]},
    }
    result = run_batch(client, body)["result"]
    assert result["usage"]["completion_tokens"] <= 8000
    answered = [p for p in result["problems"] if p["details"]["allocation"]["status"] == "answered"]
    assert answered, [p["details"]["allocation"]["reason"] for p in result["problems"]]
    for problem in answered:
        run = problem["details"]["allocation"]["steps"][-1]
        assert run["strategy"] == "deepconf" and problem["params"]["strategy"] == "deepconf"
        assert problem["params"]["n"] == run["params"]["n"]
        assert problem["samples"] > 4  # the probe's samples and the run's traces
    assert (
        sum(p["usage"]["completion_tokens"] for p in result["problems"])
        == result["usage"]["completion_tokens"]
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"problems": [{"prompt": "Hi"}]}, "budget"),
        ({"problems": [], "budget": {"tokens": 100}}, "problems"),
        ({"problems": [{"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]}], "budget": {"tokens": 99}}, None),
        ({"problems": [{"prompt": "Hi", "strategy": "best_of_n"}], "budget": {"tokens": 99}}, None),
        ({"problems": [{"prompt": "Hi", "budget": {"tokens": 5}}], "budget": {"tokens": 99}}, None),
        ({"problems": [{"prompt": "Hi"}], "budget": {"seconds": 9}}, None),
        ({"problems": [{"prompt": "Hi"}], "budget": {"tokens": 99}, "allocation": {"min_samples": 0}}, None),
        ({"problems": [{"prompt": "Hi", "id": "a"}, {"prompt": "Ho", "id": "a"}], "budget": {"tokens": 99}}, None),
        ({"problems": [{"prompt": "Hi", "params": {"nope": 1}}], "budget": {"tokens": 99}}, "problems.0.params.nope"),
        ({"problems": [{"prompt": "Hi", "sampling": {"max_tokens": 24}}] * 10, "budget": {"tokens": 100}}, "budget"),
    ],
)  # fmt: skip
def test_bad_bodies_are_openai_style_400s(
    client: httpx.Client, body: dict[str, Any], param: str | None
) -> None:
    response = client.post("/v1/solve/batch", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error


def test_a_tight_budget_with_abstention_allowed_stays_within_it(
    client: httpx.Client,
) -> None:
    body = {
        "problems": [
            {"prompt": f"What is {i} + 1?{SUFFIX}", "sampling": {"max_tokens": 24}} for i in range(6)
        ],
        "budget": {"tokens": 24 * 3},
        "allocation": {"allow_abstain": True},
    }
    result = run_batch(client, body)["result"]
    assert result["usage"]["completion_tokens"] <= 72  # three worst-case samples' worth
    for problem in result["problems"]:  # the probe goes in waves: what one wave leaves pays the next
        status = problem["details"]["allocation"]["status"]
        assert problem["samples"] >= 1 or (status == "unfunded" and problem["abstained"]), problem


def test_the_openai_batch_file_form_through_the_openai_client(
    service_url: str, client: httpx.Client, tmp_path: Path
) -> None:
    from openai import BadRequestError, NotFoundError, OpenAI

    openai = OpenAI(base_url=f"{service_url}/v1", api_key="unused", max_retries=0)
    model = client.get("/v1/models").json()["data"][0]["id"]
    rows = []
    for problem in problems(3, 3):
        body = {
            "model": model,
            "messages": problem["messages"],
            "max_tokens": 24,
            "ttc": {"answer": {"type": "number"}},
        }
        rows.append(
            {"custom_id": problem["id"], "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with path.open("rb") as handle:
        uploaded = openai.files.create(file=handle, purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == path.stat().st_size
    assert openai.files.retrieve(uploaded.id).id == uploaded.id
    batch = openai.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "test"},
        extra_body={"ttc": {"budget": {"tokens": 800}}},
    )
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"run": "test"}
    deadline = time.monotonic() + 600
    while batch.status not in ("completed", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        batch = openai.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None and batch.request_counts.completed == len(rows)
    assert batch.output_file_id is not None
    output = [json.loads(line) for line in openai.files.content(batch.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == [row["custom_id"] for row in rows]
    spent = 0
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        completion = line["response"]["body"]
        assert (
            completion["object"] == "chat.completion"
            and completion["choices"][0]["message"]["role"] == "assistant"
        )
        allocation = completion["ttc"]["details"]["allocation"]
        assert allocation["samples"] >= 1 and allocation["reason"]
        spent += completion["usage"]["completion_tokens"]
    job = client.get(f"/v1/jobs/{batch.id}").json()  # the batch is a job like any other
    assert job["kind"] == "openai.batch" and job["usage"]["completion_tokens"] <= 800
    assert spent == job["usage"]["completion_tokens"]
    # no total budget: refused before anything runs; a batch that does not exist is a 404
    with pytest.raises(BadRequestError) as refused:
        openai.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert refused.value.body is not None and "budget" in str(refused.value.body)
    with pytest.raises(NotFoundError):
        openai.batches.retrieve("job-nonexistent")


def test_a_batch_can_be_cancelled_and_a_bad_batch_file_is_a_400(client: httpx.Client) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}
    good = {"messages": [{"role": "user", "content": "What is 12 + 30?" + SUFFIX}], "max_tokens": 24}
    cases = [
        ("not json\n", "line 1"),
        (json.dumps({**line, "body": {**good, "ttc": {"budget": {"tokens": 5}}}}) + "\n", "budget"),
        (json.dumps({**line, "url": "/v1/completions", "body": good}) + "\n", "POST /v1/chat/completions"),
        (json.dumps({**line, "body": good}) + "\n" + json.dumps({**line, "body": good}) + "\n", "custom_id"),
    ]
    for content, expected in cases:
        uploaded = client.post(
            "/v1/files", files={"file": ("b.jsonl", content.encode())}, data={"purpose": "batch"}
        )
        assert uploaded.status_code == 200, uploaded.text
        response = client.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "ttc": {"budget": {"tokens": 500}},
            },
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "input_file_id" and expected in error["message"], error
    wrong_purpose = client.post(
        "/v1/files", files={"file": ("b.jsonl", b"{}")}, data={"purpose": "fine-tune"}
    )
    assert wrong_purpose.status_code == 400 and wrong_purpose.json()["error"]["param"] == "purpose"
    many = "".join(json.dumps({**line, "custom_id": f"q{i}", "body": good}) + "\n" for i in range(40))
    uploaded = client.post("/v1/files", files={"file": ("b.jsonl", many.encode())}, data={"purpose": "batch"})
    created = client.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "ttc": {"budget": {"tokens": 40_000}},
        },
    )
    assert created.status_code == 200, created.text
    cancelled = client.post(f"/v1/batches/{created.json()['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelled", "completed")
