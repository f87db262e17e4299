"""Background jobs through the session's real service: submit, disconnect, poll; SSE resumed with
Last-Event-ID; cancel aborts the engine work; Idempotency-Key returns the same job or answer and spends nothing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.service.api.test_disconnect_http import LONG_WORK, engine_requests_running, wait_until_idle

pytestmark = pytest.mark.engine

SHORT = {
    "prompt": "What is 2 + 3? Answer with just the number.",
    "strategy": "best_of_n",
    "params": {"n": 2},
    "budget": {"tokens": 200},
    "sampling": {"max_tokens": 16, "seed": 7},
}


def submit(client: httpx.Client, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/solve", json={**body, "background": True}, headers=headers)


def wait_for(
    client: httpx.Client, job_id: str, statuses: tuple[str, ...], seconds: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def metric(client: httpx.Client, name: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.split()[-1])
    return total


def stream_id(entry: str) -> tuple[int, int]:
    millis, _, sequence = entry.partition("-")
    return int(millis), int(sequence)


def sse_events(response: httpx.Response, stop_after: str | None = None) -> list[tuple[str, str, Any]]:
    """(id, event, data) of each event until [DONE] (or until an event named `stop_after`)."""
    events: list[tuple[str, str, Any]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(("id:", "event:", "data:")):
            field, _, value = line.partition(":")
            current[field] = value.strip()
        elif not line and current:
            if current.get("data") == "[DONE]":
                break
            if "event" in current:
                events.append((current.get("id", ""), current["event"], json.loads(current["data"])))
                if current["event"] == stop_after:
                    break
            current = {}
    return events


def test_submit_disconnect_poll_and_get_the_synchronous_body(service_url: str) -> None:
    with httpx.Client(base_url=service_url, timeout=60) as first:
        accepted = submit(first, SHORT)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()  # the connection is gone: the job goes on
    assert job["status"] in ("queued", "running") and job["object"] == "ttc.job"
    assert job["budget"] == {"tokens": 200} and job["created_at"] > 0
    with httpx.Client(base_url=service_url, timeout=60) as later:
        done = wait_for(later, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        synchronous = later.post("/v1/solve", json=SHORT).json()
        listed = [item["id"] for item in later.get("/v1/jobs").json()["data"]]
    assert set(done["result"]) == set(synchronous)  # the same body a synchronous call returns
    assert done["result"]["strategy"] == "best_of_n" and done["result"]["usage"]["completion_tokens"] > 0
    assert done["usage"]["attempts"] == 1 and done["usage"]["completion_tokens"] > 0
    (run,) = done["usage"]["per_attempt"]  # the one run's own record matches the result's usage
    assert run["completion_tokens"] == done["usage"]["completion_tokens"] and run["reserved_tokens"] == 0
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]
    assert job["id"] in listed


def test_events_resume_after_a_disconnect_with_last_event_id(client: httpx.Client) -> None:
    job = submit(client, SHORT).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as first:
        assert first.status_code == 200 and first.headers["content-type"].startswith("text/event-stream")
        seen = sse_events(first, stop_after="running")
    assert [event for _, event, _ in seen][:1] == ["queued"] and seen[-1][1] == "running"
    last_id = seen[-1][0]
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id}) as resumed:
        rest = sse_events(resumed)
    names = [event for _, event, _ in rest]
    assert "queued" not in names and "running" not in names  # nothing seen before is sent again
    assert names[-1] == "succeeded", names
    assert all(stream_id(entry_id) > stream_id(last_id) for entry_id, _, _ in rest)
    assert rest[-1][2]["result"]["answer"] is not None or rest[-1][2]["result"]["abstained"]
    bad = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"


def test_cancel_aborts_the_engine_work(client: httpx.Client) -> None:
    job = submit(client, LONG_WORK).json()
    wait_for(client, job["id"], ("running",), seconds=120)
    deadline = time.monotonic() + 60
    while engine_requests_running(client) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine_requests_running(client) > 0, "the job never reached the engine"
    cancelled = client.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert wait_until_idle(client, seconds=30) == 0
    time.sleep(1.5)  # the worker has settled: its late result must not overwrite the cancel
    after = client.get(f"/v1/jobs/{job['id']}").json()
    assert after["status"] == "cancelled" and after["result"] is None
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
        assert sse_events(events)[-1][1] == "cancelled"


def test_idempotent_resubmission_returns_the_same_job_and_spends_nothing(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    first = submit(client, SHORT, key)
    assert first.status_code == 202
    done = wait_for(client, first.json()["id"], ("succeeded", "failed"))
    spent = metric(client, "ttc_completion_tokens_total")
    again = submit(client, SHORT, key)
    assert again.status_code == 202 and again.json()["id"] == done["id"]
    assert again.json()["status"] == "succeeded"
    other = submit(client, {**SHORT, "prompt": "What is 3 + 4?"}, key)
    assert other.status_code == 409 and other.json()["error"]["type"] == "conflict_error"
    # A synchronous request: the retry returns the first answer (same id) without running again.
    sync_key = uuid.uuid4().hex
    answer = client.post("/v1/solve", json=SHORT, headers={"Idempotency-Key": sync_key})
    assert answer.status_code == 200, answer.text
    spent = metric(client, "ttc_completion_tokens_total")
    retry = client.post("/v1/solve", json=SHORT, headers={"Idempotency-Key": sync_key})
    assert retry.status_code == 200 and retry.json()["id"] == answer.json()["id"]
    assert metric(client, "ttc_completion_tokens_total") == spent
    conflict = client.post(
        "/v1/solve", json={**SHORT, "prompt": "What is 3 + 4?"}, headers={"Idempotency-Key": sync_key}
    )
    assert conflict.status_code == 409


def test_bad_background_requests_are_400s_and_others_jobs_404(client: httpx.Client) -> None:
    both = client.post("/v1/solve", json={**SHORT, "background": True, "stream": True})
    assert both.status_code == 400
    too_big = submit(client, {**SHORT, "budget": {"tokens": 10**9}})
    assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "budget.tokens"
    missing = client.get(f"/v1/jobs/job-{uuid.uuid4().hex}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert client.delete(f"/v1/jobs/job-{uuid.uuid4().hex}").status_code == 404


def test_a_large_ingestion_runs_as_a_background_job(client: httpx.Client) -> None:
    name = f"bg-{uuid.uuid4().hex[:10]}"
    assert client.post("/v1/corpora", json={"name": name}).status_code == 200
    try:
        documents = [
            {"id": f"d{i}", "title": f"Town {i}", "text": f"Town number {i} was founded in year {1000 + i}."}
            for i in range(299)
        ]
        special = "The lighthouse keeper Orlen Vasque polished the great brass lamp every night."
        documents.append({"id": "special", "title": "Orlen Vasque", "text": special})
        bad = client.post(
            f"/v1/corpora/{name}/documents",
            json={"documents": [*documents, documents[0]], "background": True},
        )
        assert bad.status_code == 400  # refused at once, not failed later
        accepted = client.post(
            f"/v1/corpora/{name}/documents", json={"documents": documents, "background": True}
        )
        assert accepted.status_code == 202, accepted.text
        done = wait_for(client, accepted.json()["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        assert done["result"]["documents"] == 300 and done["result"]["chunks"] == 300
        assert client.get(f"/v1/corpora/{name}").json()["documents"] == 300
        hits = client.post(
            f"/v1/corpora/{name}/search", json={"query": "Who polished the lighthouse lamp?", "k": 1}
        )
        assert hits.json()["data"][0]["document_id"] == "special"
    finally:
        client.delete(f"/v1/corpora/{name}")


def test_openai_client_background_chat_completion_and_solve(service_url: str, client: httpx.Client) -> None:
    """`ttc.background` on chat completions, and the README's `openai` client flow for /v1/solve."""
    from openai import OpenAI

    openai = OpenAI(base_url=f"{service_url}/v1", api_key="unused", max_retries=0)
    model = client.get("/v1/models").json()["data"][0]["id"]
    raw = openai.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        max_tokens=16,
        extra_body={"ttc": {"strategy": "best_of_n", "params": {"n": 2}, "background": True}},
    )
    assert raw.http_response.status_code == 202
    chat_job = wait_for(client, raw.http_response.json()["id"], ("succeeded", "failed"))
    assert chat_job["status"] == "succeeded", chat_job
    assert chat_job["result"]["object"] == "chat.completion" and chat_job["result"]["choices"][0]["message"]
    assert chat_job["result"]["ttc"]["strategy"] == "best_of_n"

    job: Any = openai.post(
        "/solve",
        cast_to=object,
        body={**SHORT, "background": True},
        options={"headers": {"Idempotency-Key": uuid.uuid4().hex}},
    )
    deadline = time.monotonic() + 240
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = openai.get(f"/jobs/{job['id']}", cast_to=object)
    assert job["status"] == "succeeded" and job["usage"]["attempts"] == 1
    streamed = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "stream": True, "ttc": {"background": True}},
    )
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "stream"


def test_a_failing_job_reports_the_openai_error_object(client: httpx.Client) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    body = {**SHORT, "strategy": "drag", "rag": {"corpus": missing}, "answer": {"type": "text"}}
    job = submit(client, body).json()
    failed = wait_for(client, job["id"], ("succeeded", "failed"))
    assert failed["status"] == "failed" and failed["result"] is None
    assert failed["error"]["type"] == "not_found_error" and missing in failed["error"]["message"]
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as events:
        last = sse_events(events)[-1]
    assert last[1] == "failed" and last[2]["error"]["type"] == "not_found_error"
