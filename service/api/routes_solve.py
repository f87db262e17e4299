"""POST /v1/solve: a question plus a budget in, an answer plus what it cost out."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.api import jobs
from service.api.auth import caller_of
from service.api.errors import stream_error_body
from service.api.openapi import sse_event
from service.api.protocol import ChatMessage, Job, SolveRequest, SolveResponse, new_id
from service.api.solver import Solved, limits_of, question_of, render, sampling_spec, solve
from service.api.state import ServiceState, StateDep, cancel_on_disconnect
from service.api.tenancy import Tenant, tenant_of
from service.store import allocation as store
from strategies import STRATEGIES
from verifiers import VERIFIER_NAMES

router = APIRouter(prefix="/v1")


def _messages(body: SolveRequest) -> list[ChatMessage]:
    if body.messages is not None:
        return body.messages
    return [ChatMessage(role="user", content=body.prompt or "")]


def _response(body: SolveRequest, solved: Solved, request_id: str, model: str) -> SolveResponse:
    result = solved.result
    return SolveResponse(
        id=request_id,
        created=int(time.time()),
        model=model,
        answer=result.answer,
        text=result.text,
        strategy=solved.strategy,
        params=result.params,
        abstained=result.abstained,
        candidates=solved.candidates() if body.return_candidates else None,
        usage=solved.usage(),
        budget=solved.budget_report(),
        details=result.details,
    )


async def _run(body: SolveRequest, state: ServiceState, tenant: Tenant, progress: Any = None) -> Solved:
    engine, _ = state.require_engine()
    messages = _messages(body)
    sampling = sampling_spec(body.sampling)
    given = body.sampling.model_fields_set if "sampling" in body.model_fields_set else set()
    return await solve(
        state,
        body,
        render(engine, messages),
        question_of(messages),
        sampling,
        progress,
        tenant,
        sampling_given=given,
    )


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def run_solve_job(
    state: ServiceState, tenant: Tenant, request: dict[str, Any], progress: Any
) -> dict[str, Any]:
    """A background /v1/solve (service/api/jobs.py runs it as its owner): the body a synchronous call returns."""
    body = SolveRequest.model_validate({**request, "background": False})
    engine, _ = state.require_engine()
    solved = await _run(body, state, tenant, progress)
    return _response(body, solved, new_id("solve"), engine.model_name).model_dump(mode="json")


@router.post(
    "/solve",
    response_model=SolveResponse,
    summary="Answer a question within a compute budget",
    responses={
        200: {"content": {"text/event-stream": {"schema": sse_event("progress or result, as JSON")}}},
        202: {"model": Job, "description": "With `background`: the queued job."},
    },
)
async def solve_route(
    body: SolveRequest,
    request: Request,
    state: StateDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    request_id = new_id("solve")
    tenant = tenant_of(request, state)
    caller = caller_of(request)
    if body.background:
        limits_of(
            body.budget, state.settings, tenant.ceiling()
        )  # a bad budget is a 400 now, not a failed job
        payload = body.model_dump(mode="json", exclude_unset=True)
        job = await jobs.submit(state, caller, "solve", "/v1/solve", payload, idempotency_key)
        return JSONResponse(job.model_dump(mode="json"), status_code=202)
    if idempotency_key is not None and not body.stream:
        payload = body.model_dump(mode="json", exclude_unset=True)
        key, earlier = await jobs.idempotent_answer(state, caller, idempotency_key, "/v1/solve", payload)
        if earlier is not None:
            return earlier
        answer = None
        try:
            solved = await cancel_on_disconnect(request, _run(body, state, tenant))
            answer = _response(body, solved, request_id, state.require_engine()[0].model_name).model_dump(
                mode="json"
            )
        finally:
            await jobs.remember_answer(state, key, "/v1/solve", payload, answer)
        return answer
    if not body.stream:
        solved = await cancel_on_disconnect(request, _run(body, state, tenant))
        return _response(body, solved, request_id, state.require_engine()[0].model_name)

    state.require_engine()  # a 503 now rather than an error event later
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def work() -> None:
        try:
            solved = await _run(
                body, state, tenant, progress=lambda event: events.put_nowait(("progress", event))
            )
            model = state.require_engine()[0].model_name
            events.put_nowait(("result", _response(body, solved, request_id, model).model_dump()))
        except Exception as exc:  # ours as they are; anything else logged, and generic for the client
            events.put_nowait(("error", stream_error_body(exc)))

    async def stream() -> AsyncIterator[str]:
        task = asyncio.create_task(work())
        try:
            while True:
                event, data = await events.get()
                yield _sse(event, data)
                if event in ("result", "error"):
                    break
            yield "data: [DONE]\n\n"
        finally:
            task.cancel()

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get("/strategies", summary="Strategies that /v1/solve and `ttc` accept")
async def strategies() -> dict[str, Any]:
    def summary(name: str) -> str:
        module = inspect.getmodule(STRATEGIES[name])
        return ((module.__doc__ if module else None) or "").strip().split("\n")[0]

    return {
        "object": "list",
        "data": [{"id": name, "description": summary(name)} for name in sorted(STRATEGIES)],
    }


@router.get("/verifiers", summary="Verifiers that `verifier.name` accepts")
async def verifiers(state: StateDep) -> dict[str, Any]:
    """Each verifier with its measured completeness and soundness per task family (auto uses them)."""
    calibrations = await store.list_calibrations(state.redis)

    def entry(name: str) -> dict[str, Any]:
        measured = [item.describe() for item in calibrations if item.verifier == name]
        default = store.default_calibration(name, "default")
        return {
            "id": name,
            "calibrations": measured,
            "default_calibration": {
                "completeness": default.completeness,
                "soundness": default.soundness,
                "source": default.source,
            },
        }

    return {"object": "list", "data": [entry(name) for name in VERIFIER_NAMES]}
