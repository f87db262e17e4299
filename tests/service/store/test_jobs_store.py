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
        store = JobStore(redis, ttl_seconds=60, timeout_seconds=2, namespace=f"test-{uuid.uuid4().hex}")
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


def test_deployments_sharing_a_redis_never_take_each_others_jobs() -> None:
    """Each deployment (keys namespace) has its own queue: a replica of another deployment on the same Redis
    cannot resolve the job's owner key, and took (and failed) such jobs in CI."""

    async def scenario() -> None:
        redis = Redis.from_url("redis://127.0.0.1:6379/0")
        ours = JobStore(redis, ttl_seconds=60, timeout_seconds=2, namespace=f"test-{uuid.uuid4().hex}")
        theirs = JobStore(redis, ttl_seconds=60, timeout_seconds=2, namespace=f"test-{uuid.uuid4().hex}")
        try:
            for store in (ours, theirs):
                await store.ensure_group()
            job_id = f"job-{uuid.uuid4().hex}"
            record = {"id": job_id, "kind": "solve", "owner": "o", "status": "queued", "created_at": 1.0}
            await ours.create(record)
            assert await theirs.take("their-replica", idle_ms=60_000, block_ms=100) is None
            taken = await ours.take("our-replica", idle_ms=60_000, block_ms=100)
            assert taken is not None and taken[1] == job_id
            await ours.ack(taken[0])
        finally:
            await redis.delete(ours.queue, theirs.queue)
            await redis.aclose()

    asyncio.run(scenario())
