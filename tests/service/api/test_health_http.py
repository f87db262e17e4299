"""Fail loudly, recover by restart (issue 10): a service whose engine dies or never starts answers 503 on
/healthz and exits non-zero within seconds, so systemd or Kubernetes restart it (vLLM's server does the same)."""

import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from loadtests.harness import free_port, start_process, stop
from tests.conftest import start_service

pytestmark = pytest.mark.engine


def engine_core(service_pid: int) -> psutil.Process:
    """vLLM's engine core: the child of the service process that holds the model (the biggest one)."""
    children = psutil.Process(service_pid).children(recursive=True)
    assert children, "the service has no child process"
    return max(children, key=lambda child: child.memory_info().rss)


def test_a_killed_engine_core_makes_the_service_exit_non_zero(tmp_path: Path) -> None:
    url, process = start_service(tmp_path)
    try:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        core = engine_core(process.pid)
        core.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while process.poll() is None and time.monotonic() - killed < 30:
            time.sleep(0.2)
        assert process.poll() is not None, "the service kept running with a dead engine"
        assert time.monotonic() - killed < 20
        assert process.returncode not in (0, None), process.returncode
        log = "\n".join(path.read_text(errors="replace") for path in tmp_path.glob("service-*.log"))
        assert "the engine is dead" in log
    finally:
        stop(process)


def test_an_engine_that_fails_to_start_makes_the_service_exit_non_zero(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "service.log"
    command = [
        sys.executable,
        "-m",
        "service",
        "--port",
        str(port),
        "--model",
        str(tmp_path / "no-such-model"),
    ]
    process = start_process(command, log_path)
    try:
        returncode = process.wait(timeout=120)
        assert returncode != 0, log_path.read_text(errors="replace")
        assert "failed to start" in log_path.read_text(errors="replace")
    finally:
        stop(process)
