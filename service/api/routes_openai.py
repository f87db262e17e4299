"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models. Thin: see openai_serving."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from service.api.jobs_openai import submit_background
from service.api.openai_serving import (
    PreparedCall,
    complete,
    prepare_chat,
    prepare_text,
    stream_plain,
    stream_ttc,
)
from service.api.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from service.api.state import ServiceState, StateDep

router = APIRouter(prefix="/v1")
IdempotencyKey = Annotated[str | None, Header(max_length=255)]  # background jobs (issue 13)


async def respond(call: PreparedCall, request: Request, state: ServiceState) -> Any:
    """Both endpoints alike once the request is prepared: stream it, or answer it whole."""
    engine, _ = state.require_engine()
    if call.stream:
        chunks = stream_ttc(call, state) if call.ttc else stream_plain(call, engine)
        return StreamingResponse(chunks, media_type="text/event-stream")
    return await complete(call, request, state)


@router.post("/chat/completions", summary="OpenAI chat completions, with optional `ttc`")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: StateDep, idempotency_key: IdempotencyKey = None
) -> Any:
    engine, _ = state.require_engine()
    call = prepare_chat(body, engine)
    if body.ttc is not None and body.ttc.background:  # background jobs (issue 13)
        return await submit_background(state, request, "chat.completions", body, idempotency_key)
    return await respond(call, request, state)


@router.post("/completions", summary="OpenAI text completions, with optional `ttc`")
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
