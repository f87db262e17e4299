"""Schemathesis over the live service's own /openapi.json (issue 11): every response conforms to the documented
status codes, content types, headers and schemas, and no request is a server error. Bounded: a few examples per
operation, positive cases scaled down (schemathesis_hooks.py), a dedicated service with its own Redis (the
generated corpora never touch the shared one), and a time limit."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.harness import free_port, start_process, stop
from tests.conftest import start_service

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[3]
# positive_data_acceptance (every schema-valid request must be a 2xx) is left out: rules across fields that
# OpenAPI cannot state make some schema-valid requests documented 400s/404s (greedy sampling with n > 1,
# min_tokens above max_tokens, a prompt plus max_tokens beyond the context, a model or corpus that does not
# exist). Every other check runs.
EXCLUDED_CHECKS = "positive_data_acceptance"


@pytest.fixture(scope="module")
def isolated_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    redis_port = free_port()
    redis = start_process(
        ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--daemonize", "no"],
        tmp / "redis.log",
    )
    try:
        url, process = start_service(tmp, env={"TTC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"})
        try:
            yield url
        finally:
            stop(process)
    finally:
        stop(redis)


def test_schemathesis_finds_no_violations(isolated_service: str, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{isolated_service}/openapi.json",
        "--checks", "all",
        "--exclude-checks", EXCLUDED_CHECKS,
        "--max-examples", "4",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--request-timeout", "120",
        # the default 10 s response-time limit is below what a 2-core CPU engine needs for some valid calls
        "--max-response-time", "60",
        "--workers", "2",
        "--seed", "11",
        "--generation-deterministic",
        "--no-shrink",
        "--suppress-health-check", "all",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.service.api.schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    (tmp_path / "schemathesis.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, report
