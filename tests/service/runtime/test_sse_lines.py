"""The remote engine's SSE reading splits lines only where the SSE spec does (pure; no engine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from service.runtime.engine_remote import sse_data


async def chunks(*parts: str) -> AsyncIterator[str]:
    for part in parts:
        yield part


def read(*parts: str) -> list[str]:
    async def collect() -> list[str]:
        return [data async for data in sse_data(chunks(*parts))]

    return asyncio.run(collect())


def test_a_unicode_line_separator_inside_an_event_does_not_cut_it() -> None:
    # vLLM writes a token's text raw in its JSON; among 20 top logprobs, U+2028 or NEL (U+0085) turn up,
    # and httpx's aiter_lines (str.splitlines) cut such an event in two
    event = '{"choices": [{"text": "a\u2028b\x85c"}]}'
    assert read(f"data: {event}\n\ndata: [DONE]\n\n") == [event, "[DONE]"]


def test_events_split_across_chunks_and_every_spec_line_ending() -> None:
    assert read('data: {"a"', ": 1}\r", "\ndata: 2\rdata: 3\n", "\n: comment\ndata: [DONE]") == [
        '{"a": 1}',
        "2",
        "3",
        "[DONE]",
    ]
