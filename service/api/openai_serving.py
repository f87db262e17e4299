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
    Sample,
    SamplingSpec,
    StreamState,
    StructuredOutput,
    TokenLogprob,
)
from service.runtime.errors import InvalidRequest, NotFound
from service.runtime.tool_calls import parse_tool_calls
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
    tools: ToolUse | None = None
    # the sampling fields the client set; a ttc strategy's own defaults fill the rest
    sampling_given: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ToolUse:
    """A chat request with `tools`, answered through vLLM's tool-call parser."""

    parser: str
    tokenizer: Any
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: Any


def _stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 8 or any(not item for item in stops):
        raise InvalidRequest("stop takes at most 8 non-empty strings.", param="stop")
    return tuple(stops)


def _check_model(requested: str | None, engine: Engine) -> None:
    """OpenAI and vLLM answer an unknown model with 404 model_not_found (the client's NotFoundError)."""
    if requested and requested != engine.model_name:
        raise NotFound(
            f"The model `{requested}` does not exist; this service serves `{engine.model_name}`.",
            param="model",
            code="model_not_found",
        )


def _check_greedy(n: int, temperature: float, ttc: TTCOptions | None) -> None:
    """vLLM refuses n > 1 with greedy sampling (the samples would be identical); refuse it before any work, so
    a stream never starts only to die. With `ttc`, n is the number of choices, not engine samples."""
    if ttc is None and n > 1 and temperature == 0:
        raise InvalidRequest(f"n must be 1 when using greedy sampling (temperature 0), got {n}.", param="n")


def _refuse_unsupported(body: ChatCompletionRequest | CompletionRequest, tool_parser: str | None) -> None:
    """Parameters this service cannot honour are a 400 naming them, as vLLM answers; never silently dropped."""
    if isinstance(body, CompletionRequest):
        if body.suffix is not None:
            raise InvalidRequest(
                "suffix is not supported: this model cannot fill in the middle (no FIM template).",
                param="suffix",
            )
        return
    for name in ("audio", "prediction", "web_search_options"):
        if getattr(body, name) is not None:
            raise InvalidRequest(f"`{name}` is not supported by this service.", param=name)
    if body.modalities is not None and body.modalities != ["text"]:
        raise InvalidRequest("Only the text modality is supported.", param="modalities")
    for name in ("functions", "function_call"):
        if getattr(body, name) is not None:
            raise InvalidRequest(f"`{name}` is deprecated and not supported; use `tools`.", param=name)
    wants_tools = bool(body.tools) or body.tool_choice not in (None, "none")
    if body.tools == []:
        raise InvalidRequest("`tools` must not be an empty array.", param="tools")
    if wants_tools and body.ttc is not None:
        raise InvalidRequest(
            "`tools` cannot be combined with `ttc`: no test-time compute strategy can vote on or verify tool "
            "calls. Send the request without `ttc`.",
            param="tools",
        )
    if wants_tools and tool_parser is None:
        raise InvalidRequest(
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set: this '
            "service calls tools only when its operator sets TTC_TOOL_CALL_PARSER.",
            param="tools",
        )
    if body.tool_choice is not None and not body.tools and body.tool_choice != "none":
        raise InvalidRequest("When using `tool_choice`, `tools` must be set.", param="tool_choice")
    if wants_tools and body.tool_choice not in (None, "auto"):
        raise InvalidRequest(
            'Only tool_choice "auto" (or "none") is supported: the parser reads the calls the model chose.',
            param="tool_choice",
        )
    if wants_tools and body.stream:
        raise InvalidRequest("Streaming with `tools` is not supported; send stream: false.", param="stream")


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """Token ids (strings in JSON) as ints; an id beyond the vocabulary is the engine's 400 to give."""
    return tuple((int(token), float(value)) for token, value in (bias or {}).items())


def structured_output(body: ChatCompletionRequest | CompletionRequest) -> StructuredOutput | None:
    """response_format (OpenAI) or structured_outputs (vLLM) as one guided-decoding constraint; response_format
    wins when both are given, as in vLLM."""
    fmt = body.response_format
    if fmt is not None and fmt.type == "json_object":
        return StructuredOutput(json_object=True)
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        return StructuredOutput(json=json.dumps(fmt.json_schema.schema_ or {"type": "object"}))
    options = body.structured_outputs
    if options is None:
        return None
    schema = options.json_
    return StructuredOutput(
        json=(schema if isinstance(schema, str) else json.dumps(schema)) if schema is not None else None,
        regex=options.regex,
        choice=tuple(options.choice) if options.choice is not None else None,
        grammar=options.grammar,
        json_object=options.json_object,
        disable_any_whitespace=options.disable_any_whitespace,
        disable_additional_properties=options.disable_additional_properties,
        whitespace_pattern=options.whitespace_pattern,
    )


def _spec(
    body: ChatCompletionRequest | CompletionRequest, max_tokens: int, logprobs: int | None
) -> SamplingSpec:
    """Every sampling parameter of the request, for the engine (and, with ttc, for every sample)."""
    if body.min_tokens > max_tokens:
        raise InvalidRequest(
            f"min_tokens ({body.min_tokens}) must be at most max_tokens ({max_tokens}).", param="min_tokens"
        )
    return SamplingSpec(
        n=body.n,
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        stop=_stop_list(body.stop),
        seed=body.seed,
        logprobs=logprobs,
        include_stop_str_in_output=body.include_stop_str_in_output,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=body.repetition_penalty if body.repetition_penalty is not None else 1.0,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        logit_bias=_logit_bias(body.logit_bias),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        bad_words=tuple(body.bad_words or ()),
        allowed_token_ids=tuple(body.allowed_token_ids) if body.allowed_token_ids is not None else None,
        structured=structured_output(body),
    )


# OpenAI request field -> the SamplingSpec field a strategy may have its own default for
_SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "stop": "stop",
    "seed": "seed",
}


def sampling_given(body: ChatCompletionRequest | CompletionRequest) -> frozenset[str]:
    """The sampling fields the client set, named as in SamplingSpec."""
    return frozenset(_SAMPLING_FIELDS[name] for name in body.model_fields_set if name in _SAMPLING_FIELDS)


def prepare_chat(body: ChatCompletionRequest, engine: Engine, tool_parser: str | None = None) -> PreparedCall:
    _check_model(body.model, engine)
    _check_greedy(body.n, body.temperature, body.ttc)
    _refuse_unsupported(body, tool_parser)
    tools = None
    if body.tools and body.tool_choice != "none" and tool_parser is not None:
        messages = [message.template_dict() for message in body.messages]
        tools = ToolUse(
            tool_parser, getattr(engine, "hf_tokenizer", None), messages, body.tools, body.tool_choice
        )
        prompt = engine.render_chat(messages, tools=body.tools)
    else:
        prompt = render(engine, body.messages)
    limit = body.completion_limit()
    check_prompt_length(engine, prompt, "messages")  # before the tokenisation just below
    default_limit = 256 if body.ttc else max(engine.max_model_len - len(engine.encode(prompt)), 1)
    max_tokens = limit or default_limit
    check_context(engine, prompt, max_tokens, "max_tokens")
    top = body.top_logprobs if body.logprobs else None
    spec = _spec(body, max_tokens, (top or 1) if body.logprobs else None)
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
        tools,
        sampling_given(body),
    )


def prepare_text(body: CompletionRequest, engine: Engine) -> PreparedCall:
    _check_model(body.model, engine)
    _check_greedy(body.n, body.temperature, body.ttc)
    _refuse_unsupported(body, None)
    prompt = body.prompt_text()
    check_context(engine, prompt, body.max_tokens, "max_tokens")
    spec = _spec(body, body.max_tokens, body.logprobs if body.logprobs else None)
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
        sampling_given=sampling_given(body),
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
    """OpenAI's finish reasons: a sample cut short (deadline abort, or a deepconf trace stopped for low
    confidence) ended before its natural end, which OpenAI clients know as "length"."""
    return "length" if reason in ("abort", "stopped") else reason


def _tool_choice(
    call: PreparedCall, tools: ToolUse, index: int, sample: Sample, logprobs: Any
) -> dict[str, Any]:
    """A chat choice whose text went through vLLM's tool-call parser: tool_calls, finish_reason tool_calls."""
    parsed = parse_tool_calls(
        tools.parser, tools.tokenizer, tools.messages, tools.tools, tools.tool_choice, sample.text
    )
    choice = _choice(call, index, parsed.content or "", _finish(sample.finish_reason), logprobs)
    if parsed.tool_calls:
        choice["message"] = {"role": "assistant", "content": parsed.content, "tool_calls": parsed.tool_calls}
        choice["finish_reason"] = "tool_calls"
    return choice


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
        if call.tools is not None:
            choices.append(_tool_choice(call, call.tools, index, sample, logprobs))
            continue
        choices.append(_choice(call, index, sample.text, _finish(sample.finish_reason), logprobs))
    return {
        **_envelope(call, chunk=False),
        "choices": choices,
        "usage": _usage(
            generation.prompt_tokens, generation.completion_tokens, generation.cached_prompt_tokens
        ),
    }


def _ttc_report(solved: Solved, with_candidates: bool, n: int) -> dict[str, Any]:
    result = solved.result
    returned = len(_ttc_choices(solved, n))
    warnings = []
    if returned < n:
        warnings.append(
            f"n={n} choices were asked for, but the strategy produced only {returned} distinct candidate"
            f"{'s' if returned != 1 else ''}; {returned} came back."
        )
    return TTCReport(
        strategy=solved.strategy,
        params=result.params,
        answer=result.answer,
        abstained=result.abstained,
        choices_returned=returned,
        warnings=warnings,
        usage=solved.usage(),
        budget=solved.budget_report(),
        candidates=solved.candidates() if with_candidates else None,
        details=result.details,
    ).model_dump()


def _ttc_choices(solved: Solved, n: int) -> list[tuple[str, str]]:
    """(text, finish_reason) of the chosen candidate first, then of the next best distinct ones up to n. The
    finish reason is the candidate's own: `length` when it was cut off, as a plain request would say."""
    result = solved.result
    chosen_finish = next(
        (candidate.finish_reason for candidate in result.candidates if candidate.text == result.text), None
    )
    choices = [(result.text, _finish(chosen_finish) or "stop")]
    selection = result.params.get("selection", "majority")
    for candidate in ranked(result.candidates, selection):
        if len(choices) >= n:
            break
        if all(candidate.text != text for text, _ in choices):
            choices.append((candidate.text, _finish(candidate.finish_reason) or "stop"))
    return choices


def ttc_response(call: PreparedCall, solved: Solved) -> dict[str, Any]:
    usage = solved.usage()
    choices = [
        _choice(call, index, text, finish, None)
        for index, (text, finish) in enumerate(_ttc_choices(solved, call.spec.n))
    ]
    return {
        **_envelope(call, chunk=False),
        "choices": choices,
        "usage": _usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens),
        "ttc": _ttc_report(solved, bool(call.ttc and call.ttc.return_candidates), call.spec.n),
    }


# -- running ------------------------------------------------------------------------------------------------


async def _solve(call: PreparedCall, state: ServiceState, tenant: Tenant, progress: Any = None) -> Solved:
    assert call.ttc is not None
    sampling = dataclasses.replace(call.spec, n=1, logprobs=None)
    return await solve(
        state,
        call.ttc,
        call.prompt,
        call.question,
        sampling,
        progress,
        tenant,
        sampling_given=call.sampling_given,
    )


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


def _role_chunks(call: PreparedCall, skip: int | None = None) -> list[str]:
    """One role chunk per choice (chat only), leaving out choice `skip` (its role rides on its first token)."""
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
        if index != skip
    ]


async def stream_plain(
    call: PreparedCall, deltas: AsyncIterator[Delta], state: StreamState
) -> AsyncIterator[str]:
    """Tokens as the engine produces them; usage last when asked, then [DONE]. Nothing is sent before the
    engine's first token (as vLLM does), so a client's time to first token is the engine's: the role travels
    in the first token's chunk. If the client goes away, Starlette cancels this generator and the engine
    request is aborted."""
    completion_tokens = 0
    first = True
    role_with: int | None = None  # the choice whose first chunk still has to carry the role
    try:
        offsets = [len(call.echo)] * call.spec.n
        delta: Delta
        async for delta in deltas:
            if first:
                first, role_with = False, delta.index
                for chunk in _role_chunks(call, skip=delta.index):
                    yield chunk
                if call.echo:
                    for index in range(call.spec.n):
                        yield _chunk(call, [_delta_choice(call, index, call.echo, None)])
            completion_tokens += len(delta.token_ids)
            logprobs = None
            if call.logprobs and delta.logprobs:
                logprobs = (
                    _chat_logprobs(delta.logprobs, call.top_logprobs)
                    if call.kind == "chat"
                    else _text_logprobs(delta.logprobs, call.top_logprobs, offsets[delta.index])
                )
            offsets[delta.index] += len(delta.text)
            choice = _delta_choice(call, delta.index, delta.text, _finish(delta.finish_reason), logprobs)
            if call.kind == "chat" and delta.index == role_with:
                choice["delta"] = {"role": "assistant", "content": delta.text}
                role_with = None
            yield _chunk(call, [choice])
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
        for index, (text, finish) in enumerate(_ttc_choices(solved, call.spec.n)):
            yield _chunk(call, [_delta_choice(call, index, text, None)])
            yield _chunk(call, [_delta_choice(call, index, "", finish)])
        report = _ttc_report(solved, call.ttc is not None and call.ttc.return_candidates, call.spec.n)
        usage = solved.usage()
        final: dict[str, Any] = {**_envelope(call, chunk=True), "choices": [], "ttc": report}
        if call.include_usage:
            final["usage"] = _usage(usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens)
        yield f"data: {json.dumps(final)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        task.cancel()
