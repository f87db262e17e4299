"""The affinity key of one test-time-compute request: every engine call of the request carries it.

A tree search's branches and a revision's attempts share a long prefix; on several engines they are cheap only
if they all land on the engine that already holds that prefix in its KV cache. The solver opens an
`affinity_scope` around a strategy run; the remote engine reads the key and sends it as a header that vLLM's
router hashes on (consistent-hash routing), or hashes it itself over a list of servers.

A context variable, not a global: each asyncio task sees its own copy, and the tasks a strategy spawns (the
branches of a search) inherit the key of the request that spawned them, so concurrent requests never mix keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[str | None] = ContextVar("ttc_engine_affinity", default=None)


def current_affinity() -> str | None:
    """The key of the request whose task is running, or None outside a strategy run."""
    return _current.get()


@contextmanager
def affinity_scope(key: str | None = None) -> Iterator[str]:
    """Run the block with `key` (a fresh random one by default) as its affinity key."""
    value = key or uuid.uuid4().hex
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)
