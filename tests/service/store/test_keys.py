"""The key store and the quota ledger against the real Redis (each test in its own namespace)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from service.runtime.errors import InvalidRequest, NotFound
from service.store.keys import KeyLimits, KeyStore, QuotaLedger, Ticket, key_id

REDIS_URL = "redis://127.0.0.1:6379/0"


def with_redis(scenario: Callable[[Redis, str], Awaitable[None]]) -> None:
    """Run `scenario` on a fresh client in a namespace of its own, removed afterwards."""
    namespace = f"test-keys-{uuid.uuid4().hex}"

    async def run() -> None:
        client = Redis.from_url(REDIS_URL)
        try:
            await scenario(client, namespace)
        finally:
            await cleanup(client, namespace)
            await client.aclose()

    asyncio.run(run())


async def cleanup(redis: Redis, namespace: str) -> None:
    async for name in redis.scan_iter(match=f"{namespace}:*"):
        await redis.delete(name)


def test_keys_are_stored_hashed_and_revocation_is_immediate() -> None:
    with_redis(_keys_hashed_and_revoked)


async def _keys_hashed_and_revoked(redis: Redis, namespace: str) -> None:
    store = KeyStore(redis, namespace)
    assert not await store.any()
    secret, record = await store.create("alice", "user", KeyLimits(tokens_per_minute=10))
    assert record.id == key_id(secret)
    assert await store.any()
    found = await store.lookup(secret)
    assert found is not None and found.name == "alice" and found.limits.tokens_per_minute == 10
    assert await store.lookup(secret + "x") is None
    stored = [name async for name in redis.scan_iter(match=f"{namespace}:*")]
    for name in stored:
        kind = (await redis.type(name)).decode()
        values = (await redis.hgetall(name)).items() if kind == "hash" else []
        assert secret.encode() not in name and all(secret.encode() not in v for _, v in values)
    with pytest.raises(InvalidRequest):
        await store.create("alice", "user", KeyLimits())
    assert [item.name for item in await store.list()] == ["alice"]
    await store.revoke("alice")
    assert await store.lookup(secret) is None
    assert not await store.any()
    with pytest.raises(NotFound):
        await store.get("alice")


def test_concurrent_reservations_never_overshoot_and_refunds_leave_real_spend() -> None:
    with_redis(_reservations)


async def _reservations(redis: Redis, namespace: str) -> None:
    limits = KeyLimits(tokens_per_minute=1000, eflops_per_day=5000.0)
    ledger = QuotaLedger(redis, namespace, clock=lambda: 1_800_000_030.0)  # one fixed minute
    ident = "k" + uuid.uuid4().hex

    async def one(index: int) -> Ticket | None:
        tokens, eflops = 37 + index % 5, 100.0 + index
        attempt = await ledger.try_reserve(ident, limits, tokens, eflops)
        return Ticket(ident, attempt.counters, tokens, eflops) if attempt.granted else None

    tickets = [ticket for ticket in await asyncio.gather(*(one(i) for i in range(80))) if ticket]
    reserved_tokens = sum(ticket.tokens for ticket in tickets)
    reserved_eflops = sum(ticket.eflops for ticket in tickets)
    assert reserved_tokens <= 1000 and reserved_eflops <= 5000.0
    assert 1000 - reserved_tokens < 41 or 5000.0 - reserved_eflops < 180  # it filled up to the limit
    usage = await ledger.usage(ident, limits)
    assert usage["windows"]["minute"]["tokens"]["spent"] == reserved_tokens
    # each call really spent half its reservation: the rest comes back
    await asyncio.gather(*(ledger.settle(t, t.tokens // 2, t.eflops / 2) for t in tickets))
    usage = await ledger.usage(ident, limits)
    spent = sum(ticket.tokens // 2 for ticket in tickets)
    assert usage["windows"]["minute"]["tokens"]["spent"] == spent
    assert usage["windows"]["day"]["tokens"]["spent"] == spent
    assert usage["windows"]["day"]["eflops"]["spent"] == pytest.approx(reserved_eflops / 2)
    assert usage["total"]["tokens"] == spent
    refused = await ledger.try_reserve(ident, limits, 1001 - spent, 1.0)
    assert not refused.granted and refused.overflow == 0  # tokens per minute is the first counter
    assert refused.current[0] == spent


def test_concurrency_limit_counts_running_requests() -> None:
    with_redis(_concurrency)


async def _concurrency(redis: Redis, namespace: str) -> None:
    ledger = QuotaLedger(redis, namespace)
    assert await ledger.enter("k", "a", 2, 60)
    assert await ledger.enter("k", "b", 2, 60)
    assert not await ledger.enter("k", "c", 2, 60)
    await ledger.leave("k", "a")
    assert await ledger.enter("k", "c", 2, 60)
    assert await ledger.enter("k", "d", 2, -1) is False  # still two running
