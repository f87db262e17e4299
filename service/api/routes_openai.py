"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models. Thin: see openai_serving."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from service.api.jobs_openai import submit_background
from service.api.openai_serving import (
    PreparedCall,
    complete,
    open_plain_stream,
    prepare_chat,
    prepare_text,
    stream_plain,
    stream_ttc,
)
from service.api.openapi import sse_event
from service.api.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    Job,
    ModelCard,
    ModelList,
)
from service.api.state import ServiceState, StateDep
from service.api.tenancy import tenant_of

router = APIRouter(prefix="/v1")
IdempotencyKey = Annotated[str | None, Header(max_length=255)]  # background jobs (issue 13)


async def respond(call: PreparedCall, request: Request, state: ServiceState) -> Any:
    """Both endpoints alike once the request is prepared: stream it, or answer it whole."""
    tenant = tenant_of(request, state)
    if call.stream and call.ttc:
        return StreamingResponse(stream_ttc(call, state, tenant), media_type="text/event-stream")
    if call.stream:
        deltas, stream_state = await open_plain_stream(call, state, tenant)
        return StreamingResponse(stream_plain(call, deltas, stream_state), media_type="text/event-stream")
    return await complete(call, request, state, tenant)


def _documented(model: type[BaseModel], chunk: str) -> dict[int | str, dict[str, Any]]:
    """The 200 response: the model as JSON, or server-sent chunks with `stream: true`; 202 with background."""
    return {
        200: {
            "model": model,
            "content": {"text/event-stream": {"schema": sse_event(f"a JSON {chunk}, then the text [DONE]")}},
        },
        202: {"model": Job, "description": "With `ttc.background`: the queued job."},
    }


@router.post(
    "/chat/completions",
    summary="OpenAI chat completions, with optional `ttc`",
    responses=_documented(ChatCompletionResponse, "chat.completion.chunk"),
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: StateDep, idempotency_key: IdempotencyKey = None
) -> Any:
    engine, _ = state.require_engine()
    call = prepare_chat(body, engine, state.settings.tool_call_parser)
    if body.ttc is not None and body.ttc.background:  # background jobs (issue 13)
        return await submit_background(state, request, "chat.completions", body, idempotency_key)
    return await respond(call, request, state)


@router.post(
    "/completions",
    summary="OpenAI text completions, with optional `ttc`",
    responses=_documented(CompletionResponse, "text_completion"),
)
async def completions(
    body: CompletionRequest, request: Request, state: StateDep, idempotency_key: IdempotencyKey = None
) -> Any:
    engine, _ = state.require_engine()
    call = prepare_text(body, engine)
    if body.ttc is not None and body.ttc.background:  # background jobs (issue 13)
        return await submit_background(state, request, "completions", body, idempotency_key)
    return await respond(call, request, state)


@router.get("/models", response_model=ModelList, summary="The served model")
async def models(state: StateDep) -> ModelList:
    engine, _ = state.require_engine()
    return ModelList(data=[ModelCard(id=engine.model_name, max_model_len=engine.max_model_len)])
