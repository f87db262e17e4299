"""gather_or_cancel: when one call fails its siblings are cancelled (not left running), and the failure
itself is raised (not an ExceptionGroup), so the error mapping still sees a ServiceError."""

import asyncio

import pytest

from service.runtime.concurrency import gather_or_cancel
from service.runtime.errors import InvalidRequest


def test_results_come_back_in_order() -> None:
    async def value(x: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return x

    assert asyncio.run(gather_or_cancel(value(1, 0.02), value(2, 0.0), value(3, 0.01))) == [1, 2, 3]
    assert asyncio.run(gather_or_cancel()) == []


def test_a_failure_cancels_the_siblings_and_is_raised_itself() -> None:
    cancelled: list[int] = []
    finished: list[int] = []

    async def slow(index: int) -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        finished.append(index)
        return index

    async def failing() -> int:
        await asyncio.sleep(0.01)
        raise InvalidRequest("bad", param="x")

    async def main() -> None:
        with pytest.raises(InvalidRequest, match="bad"):
            await asyncio.wait_for(gather_or_cancel(slow(1), failing(), slow(2)), timeout=5)
        assert sorted(cancelled) == [1, 2] and finished == []
        assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []

    asyncio.run(main())
