"""OpenAI's /v1/files (purpose `batch`) and /v1/batches, thin: see service/api/openai_batch.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Request, UploadFile
from fastapi.responses import Response

from service.api import jobs
from service.api.auth import caller_of
from service.api.openai_batch import KIND, batch_view, create, file_object, files_of, store_file, visible_file
from service.api.protocol import BatchCreate, BatchObject, FileObject
from service.api.state import StateDep
from service.api.tenancy import tenant_of
from service.runtime.errors import InvalidRequest, NotFound

router = APIRouter(prefix="/v1")


@router.post("/files", response_model=FileObject, summary="Upload a batch input file (JSONL, purpose batch)")
async def upload_file(
    request: Request,
    state: StateDep,
    file: Annotated[UploadFile, File(description="The JSONL file of requests.")],
    purpose: Annotated[str, Form(description="Only `batch`.")],
) -> FileObject:
    if purpose != "batch":
        raise InvalidRequest("Only purpose `batch` is supported.", param="purpose")
    content = await file.read()
    return await store_file(state, caller_of(request).name, file.filename or "batch.jsonl", purpose, content)


@router.get("/files/{file_id}", response_model=FileObject, summary="A file's object")
async def get_file(file_id: str, request: Request, state: StateDep) -> FileObject:
    meta = await visible_file(state, caller_of(request), file_id)
    return file_object(meta, state.settings.job_ttl_seconds)


@router.get(
    "/files/{file_id}/content",
    summary="A file's content (a batch's output: one JSON line per request)",
    responses={200: {"content": {"application/octet-stream": {}}}},
    response_class=Response,
)
async def get_file_content(file_id: str, request: Request, state: StateDep) -> Response:
    await visible_file(state, caller_of(request), file_id)
    content = await files_of(state).content(file_id)
    if content is None:
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return Response(content, media_type="application/octet-stream")


@router.post(
    "/batches", response_model=BatchObject, summary="Run a batch file under ONE total budget (`ttc`)"
)
async def create_batch(
    body: BatchCreate,
    request: Request,
    state: StateDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> BatchObject:
    return await create(state, caller_of(request), tenant_of(request, state), body, idempotency_key)


async def _batch_job(batch_id: str, request: Request, state: StateDep) -> dict[str, object]:
    job = jobs.visible(await jobs.store_of(state).get(batch_id), caller_of(request), batch_id)
    if job.get("kind") != KIND:
        raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
    return job


@router.get("/batches/{batch_id}", response_model=BatchObject, summary="A batch: its status and output file")
async def get_batch(batch_id: str, request: Request, state: StateDep) -> BatchObject:
    return batch_view(await _batch_job(batch_id, request, state))


@router.post("/batches/{batch_id}/cancel", response_model=BatchObject, summary="Cancel a batch")
async def cancel_batch(batch_id: str, request: Request, state: StateDep) -> BatchObject:
    await _batch_job(batch_id, request, state)
    await jobs.cancel(state, caller_of(request), batch_id)
    return batch_view(await _batch_job(batch_id, request, state))
