"""OpenAI-compatible chat and text completions, with or without test-time compute.

Without `ttc` a request goes straight to the engine and streams tokens as the engine makes them. With `ttc`
the strategy runs first (comments keep the stream alive meanwhile), then the chosen answer is sent.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request

from service.api.errors import stream_error_body
from service.api.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIUsage,
    TTCOptions,
    TTCReport,
    new_id,
)
from service.api.solver import (
    Solved,
    check_context,
    check_prompt_length,
    plain_budget,
    question_of,
    render,
    solve,
)
from service.api.state import ServiceState, cancel_on_disconnect
from service.api.tenancy import Tenant
from service.runtime.engine import (
    Delta,
    Engine,
    Generation,
    SamplingSpec,
    StreamState,
    TokenLogprob,
)
from service.runtime.errors import InvalidRequest
from strategies.selection import ranked

Kind = Literal["chat", "text"]


@dataclass(frozen=True)
class PreparedCall:
    """An OpenAI request reduced to what the engine needs."""

    kind: Kind
    request_id: str
    model: str
    prompt: str
    question: str
    spec: SamplingSpec
    stream: bool
    include_usage: bool
    logprobs: bool
    top_logprobs: int
    echo: str
    ttc: TTCOptions | None


def _stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 8 or any(not item for item in stops):
        raise InvalidRequest("stop takes at most 8 non-empty strings.", param="stop")
    return tuple(stops)


def _check_model(requested: str | None, engine: Engine) -> None:
    if requested and requested != engine.model_name:
        raise InvalidRequest(
            f"The model {requested!r} does not exist; this service serves {engine.model_name!r}.",
            param="model",
        )


def prepare_chat(body: ChatCompletionRequest, engine: Engine) -> PreparedCall:
    _check_model(body.model, engine)
    prompt = render(engine, body.messages)
    limit = body.completion_limit()
    check_prompt_length(engine, prompt, "messages")  # before the tokenisation just below
    default_limit = 256 if body.ttc else max(engine.max_model_len - len(engine.encode(prompt)), 1)
    max_tokens = limit or default_limit
    check_context(engine, prompt, max_tokens, "max_tokens")
    top = body.top_logprobs if body.logprobs else None
    spec = SamplingSpec(
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        stop=_stop_list(body.stop),
        seed=body.seed,
        logprobs=(top or 1) if body.logprobs else None,
    )
    return PreparedCall(
        "chat",
        new_id("chatcmpl"),
        engine.model_name,
        prompt,
        question_of(body.messages),
        spec,
        body.stream,
        bool(body.stream_options and body.stream_options.include_usage),
        body.logprobs,
        top or 0,
        "",
        body.ttc,
    )


def prepare_text(body: CompletionRequest, engine: Engine) -> PreparedCall:
    _check_model(body.model, engine)
    prompt = body.prompt_text()
    check_context(engine, prompt, body.max_tokens, "max_tokens")
    spec = SamplingSpec(
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        stop=_stop_list(body.stop),
        seed=body.seed,
        logprobs=body.logprobs if body.logprobs else None,
    )
    return PreparedCall(
        "text",
        new_id("cmpl"),
        engine.model_name,
        prompt,
        prompt,
        spec,
        body.stream,
        bool(body.stream_options and body.stream_options.include_usage),
        body.logprobs is not None,
        body.logprobs or 0,
        prompt if body.echo else "",
        body.ttc,
    )


# -- formatting ---------------------------------------------------------------------------------------------


def _chat_logprobs(entries: Sequence[TokenLogprob], top: int) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": entry.token,
                "logprob": entry.logprob,
                "bytes": list(entry.token.encode()),
                "top_logprobs": [
                    {"token": token, "logprob": value, "bytes": list(token.encode())}
                    for token, value in entry.top[:top]
                ],
            }
            for entry in entries
        ]
    }


def _text_logprobs(entries: Sequence[TokenLogprob], top: int, offset: int) -> dict[str, Any]:
    offsets, position = [], offset
    for entry in entries:
        offsets.append(position)
        position += len(entry.token)
    return {
        "tokens": [entry.token for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": [dict(entry.top[:top]) for entry in entries],
        "text_offset": offsets,
    }


def _choice(call: PreparedCall, index: int, text: str, finish: str | None, logprobs: Any) -> dict[str, Any]:
    if call.kind == "chat":
        return {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "logprobs": logprobs,
            "finish_reason": finish,
        }
    return {"index": index, "text": call.echo + text, "logprobs": logprobs, "finish_reason": finish}


def _usage(prompt_tokens: int, completion_tokens: int, cached: int) -> dict[str, Any]:
    return OpenAIUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details={"cached_tokens": cached},
    ).model_dump()


def _envelope(call: PreparedCall, chunk: bool) -> dict[str, Any]:
    kind = {"chat": "chat.completion", "text": "text_completion"}[call.kind]
    return {
        "id": call.request_id,
        "object": kind + (".chunk" if chunk and call.kind == "chat" else ""),
        "created": int(time.time()),
        "model": call.model,
    }


def _finish(reason: str | None) -> str | None:
    return "length" if reason == "abort" else reason


def plain_response(call: PreparedCall, generation: Generation) -> dict[str, Any]:
    choices = []
    for index, sample in enumerate(generation.samples):
        logprobs = None
        if call.logprobs and sample.logprobs is not None:
            logprobs = (
                _chat_logprobs(sample.logprobs, call.top_logprobs)
                if call.kind == "chat"
                else _text_logprobs(sample.logprobs, call.top_logprobs, len(call.echo))
            )
        choices.append(_choice(call, index, sample.text, _finish(sample.finish_reason), logprobs))
    return {
        **_envelope(call, chunk=False),
        "choices": choices,
        "usage": _usage(
            generation.prompt_tokens, generation.completion_tokens, generation.cached_prompt_tokens
        ),
    }


def _ttc_report(solved: Solved, with_candidates: bool) -> dict[str, Any]:
    result = solved.result
    return TTCReport(
        strategy=solved.strategy,
        params=result.params,
        answer=result.answer,
        abstained=result.abstained,
        usage=solved.usage(),
        budget=solved.budget_report(),
        candidates=solved.candidates() if with_candidates else None,
        details=result.details,
    ).model_dump()


def _ttc_texts(solved: Solved, n: int) -> list[str]:
    """The chosen text first, then the next best distinct candidates up to n."""
    texts = [solved.result.text]
    selection = solved.result.params.get("selection", "majority")
    for candidate in ranked(solved.result.candidates, selection):
        if len(texts) >= n:
            break
        if candidate.text not in texts:
            texts.append(candidate.text)
    return texts


def ttc_response(call: PreparedCall, solved: Solved) -> dict[str, Any]:
    usage = solved.usage()
    choices = [
        _choice(call, index, text, "stop", None) for index, text in enumerate(_ttc_texts(solved, call.spec.n))
    ]
    return {
        **_envelope(call, chunk=False),
        "choices": choices,
        "usage": _usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens),
        "ttc": _ttc_report(solved, bool(call.ttc and call.ttc.return_candidates)),
    }


# -- running ------------------------------------------------------------------------------------------------


async def _solve(call: PreparedCall, state: ServiceState, tenant: Tenant, progress: Any = None) -> Solved:
    assert call.ttc is not None
    sampling = dataclasses.replace(call.spec, n=1, logprobs=None)
    return await solve(state, call.ttc, call.prompt, call.question, sampling, progress, tenant)


async def _plain(call: PreparedCall, state: ServiceState, tenant: Tenant) -> Generation:
    """One engine call with all n choices, inside the key's ceiling, quota and the admission queue."""
    engine, _ = state.require_engine()
    budget = plain_budget(state, tenant)
    async with tenant.slot(budget.limits.seconds):
        return await budget.generate(engine, call.prompt, call.spec, keep_samples=True)


async def complete(
    call: PreparedCall, request: Request, state: ServiceState, tenant: Tenant
) -> dict[str, Any]:
    if call.ttc is not None:
        solved = await cancel_on_disconnect(request, _solve(call, state, tenant))
        return ttc_response(call, solved)
    generation = await cancel_on_disconnect(request, _plain(call, state, tenant))
    return plain_response(call, generation)


async def open_plain_stream(
    call: PreparedCall, state: ServiceState, tenant: Tenant
) -> tuple[AsyncIterator[Delta], StreamState]:
    """Start a plain streamed call far enough that the concurrency slot, the quota and admission are held (or
    refused with a 429) before any response header is sent; returns the deltas, first one included."""
    engine, _ = state.require_engine()
    budget = plain_budget(state, tenant)
    stream_state = StreamState()

    async def held() -> AsyncGenerator[Delta]:
        async with tenant.slot(budget.limits.seconds):
            async for delta in budget.stream(engine, call.prompt, call.spec, stream_state):
                yield delta

    deltas = held()
    try:
        first = await anext(deltas)
    except StopAsyncIteration:
        first = None

    async def primed() -> AsyncIterator[Delta]:
        try:
            if first is not None:
                yield first
                async for delta in deltas:
                    yield delta
        finally:
            await deltas.aclose()

    return primed(), stream_state


def _chunk(call: PreparedCall, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
    body = {**_envelope(call, chunk=True), "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def _delta_choice(
    call: PreparedCall, index: int, text: str, finish: str | None, logprobs: Any = None
) -> dict[str, Any]:
    if call.kind == "chat":
        return {
            "index": index,
            "delta": {"content": text} if text else {},
            "logprobs": logprobs,
            "finish_reason": finish,
        }
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def _role_chunks(call: PreparedCall) -> list[str]:
    if call.kind != "chat":
        return []
    return [
        _chunk(
            call,
            [
                {
                    "index": index,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        )
        for index in range(call.spec.n)
    ]


async def stream_plain(
    call: PreparedCall, deltas: AsyncIterator[Delta], state: StreamState
) -> AsyncIterator[str]:
    """Tokens as the engine produces them; role first, usage last when asked, then [DONE].
    If the client goes away, Starlette cancels this generator and the engine request is aborted."""
    completion_tokens = 0
    try:
        for chunk in _role_chunks(call):
            yield chunk
        if call.echo:
            for index in range(call.spec.n):
                yield _chunk(call, [_delta_choice(call, index, call.echo, None)])
        offsets = [len(call.echo)] * call.spec.n
        delta: Delta
        async for delta in deltas:
            completion_tokens += len(delta.token_ids)
            logprobs = None
            if call.logprobs and delta.logprobs:
                logprobs = (
                    _chat_logprobs(delta.logprobs, call.top_logprobs)
                    if call.kind == "chat"
                    else _text_logprobs(delta.logprobs, call.top_logprobs, offsets[delta.index])
                )
            offsets[delta.index] += len(delta.text)
            yield _chunk(
                call, [_delta_choice(call, delta.index, delta.text, _finish(delta.finish_reason), logprobs)]
            )
        if call.include_usage:
            yield _chunk(call, [], _usage(state.prompt_tokens, completion_tokens, state.cached_prompt_tokens))
    except Exception as exc:  # ours as they are; anything else logged, and generic for the client
        yield f"data: {json.dumps(stream_error_body(exc))}\n\n"
    yield "data: [DONE]\n\n"


async def stream_ttc(call: PreparedCall, state: ServiceState, tenant: Tenant) -> AsyncIterator[str]:
    """Role chunk at once, SSE comments with progress while the strategy runs, then the chosen answer(s)."""
    import asyncio

    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(_solve(call, state, tenant, progress=events.put_nowait))
    try:
        for chunk in _role_chunks(call):
            yield chunk
        while not task.done():
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({task, getter}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield f": progress {json.dumps(getter.result())}\n\n"
            else:
                getter.cancel()
                if not done:
                    yield ": keep-alive\n\n"
        try:
            solved = task.result()
        except Exception as exc:  # ours as they are; anything else logged, and generic for the client
            yield f"data: {json.dumps(stream_error_body(exc))}\n\n"
            yield "data: [DONE]\n\n"
            return
        for index, text in enumerate(_ttc_texts(solved, call.spec.n)):
            yield _chunk(call, [_delta_choice(call, index, text, None)])
            yield _chunk(call, [_delta_choice(call, index, "", "stop")])
        report = _ttc_report(solved, call.ttc is not None and call.ttc.return_candidates)
        usage = solved.usage()
        final: dict[str, Any] = {**_envelope(call, chunk=True), "choices": [], "ttc": report}
        if call.include_usage:
            final["usage"] = _usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)
        yield f"data: {json.dumps(final)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        task.cancel()
