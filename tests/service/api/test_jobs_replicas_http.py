"""Background jobs across real replicas on the test's OWN Redis (append-only, on a free port; never the shared
one), every replica on one real vLLM server (remote engine) so no replica loads its own engine:
SIGKILL the replica running a job and another finishes it; SIGTERM drains (finishes within the grace period,
or hands the job back); a Redis restart keeps corpora, calibrations and finished jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtests.harness import RedisServer, free_port, start_vllm, stop, wait_ready
from service.runtime.model_files import ensure_default_model
from service.runtime.settings import Settings
from tests.conftest import start_service

pytestmark = pytest.mark.engine

VISIBILITY = 4.0
GRACE = 15.0
# ~10 s on the CPU engine: still running when we kill or stop its replica.
LONG = {
    "prompt": "Write a long story about a lighthouse keeper and a storm.",
    "strategy": "best_of_n",
    "params": {"n": 8},
    "sampling": {"max_tokens": 300, "temperature": 1.0},
    "answer": {"type": "text"},
    "background": True,
}
BATCH_TOKENS = 1200
# A few seconds even on a slow CPU engine: finishes inside the grace period.
SHORT = {**LONG, "params": {"n": 1}, "sampling": {"max_tokens": 24, "temperature": 1.0}}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model_dir = ensure_default_model(Settings().model_cache_dir)
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    process = start_vllm(port, model_dir, "smol", log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, "/health", log_path=log)
        yield url
    finally:
        stop(process)


class Replicas:
    """Service processes on the own Redis and the one vLLM server; stops whatever is left at the end."""

    def __init__(self, tmp: Path, vllm: str, redis_url: str) -> None:
        self.tmp, self.vllm, self.redis_url = tmp, vllm, redis_url
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, grace: float = GRACE) -> tuple[str, subprocess.Popen[bytes]]:
        model_dir = str(ensure_default_model(Settings().model_cache_dir))
        env = {
            "TTC_REDIS_URL": self.redis_url,
            "TTC_JOB_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY),
            "TTC_SHUTDOWN_GRACE_SECONDS": str(grace),
            "TTC_JOB_CONCURRENCY": "2",
        }
        url, process = start_service(
            self.tmp, "--engine", "remote", "--engine-url", self.vllm, "--model", model_dir, env=env
        )
        self.started.append(process)
        return url, process

    def stop_all(self) -> None:
        for process in self.started:
            stop(process)


@pytest.fixture
def replicas(
    tmp_path_factory: pytest.TempPathFactory, vllm_url: str, own_redis: RedisServer
) -> Iterator[Replicas]:
    """Each test's own replicas, all stopped when it ends, so a replica a failed test left running never
    takes the next test's job."""
    group = Replicas(tmp_path_factory.mktemp("replicas"), vllm_url, own_redis.url)
    yield group
    group.stop_all()


def job_of(own_redis: RedisServer, job_id: str) -> dict[str, Any]:
    return own_redis.client().hgetall(f"ttc:job:{job_id}")  # type: ignore[return-value]


def wait_job(
    own_redis: RedisServer, job_id: str, statuses: tuple[str, ...], seconds: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = job_of(own_redis, job_id)
        if job.get("status") in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def pid_of(job: dict[str, Any]) -> int:
    return int(job["worker"].split(":")[1])


def test_a_killed_replicas_job_is_taken_over_and_finished(replicas: Replicas, own_redis: RedisServer) -> None:
    first_url, first = replicas.start()
    second_url, second = replicas.start()
    job = httpx.post(f"{first_url}/v1/solve", json=LONG, timeout=60).json()
    running = wait_job(own_redis, job["id"], ("running",))
    time.sleep(1.0)
    victim = {first.pid: first, second.pid: second}[pid_of(running)]
    survivor_url = second_url if victim is first else first_url
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    done = httpx.get(f"{survivor_url}/v1/jobs/{job['id']}", timeout=30).json()
    deadline = time.monotonic() + 240
    while done["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        done = httpx.get(f"{survivor_url}/v1/jobs/{job['id']}", timeout=30).json()
    assert done["status"] == "succeeded", done
    assert done["usage"]["attempts"] == 2
    # The lost run is reported with what it spent or held reserved (the quota keeps that charged); the run
    # that finished reports its whole spend, nothing left reserved.
    lost, finished = done["usage"]["per_attempt"]
    assert lost["attempt"] == 1 and lost["completion_tokens"] + lost["reserved_tokens"] > 0, lost
    assert finished["attempt"] == 2 and finished["reserved_tokens"] == 0, finished
    assert finished["completion_tokens"] == done["usage"]["completion_tokens"], done["usage"]
    takeover = done["started_at"] - killed_at
    # The claim is renewed every third of the visibility timeout, so it lapses 2/3 V to V after the kill.
    assert VISIBILITY * 2 / 3 - 0.5 <= takeover <= VISIBILITY + 10, takeover
    assert pid_of(job_of(own_redis, job["id"])) != victim.pid


def test_a_killed_replicas_batch_is_taken_over_and_stays_within_its_budget(
    replicas: Replicas, own_redis: RedisServer
) -> None:
    """The batch kind (POST /v1/solve/batch, issue 16) on the same guarantees: run again from the start by
    another replica, its one total budget still a hard cap for the run that finishes."""
    first_url, first = replicas.start()
    second_url, second = replicas.start()
    problems = [
        {
            "id": f"story-{i}",
            "prompt": LONG["prompt"],
            "sampling": {"max_tokens": 150, "temperature": 1.0},
            "answer": {"type": "text"},
        }
        for i in range(4)
    ]
    # Small enough to finish soon on a CPU engine (the budget, not the problems, ends it), large enough to be
    # still running a second after it starts.
    body = {"problems": problems, "budget": {"tokens": BATCH_TOKENS}}
    job = httpx.post(f"{first_url}/v1/solve/batch", json=body, timeout=60).json()
    assert job["kind"] == "solve.batch"
    running = wait_job(own_redis, job["id"], ("running",))
    time.sleep(1.0)
    victim = {first.pid: first, second.pid: second}[pid_of(running)]
    survivor_url = second_url if victim is first else first_url
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    done = wait_job(own_redis, job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    finished = httpx.get(f"{survivor_url}/v1/jobs/{job['id']}", timeout=30).json()
    assert finished["usage"]["attempts"] == 2
    result = finished["result"]
    assert [p["id"] for p in result["problems"]] == [p["id"] for p in problems]
    assert 0 < result["usage"]["completion_tokens"] <= BATCH_TOKENS


def test_sigterm_lets_a_short_job_finish_within_the_grace_period(
    replicas: Replicas, own_redis: RedisServer
) -> None:
    url, process = replicas.start()  # the only replica: it runs the job
    job = httpx.post(f"{url}/v1/solve", json=SHORT, timeout=60).json()
    wait_job(own_redis, job["id"], ("running",))
    process.send_signal(signal.SIGTERM)
    stopped_at = time.time()
    process.wait(timeout=GRACE + 30)
    done = job_of(own_redis, job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == "1" and float(done["finished_at"]) >= stopped_at


def test_sigterm_hands_a_long_job_back_and_another_replica_finishes_it(
    replicas: Replicas, own_redis: RedisServer
) -> None:
    # a short grace period, so a job of ~10 s outlasts it and the next replica finishes it soon
    url, process = replicas.start(grace=2.0)
    job = httpx.post(f"{url}/v1/solve", json=LONG, timeout=60).json()
    wait_job(own_redis, job["id"], ("running",))
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=GRACE + 30)
    handed_back = job_of(own_redis, job["id"])
    assert handed_back["status"] == "queued" and handed_back["attempts"] == "1", handed_back
    next_url, _ = replicas.start()
    done = wait_job(own_redis, job["id"], ("succeeded", "failed"), seconds=400)
    assert done["status"] == "succeeded" and done["attempts"] == "2", done
    events = httpx.get(f"{next_url}/v1/jobs/{job['id']}/events", timeout=60).text
    assert '"handed_back": true' in events


def test_redis_restart_keeps_corpora_calibrations_and_finished_jobs(
    replicas: Replicas, own_redis: RedisServer
) -> None:
    url, _ = replicas.start()
    http = httpx.Client(base_url=url, timeout=120)
    assert http.post("/v1/corpora", json={"name": "durable"}).status_code == 200
    document = {"id": "a", "title": "Velm", "text": "The harbour of Velm opened in 1310."}
    assert http.post("/v1/corpora/durable/documents", json={"documents": [document]}).status_code == 200
    calibration = http.post(
        "/v1/verifiers/reference/calibrate",
        json={
            "family": "durable",
            "examples": [{"question": "What is 2 + 3? Answer with just the number.", "answer": "5"}],
            "samples_per_question": 2,
            "options": {"answer": "5"},
            "sampling": {"max_tokens": 8},
        },
    )
    assert calibration.status_code == 200, calibration.text
    job = http.post("/v1/solve", json=SHORT).json()
    wait_job(own_redis, job["id"], ("succeeded",))
    time.sleep(1.5)  # appendfsync everysec: at most the last second is at risk
    own_redis.kill()
    own_redis.start()
    deadline = time.monotonic() + 30
    while http.get("/v1/corpora/durable").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)  # the service's client reconnects on its next command
    assert http.get("/v1/corpora/durable").json()["documents"] == 1
    hits = http.post("/v1/corpora/durable/search", json={"query": "harbour", "k": 1}).json()["data"]
    assert hits[0]["document_id"] == "a"
    verifiers = http.get("/v1/verifiers").json()["data"]
    reference = next(item for item in verifiers if item["id"] == "reference")
    assert "durable" in [item["family"] for item in reference["calibrations"]]
    finished = http.get(f"/v1/jobs/{job['id']}").json()
    assert finished["status"] == "succeeded" and finished["result"]["usage"]["completion_tokens"] > 0
    # The workers found the queue again: a new job runs.
    again = http.post("/v1/solve", json=SHORT).json()
    assert wait_job(own_redis, again["id"], ("succeeded", "failed"))["status"] == "succeeded"
    http.close()


def test_a_request_still_running_when_the_grace_period_ends_gets_a_503(replicas: Replicas) -> None:
    """Uvicorn cancels what still runs when its shutdown grace period ends; the client then gets a 503 with an
    error object (retry it elsewhere), not a bare 500."""
    url, process = replicas.start(grace=1.0)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/v1/solve", json={**LONG, "background": False}, timeout=60)
        time.sleep(2.0)  # the request is in the engine (it runs for ~10 s)
        process.send_signal(signal.SIGTERM)
        response = pending.result()
    process.wait(timeout=60)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "server_shutting_down"
