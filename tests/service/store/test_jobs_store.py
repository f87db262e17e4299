"""The job store against the real (shared) Redis: the consumer group may be created by every replica at once,
and idempotency keys are claimed once."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from service.store.jobs import JobStore, fingerprint, idempotency_key


def test_every_replica_may_ensure_the_group_and_keys_are_claimed_once() -> None:
    async def scenario() -> None:
        redis = Redis.from_url("redis://127.0.0.1:6379/0")
        store = JobStore(redis, ttl_seconds=60, timeout_seconds=2)
        try:
            await asyncio.gather(*(store.ensure_group() for _ in range(3)))
            await store.ensure_group()
            key = idempotency_key("tester", uuid.uuid4().hex)
            first = {"fingerprint": fingerprint("/v1/solve", {"a": 1}), "job": "job-1"}
            assert await store.claim_key(key, first, 60) is None
            assert await store.claim_key(key, {"fingerprint": "other", "job": "job-2"}, 60) == first
            await store.drop_key(key)
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_fingerprints_depend_on_path_and_body_not_key_order() -> None:
    assert fingerprint("/v1/solve", {"a": 1, "b": 2}) == fingerprint("/v1/solve", {"b": 2, "a": 1})
    assert fingerprint("/v1/solve", {"a": 1}) != fingerprint("/v1/solve", {"a": 2})
    assert fingerprint("/v1/solve", {"a": 1}) != fingerprint("/v1/corpora/x/documents", {"a": 1})
