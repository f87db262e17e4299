"""Shared fixtures. The real engine starts once per test session, inside one real service process
(`python -m service` under uvicorn), and every engine test talks to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = STARTUP_SECONDS
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {seconds} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child process writing to `log` (our copy of the file handle is closed at once)."""
    with log.open("wb") as output:
        return subprocess.Popen(
            command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )


def start_service(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """A `python -m service` process on a free port, ready; returns its base URL and the process."""
    port = free_port()
    log = tmp / f"service-{port}.log"
    process = spawn([sys.executable, "-m", "service", "--port", str(port), *args], log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", process, log)
    except Exception:
        stop(process)
        raise
    return url, process


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
