"""The app has one Redis client (built in the lifespan, with its timeouts); the allocator, the corpora and the
jobs all use it. A module that opened its own connection per request would lose the timeouts and leak
connections under load, so clients are built only by service/store/client.py (the app factory calls it once;
the entry points once for their single task)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BUILDS_A_CLIENT = re.compile(r"\bRedis\(|\bfrom_url\(|\bConnectionPool\(|\bRedisCluster\(")


def test_only_the_store_client_module_builds_a_redis_client() -> None:
    builders = sorted(
        str(path.relative_to(ROOT))
        for package in ("service", "strategies", "verifiers")
        for path in (ROOT / package).rglob("*.py")
        if BUILDS_A_CLIENT.search(path.read_text())
    )
    assert builders == ["service/store/client.py"], builders
