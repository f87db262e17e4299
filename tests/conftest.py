"""Shared fixtures. The real engine starts once per test session, inside one real service process
(`python -m service` under uvicorn), and every engine test talks to it over HTTP. Processes start in their own
process group (loadtests/harness.py), so stopping one also stops its engine core, even mid-start."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.harness import free_port, start_ready_service, stop, wait_ready
from loadtests.harness import start_service as start_service_process

STARTUP_SECONDS = 600

# Reward models the session's service has registered (TTC_REWARD_MODELS): the tests that need one start
# their server on its port (tests/verifiers/test_reward_model.py: a real pooling server for "prm", a tiny
# server answering garbage for "garbage"), so one service process serves them all.
REWARD_MODEL_PORTS = {"prm": free_port(), "garbage": free_port()}
SESSION_REWARD_MODELS = {
    "prm": {"url": f"http://127.0.0.1:{REWARD_MODEL_PORTS['prm']}", "model": "prm", "mode": "prm"},
    "garbage": {"url": f"http://127.0.0.1:{REWARD_MODEL_PORTS['garbage']}", "model": "x", "mode": "prm"},
}


def greedy_word(text: str) -> str:
    """A whole word (four letters or more, after a space) of a greedy answer, to ban with bad_words. Which
    answer the model gives depends on the CPU: vLLM runs it in bf16 where the CPU has native bf16 and in
    float32 elsewhere, and SmolLM2's greedy answer to "What is the capital of France?" is "Paris" in one and
    "L'Étoile, la Marseillaise, ..." in the other."""
    words = re.findall(r"(?<= )[A-Za-z]{4,}", text)
    assert words, f"no word to ban in {text!r}"
    return words[0]


def start_service(
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
    timeout: float = STARTUP_SECONDS,
) -> tuple[str, subprocess.Popen[bytes]]:
    """A ready `python -m service` on a free port, its log in `tmp` (the tests' default start-up time)."""
    return start_ready_service(tmp, *args, env=env, ready_path=ready_path, timeout=timeout)


def start_services(
    specs: list[tuple[Path, dict[str, str]]], timeout: float = STARTUP_SECONDS
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """Several `python -m service` processes (log folder, environment each) started at once and waited for
    together: an engine's start-up is mostly one core's work, so two start in little more than one's time."""
    started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for log_dir, env in specs:
            port = free_port()
            log_path = log_dir / f"service-{port}.log"
            started.append((f"http://127.0.0.1:{port}", start_service_process(port, log_path, env), log_path))
        for url, process, log_path in started:
            wait_ready(url, process, timeout=timeout, log_path=log_path)
    except BaseException:
        for _, process, _ in started:
            stop(process)
        raise
    return [(url, process) for url, process, _ in started]


@pytest.fixture(scope="session")
def service_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {"TTC_REWARD_MODELS": json.dumps(SESSION_REWARD_MODELS)}
    url, process = start_service(tmp_path_factory.mktemp("service"), env=env)
    yield url, process
    stop(process)


@pytest.fixture(scope="session")
def service_url(request: pytest.FixtureRequest) -> str:
    """The session's service; TTC_TEST_SERVICE_URL points the tests at one already running (development)."""
    existing = os.environ.get("TTC_TEST_SERVICE_URL")
    if existing:
        return existing.rstrip("/")
    url, _ = request.getfixturevalue("service_process")
    return str(url)


@pytest.fixture
def client(service_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service_url, timeout=300.0) as http:
        yield http
