"""`ttc.background` on the OpenAI endpoints: the request becomes a background job whose result is the very
completion object a synchronous call returns (service/api/jobs.py runs it on any replica)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from service.api import jobs
from service.api.auth import caller_of
from service.api.openai_serving import PreparedCall, prepare_chat, prepare_text, ttc_response
from service.api.protocol import ChatCompletionRequest, CompletionRequest
from service.api.solver import limits_of, solve
from service.api.state import ServiceState
from service.api.tenancy import Tenant, tenant_of
from service.runtime.errors import InvalidRequest

PATHS = {"chat.completions": "/v1/chat/completions", "completions": "/v1/completions"}


async def submit_background(
    state: ServiceState,
    request: Request,
    kind: str,
    body: ChatCompletionRequest | CompletionRequest,
    idempotency: str | None,
) -> JSONResponse:
    """Checked like a synchronous call (the route prepared it already), then queued: 202 with the job."""
    assert body.ttc is not None
    if body.stream:
        raise InvalidRequest(
            "`stream` and `ttc.background` exclude each other: stream GET /v1/jobs/{id}/events.",
            param="stream",
        )
    limits_of(body.ttc.budget, state.settings, tenant_of(request, state).ceiling())
    payload = body.model_dump(mode="json", exclude_unset=True)
    job = await jobs.submit(state, caller_of(request), kind, PATHS[kind], payload, idempotency)
    return JSONResponse(job.model_dump(mode="json"), status_code=202)


async def _run(call: PreparedCall, state: ServiceState, tenant: Tenant, progress: Any) -> dict[str, Any]:
    assert call.ttc is not None
    sampling = dataclasses.replace(call.spec, n=1, logprobs=None)
    solved = await solve(state, call.ttc, call.prompt, call.question, sampling, progress, tenant)
    return ttc_response(call, solved)


def _foreground(request: dict[str, Any]) -> dict[str, Any]:
    return {**request, "ttc": {**request["ttc"], "background": False}}


async def run_chat_job(
    state: ServiceState, tenant: Tenant, request: dict[str, Any], progress: Any
) -> dict[str, Any]:
    engine, _ = state.require_engine()
    body = ChatCompletionRequest.model_validate(_foreground(request))
    return await _run(prepare_chat(body, engine, state.settings.tool_call_parser), state, tenant, progress)


async def run_text_job(
    state: ServiceState, tenant: Tenant, request: dict[str, Any], progress: Any
) -> dict[str, Any]:
    engine, _ = state.require_engine()
    body = CompletionRequest.model_validate(_foreground(request))
    return await _run(prepare_text(body, engine), state, tenant, progress)
