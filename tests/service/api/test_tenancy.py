"""A key's reservations through the Reserver the API injects (admission + Lua ledger), on the real Redis:
concurrent calls shrink to what is left and never overshoot; refunds leave the real spend; a call that cannot
fit one sample is a 429 naming the limit."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis

from service.api.auth import Caller
from service.api.protocol import AttemptSpend
from service.api.state import ServiceState
from service.api.tenancy import SpendMeter, Tenant
from service.runtime.budget import CallShape
from service.runtime.errors import QuotaExceeded
from service.runtime.settings import Settings
from service.store.keys import KeyLimits, KeyStore, QuotaLedger


def call(samples: int, max_tokens: int, keep_samples: bool = False) -> CallShape:
    return CallShape(10, samples, max_tokens, keep_samples, lambda width, length: 1.0 * width * (length + 10))


def test_concurrent_calls_spend_exactly_the_quota_and_not_one_token_more() -> None:
    async def scenario() -> None:
        namespace = f"test-tenancy-{uuid.uuid4().hex}"
        redis = Redis.from_url("redis://127.0.0.1:6379/0")
        state = ServiceState(Settings(admission_max_sequences=512, admission_key_share=1.0))
        minute = 60 * int(time.time() // 60 + 1)  # a fixed instant inside one minute window
        state.ledger = QuotaLedger(redis, namespace, clock=lambda: minute + 30.0)
        state.keys = KeyStore(redis, namespace)
        try:
            _, key = await state.keys.create("k", "user", KeyLimits(tokens_per_minute=1000))
            tenant = Tenant(Caller("k", "user", key), state)

            async def one(index: int) -> int:
                try:
                    grant = await tenant.reserve(call(4, 16 + index % 7), None)
                except QuotaExceeded as exc:
                    assert exc.code == "tokens_per_minute" and exc.retry_after is not None
                    assert 0 < exc.retry_after <= 60
                    return 0
                await asyncio.sleep(0.001 * (index % 3))
                spent = grant.samples * grant.max_tokens - index % 2  # odd calls stop one token early
                await grant.settle(spent, 1.0)
                return spent

            spent = await asyncio.gather(*(one(i) for i in range(60)))
            usage = await state.ledger.usage(key.id, key.limits)
            assert usage["windows"]["minute"]["tokens"]["spent"] == sum(spent)
            assert sum(spent) <= 1000
            assert 1000 - sum(spent) < 60  # filled up to the limit but for the early stops' refunds
            assert state.admission.used == 0 and state.admission.held == {}
            left = 1000 - sum(spent)
            with pytest.raises(QuotaExceeded) as refused:  # n choices of one token each cannot all fit
                await tenant.reserve(call(left + 1, 1, keep_samples=True), None)
            assert refused.value.code == "tokens_per_minute"
            assert state.admission.used == 0  # the refused call gave its sequences back
        finally:
            async for name in redis.scan_iter(match=f"{namespace}:*"):
                await redis.delete(name)
            await redis.aclose()

    asyncio.run(scenario())


def test_a_meter_holds_what_a_run_spent_and_what_its_calls_in_flight_hold_reserved() -> None:
    """A background job's run records this, so a run lost with its replica is still reported."""

    async def scenario() -> None:
        meter = SpendMeter()
        tenant = Tenant(Caller("anonymous", "user"), ServiceState(Settings()), meter)
        first = await tenant.reserve(call(2, 10), None)
        second = await tenant.reserve(call(1, 5), None)
        assert meter.reserved_tokens == 25 and meter.reserved_eflops == 2 * 20 + 15
        await first.settle(12, 3.0)
        assert meter.snapshot() == {
            "completion_tokens": 12,
            "eflops": 3.0,
            "reserved_tokens": 5,
            "reserved_eflops": 15.0,
        }
        await second.settle(5, 1.0)
        await second.settle(5, 1.0)  # settling twice counts once
        assert (meter.completion_tokens, meter.reserved_tokens) == (17, 0)
        assert meter.snapshot()["reserved_eflops"] == 0.0

    asyncio.run(scenario())


def test_a_meters_reserved_eflops_never_show_float_dust_below_zero() -> None:
    """Reservations of 1e11 eFLOPs released in another order than taken leave -1e-5, which a job's usage
    (reserved_eflops >= 0) refused with a 500."""

    async def scenario() -> None:
        meter = SpendMeter()
        tenant = Tenant(Caller("anonymous", "user"), ServiceState(Settings()), meter)
        sizes = (1e11 / 3, 0.1, 7e10 / 3, 2.7e11 / 7)  # released in this order, they leave -3.8e-6
        grants = [
            await tenant.reserve(CallShape(10, 1, 1, False, lambda w, n, size=size: size), None)
            for size in sizes
        ]
        for index in (1, 0, 3, 2):
            await grants[index].settle(1, 1.0)
        snapshot = meter.snapshot()
        assert snapshot["reserved_tokens"] == 0 and snapshot["reserved_eflops"] == 0.0
        AttemptSpend(attempt=1, **snapshot)  # what the job's usage validates

    asyncio.run(scenario())
