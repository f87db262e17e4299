"""The app has one Redis client (built in the lifespan, with its timeouts); the allocator, the corpora and the
jobs all use it. A module that opened its own connection per request would lose the timeouts and leak
connections under load, so only the app factory may build a client."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BUILDS_A_CLIENT = re.compile(r"\bRedis\(|\bfrom_url\(|\bConnectionPool\(|\bRedisCluster\(")


def test_only_the_app_factory_builds_a_redis_client() -> None:
    builders = sorted(
        str(path.relative_to(ROOT))
        for package in ("service", "strategies", "verifiers")
        for path in (ROOT / package).rglob("*.py")
        if BUILDS_A_CLIENT.search(path.read_text())
    )
    assert builders == ["service/api/app.py"], builders
