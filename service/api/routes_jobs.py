"""/v1/jobs: background jobs (submitted with `"background": true` on POST /v1/solve): show, list, follow, cancel."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from service.api import jobs
from service.api.auth import caller_of
from service.api.protocol import Job, JobList
from service.api.state import StateDep
from service.runtime.errors import InvalidRequest, ServiceError
from service.store.jobs import TERMINAL

router = APIRouter(prefix="/v1/jobs")
EVENT_ID = r"^\d{1,20}-\d{1,20}$"


@router.get("", response_model=JobList, summary="The caller's jobs, newest first")
async def list_jobs(
    request: Request, state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> JobList:
    caller = caller_of(request)
    store = jobs.store_of(state)
    ids = await store.ids_of(None if caller.is_admin else caller.name, limit)
    found = [await store.get(job_id) for job_id in ids]
    return JobList(data=[jobs.view(job) for job in found if job is not None])


@router.get("/{job_id}", response_model=Job, summary="A job: its status, and its result once it succeeded")
async def get_job(job_id: str, request: Request, state: StateDep) -> Job:
    job = jobs.visible(await jobs.store_of(state).get(job_id), caller_of(request), job_id)
    return jobs.view(job)


@router.delete("/{job_id}", response_model=Job, summary="Cancel a job (aborting its engine work)")
async def cancel_job(job_id: str, request: Request, state: StateDep) -> Job:
    return await jobs.cancel(state, caller_of(request), job_id)


@router.get("/{job_id}/events", summary="The job's events over SSE; resume with Last-Event-ID")
async def job_events(
    job_id: str,
    request: Request,
    state: StateDep,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """Every event since `Last-Event-ID` (all without it): queued, running, progress..., then succeeded
    (with the job), failed, or cancelled; then `[DONE]`. Events are kept as long as the job."""
    store = jobs.store_of(state)
    jobs.visible(await store.get(job_id), caller_of(request), job_id)
    after = last_event_id or "0"
    if after != "0" and not re.match(EVENT_ID, after):
        raise InvalidRequest("Last-Event-ID is not an event id of this stream.", param="Last-Event-ID")

    async def stream() -> AsyncIterator[str]:
        cursor = after
        try:
            while True:
                rows = await store.events_after(job_id, cursor, block_ms=1000)
                for entry_id, event, data in rows:
                    cursor = entry_id
                    if event == "succeeded":
                        job = await store.get(job_id)
                        data = jobs.view(job).model_dump(mode="json") if job else data
                    yield f"id: {entry_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n"
                    if event in TERMINAL:
                        yield "data: [DONE]\n\n"
                        return
                if not rows:
                    job = await store.get(job_id)
                    if job is None:  # expired while we waited
                        yield "data: [DONE]\n\n"
                        return
                    if job["status"] in TERMINAL:  # its final event was lost (Redis outage): say it now
                        view = jobs.view(job).model_dump(mode="json")
                        yield f"event: {job['status']}\ndata: {json.dumps(view)}\n\n"
                        yield "data: [DONE]\n\n"
                        return
                    yield ": keep-alive\n\n"
        except ServiceError as exc:
            yield f"event: error\ndata: {json.dumps({'error': {'message': exc.message, 'type': exc.error_type}})}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")
