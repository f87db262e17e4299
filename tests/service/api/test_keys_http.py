"""The front door over real HTTP, real engines and the real Redis: keys (401/403, revocation at once, the CLI),
quotas on two replicas sharing one Redis (ledger = sum of reported usage, never above the quota), admission
(a burst gets 429s with Retry-After, no 5xx, and the service recovers at once), the `{"eflops": 1e24}`-alone
budget, the usage endpoint and the metrics. Each test module uses a keys namespace of its own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from loadtests.harness import ROOT, free_port, start_process, stop
from tests.conftest import start_service, start_services

pytestmark = pytest.mark.engine

ADMIN = "admin-" + uuid.uuid4().hex
DEFAULT_TOKENS = 48


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = f"test-frontdoor-{uuid.uuid4().hex}"
    yield name
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    for key in redis.scan_iter(match=f"{name}:*"):
        redis.delete(key)
    redis.close()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, namespace: str) -> Iterator[tuple[str, str]]:
    """Two service replicas (two engines) sharing one Redis and one keys namespace, each engine on its own core
    (two engines on the same cores crawl). Replica B has a small admission limit (4 sequences in flight, 4
    calls waiting) for the burst test."""
    env = {
        "TTC_KEYS_NAMESPACE": namespace,
        "TTC_ADMIN_KEY": ADMIN,
        "TTC_DEFAULT_BUDGET_TOKENS": str(DEFAULT_TOKENS),
        "TTC_KV_CACHE_GIB": "1",
    }
    cores = sorted(os.sched_getaffinity(0))
    small = {
        **env,
        "VLLM_CPU_OMP_THREADS_BIND": str(cores[-1]),
        "TTC_ADMISSION_MAX_SEQUENCES": "4",
        "TTC_ADMISSION_MAX_WAITING": "4",
        "TTC_ADMISSION_MAX_WAIT_SECONDS": "20",
    }
    (url_a, process_a), (url_b, process_b) = start_services(
        [
            (tmp_path_factory.mktemp("replica-a"), {**env, "VLLM_CPU_OMP_THREADS_BIND": str(cores[0])}),
            (tmp_path_factory.mktemp("replica-b"), small),
        ]
    )
    yield url_a, url_b
    stop(process_b)
    stop(process_a)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_key(url: str, name: str, scope: str = "user", **limits: Any) -> str:
    response = httpx.post(
        f"{url}/v1/keys", json={"name": name, "scope": scope, "limits": limits}, headers=bearer(ADMIN)
    )
    assert response.status_code == 200, response.text
    secret = response.json()["key"]
    assert isinstance(secret, str) and secret.startswith("ttc-")
    return secret


def chat(max_tokens: int = 8, content: str = "Say hi.") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0}


def test_missing_wrong_and_revoked_keys_are_401_and_scopes_are_403(replicas: tuple[str, str]) -> None:
    url, other = replicas
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + path).status_code == 200
    missing = httpx.post(f"{url}/v1/chat/completions", json=chat())
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{url}/v1/chat/completions", json=chat(), headers=bearer("ttc-not-a-key"))
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"

    user = create_key(url, "user-" + uuid.uuid4().hex[:8])
    assert httpx.get(f"{url}/v1/models", headers=bearer(user)).status_code == 200
    answer = httpx.post(f"{url}/v1/chat/completions", json=chat(), headers=bearer(user), timeout=120)
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{url}/v1/corpora", headers=bearer(user)).status_code == 200
    for method, path, body in (
        ("POST", "/v1/corpora", {"name": "c" + uuid.uuid4().hex[:8]}),
        ("DELETE", "/v1/corpora/anything", None),
        ("GET", "/v1/allocator", None),
        ("POST", "/v1/keys", {"name": "x"}),
        ("GET", "/v1/keys", None),
    ):
        refused = httpx.request(method, url + path, json=body, headers=bearer(user))
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"]["type"] == "permission_error"

    # revoked on replica A, refused at once on both replicas (they share Redis; nothing is cached)
    name = "revoke-" + uuid.uuid4().hex[:8]
    secret = create_key(url, name)
    assert httpx.get(f"{other}/v1/models", headers=bearer(secret)).status_code == 200
    assert httpx.delete(f"{url}/v1/keys/{name}", headers=bearer(ADMIN)).status_code == 200
    for base in (url, other):
        gone = httpx.get(f"{base}/v1/models", headers=bearer(secret))
        assert gone.status_code == 401 and gone.json()["error"]["code"] == "invalid_api_key"

    metrics = httpx.get(f"{url}/metrics").text
    assert 'ttc_rejected_requests_total{reason="unauthenticated"}' in metrics
    assert 'ttc_rejected_requests_total{reason="forbidden"}' in metrics
    assert user not in metrics and secret not in metrics


def test_cli_creates_shows_and_revokes_keys(replicas: tuple[str, str], namespace: str) -> None:
    url, _ = replicas
    name = "cli-" + uuid.uuid4().hex[:8]

    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "service.keys", "--namespace", namespace, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    created = cli("create", name, "--tokens-per-day", "500", "--max-tokens", "64")
    secret = created["key"]
    assert created["limits"]["tokens_per_day"] == 500 and created["scope"] == "user"
    answer = httpx.post(f"{url}/v1/chat/completions", json=chat(8), headers=bearer(secret), timeout=120)
    assert answer.status_code == 200, answer.text
    spent = answer.json()["usage"]["completion_tokens"]
    shown = cli("show", name)
    assert shown["usage"]["windows"]["day"]["tokens"]["spent"] == spent
    assert "key" not in shown and secret not in json.dumps(cli("list"))
    cli("revoke", name)
    assert httpx.get(f"{url}/v1/models", headers=bearer(secret)).status_code == 401


def test_eflops_alone_gets_the_default_token_and_seconds_caps(replicas: tuple[str, str]) -> None:
    url, _ = replicas
    body = {
        "prompt": "Write a long story about a lighthouse.",
        "strategy": "best_of_n",
        "params": {"n": 8},
        "budget": {"eflops": 1e24},
        "sampling": {"max_tokens": 64},
    }
    response = httpx.post(f"{url}/v1/solve", json=body, headers=bearer(ADMIN), timeout=120)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["budget"]["requested"]["tokens"] == DEFAULT_TOKENS
    assert result["budget"]["requested"]["seconds"] == 300.0
    assert 0 < result["usage"]["completion_tokens"] <= DEFAULT_TOKENS


def test_ceilings_narrow_the_budget_and_usage_reports_spend(replicas: tuple[str, str]) -> None:
    url, _ = replicas
    secret = create_key(url, "ceiling-" + uuid.uuid4().hex[:8], max_tokens=20, max_seconds=30.0)
    body = {
        "prompt": "Write a long story about a lighthouse.",
        "strategy": "best_of_n",
        "params": {"n": 4},
        "budget": {"tokens": 100_000, "seconds": 3000},
        "sampling": {"max_tokens": 32},
    }
    response = httpx.post(f"{url}/v1/solve", json=body, headers=bearer(secret), timeout=120)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["budget"]["requested"]["tokens"] == 20 and result["budget"]["requested"]["seconds"] == 30.0
    assert 0 < result["usage"]["completion_tokens"] <= 20
    usage = httpx.get(f"{url}/v1/usage", headers=bearer(secret)).json()
    assert usage["usage"]["windows"]["day"]["tokens"]["spent"] == result["usage"]["completion_tokens"]
    assert usage["limits"]["max_tokens"] == 20


async def _fire(
    url: str, secret: str, body: dict[str, Any], path: str, http: httpx.AsyncClient
) -> tuple[int, int, dict[str, str], dict[str, Any]]:
    """(status, completion tokens reported, headers, body) of one request."""
    response = await http.post(url + path, json=body, headers=bearer(secret))
    payload = response.json()
    tokens = payload.get("usage", {}).get("completion_tokens", 0) if response.status_code == 200 else 0
    return response.status_code, tokens, dict(response.headers), payload


def test_quotas_on_two_replicas_spend_up_to_the_quota_and_not_one_token_more(
    replicas: tuple[str, str],
) -> None:
    """200 concurrent requests from 10 keys, spread over two replicas, plain and `ttc` alike."""
    url_a, url_b = replicas
    quota = 96
    keys = [create_key(url_a, f"quota-{i}-" + uuid.uuid4().hex[:6], tokens_per_day=quota) for i in range(10)]
    story = "Write a long story about a lighthouse keeper."

    async def run() -> list[tuple[int, int, int, dict[str, str], dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=300) as http:

            async def one(index: int) -> tuple[int, int, int, dict[str, str], dict[str, Any]]:
                key = index % 10
                url = url_a if (index // 10) % 2 == 0 else url_b
                if index % 4 < 2:
                    status, tokens, headers, payload = await _fire(
                        url, keys[key], chat(16, story), "/v1/chat/completions", http
                    )
                else:
                    solve = {
                        "prompt": story,
                        "strategy": "best_of_n",
                        "params": {"n": 2},
                        "budget": {"tokens": 32},
                        "sampling": {"max_tokens": 16},
                    }
                    status, tokens, headers, payload = await _fire(url, keys[key], solve, "/v1/solve", http)
                return key, status, tokens, headers, payload

            return await asyncio.gather(*(one(i) for i in range(200)))

    results = asyncio.run(run())
    statuses = [status for _, status, _, _, _ in results]
    assert all(status < 500 for status in statuses), statuses
    assert statuses.count(200) > 0 and statuses.count(429) > 0
    for _, status, _, headers, payload in results:
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            assert payload["error"]["code"] in {
                "tokens_per_day",
                "admission_queue_full",
                "admission_wait_timeout",
            }
    reported = [0] * len(keys)
    for key, status, tokens, _, _ in results:
        reported[key] += tokens if status == 200 else 0
    for index, secret in enumerate(keys):
        usage = httpx.get(f"{url_a}/v1/usage", headers=bearer(secret)).json()["usage"]
        ledger = usage["windows"]["day"]["tokens"]["spent"]
        assert ledger == reported[index], (index, ledger, reported[index])
        assert ledger <= quota

    async def drain() -> list[int]:
        """Then each key asks on, alternating replicas, until its quota refuses: refunds of samples that
        stopped early are spent too, and the quota is used to the last token."""
        async with httpx.AsyncClient(timeout=300) as http:

            async def one_key(index: int) -> int:
                extra = 0
                for attempt in range(40):
                    url = url_a if attempt % 2 == 0 else url_b
                    status, tokens, _, payload = await _fire(
                        url, keys[index], chat(16, story), "/v1/chat/completions", http
                    )
                    if status == 429 and payload["error"]["code"] == "tokens_per_day":
                        break
                    extra += tokens
                return extra

            return await asyncio.gather(*(one_key(index) for index in range(len(keys))))

    extra = asyncio.run(drain())
    for index, secret in enumerate(keys):
        usage = httpx.get(f"{url_b}/v1/usage", headers=bearer(secret)).json()["usage"]
        ledger = usage["windows"]["day"]["tokens"]["spent"]
        assert ledger == reported[index] + extra[index] == quota, (index, ledger, reported[index], extra)
    metrics = httpx.get(f"{url_a}/metrics").text + httpx.get(f"{url_b}/metrics").text
    assert 'ttc_rejected_requests_total{reason="quota"}' in metrics
    assert "ttc_quota_spend_total{axis=" in metrics and 'key="quota-0-' in metrics


def test_a_burst_past_admission_gets_429s_with_retry_after_and_recovers_at_once(
    replicas: tuple[str, str],
) -> None:
    _, url = replicas  # replica B: 4 sequences in flight, 4 calls waiting

    async def burst() -> list[tuple[int, int, dict[str, str], dict[str, Any]]]:
        async with httpx.AsyncClient(timeout=300) as http:
            return await asyncio.gather(
                *(
                    _fire(url, ADMIN, chat(24, "Write a long story."), "/v1/chat/completions", http)
                    for _ in range(40)
                )
            )

    results = asyncio.run(burst())
    statuses = [status for status, _, _, _ in results]
    assert all(status in (200, 429) for status in statuses), statuses
    assert statuses.count(429) >= 20 and statuses.count(200) >= 4
    for status, _, headers, payload in results:
        if status == 429:
            assert payload["error"]["code"] == "admission_queue_full"
            assert int(headers["retry-after"]) >= 1
    after = httpx.post(f"{url}/v1/chat/completions", json=chat(4), headers=bearer(ADMIN), timeout=30)
    assert after.status_code == 200, after.text
    assert 'ttc_rejected_requests_total{reason="admission"}' in httpx.get(f"{url}/metrics").text


def test_anonymous_callers_only_on_loopback_unless_allowed(tmp_path: Path) -> None:
    """Bound to 0.0.0.0 with no keys, the service refuses to start; with --allow-anonymous it serves
    anonymous callers with scope `user`. (A remote engine that does not exist: no engine needed here.)"""
    env = {
        "TTC_KEYS_NAMESPACE": f"test-anon-{uuid.uuid4().hex}",
        "TTC_ENGINE": "remote",
        "TTC_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
    }
    port = free_port()
    log = tmp_path / "refused.log"
    process = start_process(
        [sys.executable, "-m", "service", "--host", "0.0.0.0", "--port", str(port)],
        log,
        env,
    )
    try:
        assert process.wait(timeout=60) != 0
    finally:
        stop(process)
    assert "refusing to listen on 0.0.0.0 without API keys" in log.read_text()
    assert "--allow-anonymous" in log.read_text()

    url, served = start_service(
        tmp_path, "--host", "0.0.0.0", "--allow-anonymous", env=env, ready_path="/healthz"
    )
    try:
        assert httpx.get(f"{url}/v1/strategies").status_code == 200
        refused = httpx.post(f"{url}/v1/corpora", json={"name": "anon-" + uuid.uuid4().hex[:8]})
        assert refused.status_code == 403
    finally:
        stop(served)


def test_background_jobs_belong_to_their_key_and_spend_its_quota(replicas: tuple[str, str]) -> None:
    """A job is visible to and cancellable by its own key (and admin) only, on every replica, and its run is
    charged to its key's quota like a synchronous call (the worker runs it as its owner)."""
    url_a, url_b = replicas
    alice = create_key(url_a, "jobs-alice-" + uuid.uuid4().hex[:8], tokens_per_day=10_000)
    bob = create_key(url_a, "jobs-bob-" + uuid.uuid4().hex[:8])
    body = {
        "prompt": "What is 2 + 3?",
        "strategy": "best_of_n",
        "params": {"n": 2},
        "sampling": {"max_tokens": 8},
        "background": True,
    }
    submitted = httpx.post(f"{url_a}/v1/solve", json=body, headers=bearer(alice))
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    for url in (url_a, url_b):
        assert httpx.get(f"{url}/v1/jobs/{job_id}", headers=bearer(bob)).status_code == 404
        assert httpx.delete(f"{url}/v1/jobs/{job_id}", headers=bearer(bob)).status_code == 404
        listed = httpx.get(f"{url}/v1/jobs", headers=bearer(bob)).json()["data"]
        assert job_id not in [job["id"] for job in listed]
    deadline = time.monotonic() + 180
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{url_b}/v1/jobs/{job_id}", headers=bearer(alice)).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert job["status"] == "succeeded", job
    assert httpx.get(f"{url_a}/v1/jobs/{job_id}", headers=bearer(ADMIN)).status_code == 200
    spent = job["result"]["usage"]["completion_tokens"]
    assert spent > 0
    usage = httpx.get(f"{url_a}/v1/usage", headers=bearer(alice)).json()
    assert usage["usage"]["windows"]["day"]["tokens"]["spent"] == spent
