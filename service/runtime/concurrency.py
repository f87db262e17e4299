"""Fan-out that never leaves work behind: `asyncio.gather` lets the siblings of a failed awaitable run on
(engine calls nobody will read, still holding KV cache and budget); `gather_or_cancel` runs them in an
`asyncio.TaskGroup`, which cancels the siblings at the first failure and waits until they are gone, and then
raises that first failure itself (not an ExceptionGroup), so the one error mapping still sees our
ServiceError subclasses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def gather_or_cancel(*awaitables: Awaitable[T]) -> list[T]:
    """The results in order, like `asyncio.gather`; on the first failure every sibling is cancelled (and
    awaited) before the failure is raised."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_wait(awaitable)) for awaitable in awaitables]
    except BaseExceptionGroup as failed:
        first = next(
            (error for error in failed.exceptions if not isinstance(error, asyncio.CancelledError)),
            failed.exceptions[0],
        )
        raise first from None
    return [task.result() for task in tasks]
