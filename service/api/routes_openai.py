"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models. Thin: see openai_serving."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from service.api.openai_serving import (
    PreparedCall,
    complete,
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
    ModelCard,
    ModelList,
)
from service.api.state import ServiceState, StateDep

router = APIRouter(prefix="/v1")


async def respond(call: PreparedCall, request: Request, state: ServiceState) -> Any:
    """Both endpoints alike once the request is prepared: stream it, or answer it whole."""
    engine, _ = state.require_engine()
    if call.stream:
        chunks = stream_ttc(call, state) if call.ttc else stream_plain(call, engine)
        return StreamingResponse(chunks, media_type="text/event-stream")
    return await complete(call, request, state)


def _documented(model: type[BaseModel], chunk: str) -> dict[int | str, dict[str, Any]]:
    """The 200 response: the model as JSON, or server-sent chunks with `stream: true`."""
    return {
        200: {
            "model": model,
            "content": {"text/event-stream": {"schema": sse_event(f"a JSON {chunk}, then the text [DONE]")}},
        }
    }


@router.post(
    "/chat/completions",
    summary="OpenAI chat completions, with optional `ttc`",
    responses=_documented(ChatCompletionResponse, "chat.completion.chunk"),
)
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep) -> Any:
    engine, _ = state.require_engine()
    return await respond(prepare_chat(body, engine, state.settings.tool_call_parser), request, state)


@router.post(
    "/completions",
    summary="OpenAI text completions, with optional `ttc`",
    responses=_documented(CompletionResponse, "text_completion"),
)
async def completions(body: CompletionRequest, request: Request, state: StateDep) -> Any:
    engine, _ = state.require_engine()
    return await respond(prepare_text(body, engine), request, state)


@router.get("/models", response_model=ModelList, summary="The served model")
async def models(state: StateDep) -> ModelList:
    engine, _ = state.require_engine()
    return ModelList(data=[ModelCard(id=engine.model_name, max_model_len=engine.max_model_len)])
