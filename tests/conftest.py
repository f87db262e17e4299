"""Shared fixtures. The real engine starts once per test session, inside one real service process
(`python -m service` under uvicorn), and every engine test talks to it over HTTP. Processes start in their own
process group (loadtests/harness.py), so stopping one also stops its engine core, even mid-start."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.harness import start_ready_service, stop

STARTUP_SECONDS = 600


def start_service(
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
    timeout: float = STARTUP_SECONDS,
) -> tuple[str, subprocess.Popen[bytes]]:
    """A ready `python -m service` on a free port, its log in `tmp` (the tests' default start-up time)."""
    return start_ready_service(tmp, *args, env=env, ready_path=ready_path, timeout=timeout)


@pytest.fixture(scope="session")
def service_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    url, process = start_service(tmp_path_factory.mktemp("service"))
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
