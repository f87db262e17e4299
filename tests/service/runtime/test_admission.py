"""Admission control as pure logic: bounded sequences in flight, a bounded queue, fair share between keys."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.runtime.admission import Admission
from service.runtime.errors import Overloaded


def test_capacity_bounds_sequences_and_queue_overflow_is_refused_at_once() -> None:
    async def scenario() -> None:
        admission = Admission(capacity=4, max_waiting=2, max_wait_seconds=5, key_share=1.0)
        assert await admission.acquire("a", 4) == 4
        waiters = [asyncio.create_task(admission.acquire("b", 1)) for _ in range(2)]
        await asyncio.sleep(0)
        assert len(admission.waiting) == 2
        with pytest.raises(Overloaded) as refused:
            await admission.acquire("c", 1)
        assert refused.value.status_code == 429 and refused.value.code == "admission_queue_full"
        assert refused.value.headers() == {"Retry-After": "1"}
        admission.release("a", 4)
        assert await asyncio.gather(*waiters) == [1, 1]
        assert admission.used == 2 and admission.held == {"b": 2}

    asyncio.run(scenario())


def test_one_key_never_takes_more_than_its_share() -> None:
    async def scenario() -> None:
        admission = Admission(capacity=8, max_waiting=8, max_wait_seconds=5, key_share=0.5)
        assert await admission.acquire("greedy", 64) == 4  # alone, still only half: room for small ones
        assert await admission.acquire("small", 1) == 1  # served at once while the huge call runs
        # greedy asks again while small waits for nothing: greedy is at its share, so it waits
        more = asyncio.create_task(admission.acquire("greedy", 64))
        await asyncio.sleep(0)
        assert not more.done()
        admission.release("greedy", 4)
        granted = await more
        assert 1 <= granted <= 4 and admission.used <= 8
        admission.release("greedy", granted)
        admission.release("small", 1)
        assert await admission.acquire("plain", 9, exact=True) == 9  # wider than the engine: runs alone
        assert admission.used == 9

    asyncio.run(scenario())


def test_freed_sequences_go_to_the_key_holding_fewest() -> None:
    async def scenario() -> None:
        admission = Admission(capacity=2, max_waiting=8, max_wait_seconds=5, key_share=1.0)
        assert await admission.acquire("a", 2) == 2
        first_a = asyncio.create_task(admission.acquire("a", 1))
        await asyncio.sleep(0)
        then_b = asyncio.create_task(admission.acquire("b", 1))
        await asyncio.sleep(0)
        admission.release("a", 1)  # a holds 1, b holds 0: b goes first although a asked earlier
        await asyncio.sleep(0.01)
        assert then_b.done() and not first_a.done()
        admission.release("a", 1)
        assert await first_a == 1

    asyncio.run(scenario())


def test_a_call_that_waits_too_long_is_a_429_and_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        admission = Admission(capacity=1, max_waiting=4, max_wait_seconds=0.05, key_share=1.0)
        await admission.acquire("a", 1)
        with pytest.raises(Overloaded) as refused:
            await admission.acquire("b", 1)
        assert refused.value.code == "admission_wait_timeout"
        assert admission.waiting == [] and admission.held == {"a": 1}

    asyncio.run(scenario())


def test_a_running_requests_next_call_goes_first_and_waits_up_to_its_deadline() -> None:
    """Past saturation, shed new requests early (a short wait, then 429) and finish the ones already running:
    their next call goes ahead of new ones and may wait until its own deadline, since their work is sunk."""

    async def scenario() -> None:
        admission = Admission(capacity=1, max_waiting=1, max_wait_seconds=0.05, key_share=1.0)
        await admission.acquire("a", 1)
        fresh = asyncio.create_task(admission.acquire("b", 1))
        await asyncio.sleep(0)
        deadline = time.monotonic() + 5
        running = asyncio.create_task(admission.acquire("c", 1, continuing=True, deadline=deadline))
        await asyncio.sleep(0.2)  # past max_wait_seconds, and the queue is "full" for new calls
        with pytest.raises(Overloaded):
            await fresh
        assert not running.done()
        admission.release("a", 1)
        assert await running == 1

    asyncio.run(scenario())


def test_a_running_requests_call_is_served_before_new_ones() -> None:
    async def scenario() -> None:
        admission = Admission(capacity=1, max_waiting=8, max_wait_seconds=5, key_share=1.0)
        await admission.acquire("a", 1)
        fresh = asyncio.create_task(admission.acquire("b", 1))
        await asyncio.sleep(0)
        running = asyncio.create_task(admission.acquire("c", 1, continuing=True))
        await asyncio.sleep(0)
        admission.release("a", 1)
        await asyncio.sleep(0.01)
        assert running.done() and not fresh.done()
        admission.release("c", 1)
        assert await fresh == 1

    asyncio.run(scenario())


def test_a_background_call_waits_behind_the_others_and_is_never_refused_for_the_queue() -> None:
    async def scenario() -> None:
        admission = Admission(capacity=1, max_waiting=1, max_wait_seconds=0.05, key_share=1.0)
        await admission.acquire("a", 1)
        deadline = time.monotonic() + 5
        background = asyncio.create_task(admission.acquire("job", 1, deadline=deadline, patient=True))
        await asyncio.sleep(0)
        fresh = asyncio.create_task(admission.acquire("b", 1))  # the queue of new calls has room for one
        await asyncio.sleep(0)
        admission.release("a", 1)
        await asyncio.sleep(0.01)
        assert fresh.done() and not background.done()  # interactive first
        await asyncio.sleep(0.2)  # far past max_wait_seconds: a background call still waits
        assert not background.done()
        admission.release("b", 1)
        assert await background == 1

    asyncio.run(scenario())


def test_a_call_waiting_only_for_its_own_keys_share_is_not_shed() -> None:
    """One caller whose wide calls fill its share while the engine has room is not overloading anything: its
    next call waits for its own calls to end (up to its deadline) instead of a 429 after the short wait."""

    async def scenario() -> None:
        admission = Admission(capacity=4, max_waiting=8, max_wait_seconds=0.05, key_share=0.5)
        assert await admission.acquire("a", 8) == 2  # its share, the engine half empty
        deadline = time.monotonic() + 5
        more = asyncio.create_task(admission.acquire("a", 8, deadline=deadline))
        await asyncio.sleep(0.2)
        assert not more.done()
        admission.release("a", 2)
        assert await more == 2

    asyncio.run(scenario())
