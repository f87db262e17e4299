"""Files for OpenAI's batch API (POST /v1/files, purpose `batch`, and the batches' output files) in Redis.

Redis layout (owner: this module; TTL: `job_ttl_seconds`, the life of the batch job that reads or writes it):

    ttc:file:<id>    hash    meta (JSON: id, owner, filename, purpose, bytes, created_at), content (bytes)

Small by design: a batch file is bounded by the request body cap (TTC_MAX_BODY_BYTES).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.runtime.errors import StorageUnavailable


def file_key(file_id: str) -> str:
    return f"ttc:file:{file_id}"


class FileStore:
    """Uploaded and generated files; one per request, on the app's Redis client."""

    def __init__(self, redis: Redis, ttl_seconds: int, timeout_seconds: float) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.timeout = timeout_seconds

    async def put(self, meta: dict[str, Any], content: bytes) -> None:
        key = file_key(meta["id"])
        try:
            async with asyncio.timeout(self.timeout * 2):
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.hset(key, mapping={"meta": json.dumps(meta), "content": content})
                    pipe.expire(key, self.ttl)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"Redis is unavailable: {type(exc).__name__}: {exc}") from exc

    async def meta(self, file_id: str) -> dict[str, Any] | None:
        raw = await self._get(file_id, "meta")
        return dict(json.loads(raw)) if raw else None

    async def content(self, file_id: str) -> bytes | None:
        return await self._get(file_id, "content")

    async def _get(self, file_id: str, field: str) -> bytes | None:
        try:
            async with asyncio.timeout(self.timeout * 2):
                value = await self.redis.hget(file_key(file_id), field)  # type: ignore[misc]
                return value.encode() if isinstance(value, str) else value
        except (RedisError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"Redis is unavailable: {type(exc).__name__}: {exc}") from exc
