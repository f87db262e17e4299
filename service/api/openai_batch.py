"""OpenAI's batch API on top of POST /v1/solve/batch: a JSONL file of chat completion requests (each may
carry `ttc` options, never a budget of its own) plus ONE total budget given to POST /v1/batches as `ttc`.

The batch is a background job (kind `openai.batch`, its id is the batch id) that runs exactly what
/v1/solve/batch runs, then writes the output file in OpenAI's batch output format: one line per request,
`{"id", "custom_id", "response": {"status_code": 200, "request_id", "body": <chat.completion>}, "error": null}`,
each body the same object a synchronous chat completion with `ttc` returns.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import ValidationError

from service.api import jobs
from service.api.auth import Caller
from service.api.openai_serving import prepare_chat, ttc_response
from service.api.protocol import (
    BatchCreate,
    BatchObject,
    BatchProblem,
    BatchRequestCounts,
    BatchSolveRequest,
    ChatCompletionRequest,
    FileObject,
)
from service.api.routes_batch import batch_limits, rules_of, solve_batch, summary_of, validate
from service.api.solver import Solved
from service.api.state import ServiceState
from service.api.tenancy import Tenant
from service.runtime.budget import Spend
from service.runtime.errors import InvalidRequest, NotFound, StorageUnavailable
from service.store.files import FileStore

KIND = "openai.batch"
STATUS = {
    "queued": "validating",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


def files_of(state: ServiceState) -> FileStore:
    if state.redis is None:
        raise StorageUnavailable("Files are not available: the service has no Redis client yet.")
    return FileStore(state.redis, state.settings.job_ttl_seconds, state.settings.redis_timeout_seconds)


def file_object(meta: dict[str, Any], ttl: int) -> FileObject:
    return FileObject(
        id=meta["id"],
        bytes=int(meta["bytes"]),
        created_at=int(meta["created_at"]),
        expires_at=int(meta["created_at"]) + ttl,
        filename=meta["filename"],
        purpose=meta["purpose"],
    )


async def store_file(
    state: ServiceState, owner: str, filename: str, purpose: str, content: bytes
) -> FileObject:
    meta = {
        "id": f"file-{uuid.uuid4().hex}",
        "owner": owner,
        "filename": filename,
        "purpose": purpose,
        "bytes": len(content),
        "created_at": int(time.time()),
    }
    await files_of(state).put(meta, content)
    return file_object(meta, state.settings.job_ttl_seconds)


async def visible_file(state: ServiceState, caller: Caller, file_id: str) -> dict[str, Any]:
    meta = await files_of(state).meta(file_id)
    if meta is None or (meta.get("owner") != caller.name and not caller.is_admin):
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return meta


def parse_lines(content: bytes, endpoint: str) -> list[tuple[str, dict[str, Any]]]:
    """(custom_id, body) of every request line; a bad line is a 400 naming its line number."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The input file is not UTF-8 text.", param="input_file_id") from exc
    lines: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"input_file_id: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{where} is not valid JSON.", param="input_file_id") from exc
        if not isinstance(row, dict) or not isinstance(row.get("body"), dict):
            raise InvalidRequest(f"{where} needs an object `body`.", param="input_file_id")
        custom_id = row.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or custom_id in seen:
            raise InvalidRequest(f"{where} needs a unique string `custom_id`.", param="input_file_id")
        if row.get("method", "POST") != "POST" or row.get("url") != endpoint:
            raise InvalidRequest(
                f"{where}: every request must be POST {endpoint} (the batch's endpoint).",
                param="input_file_id",
            )
        seen.add(custom_id)
        lines.append((custom_id, row["body"]))
    if not lines:
        raise InvalidRequest("The input file has no requests.", param="input_file_id")
    return lines


def problem_of(custom_id: str, body: ChatCompletionRequest, number: int) -> BatchProblem:
    """One request line as a batch problem: its messages, sampling and `ttc` options."""
    where = f"input_file_id: line {number}"
    if body.n != 1:
        raise InvalidRequest(f"{where}: n must be 1 in a batch.", param="input_file_id")
    ttc = body.ttc
    if ttc is not None and ttc.budget is not None:
        raise InvalidRequest(
            f"{where}: a request line has no budget of its own; the batch's total budget is `ttc.budget` "
            "of POST /v1/batches.",
            param="input_file_id",
        )
    if ttc is not None and (ttc.strategy != "auto" or ttc.rag is not None or ttc.background):
        raise InvalidRequest(
            f"{where}: in a batch every request runs `auto` under the batch allocator (no strategy, rag or "
            "background of its own).",
            param="input_file_id",
        )
    sampling: dict[str, Any] = {"max_tokens": body.completion_limit() or 256, "top_p": body.top_p}
    if "temperature" in body.model_fields_set:
        sampling["temperature"] = body.temperature
    if body.seed is not None:
        sampling["seed"] = body.seed
    if body.stop:
        sampling["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    problem: dict[str, Any] = {
        "id": custom_id,
        "messages": [message.model_dump(exclude_none=True) for message in body.messages],
        "sampling": sampling,
    }
    if ttc is not None:
        problem["params"] = ttc.params
        problem["return_candidates"] = ttc.return_candidates
        problem["answer"] = ttc.answer.model_dump()
        if ttc.verifier is not None:
            problem["verifier"] = ttc.verifier.model_dump()
    try:
        return BatchProblem.model_validate(problem)
    except ValidationError as exc:
        raise InvalidRequest(f"{where}: {exc.errors()[0]['msg']}", param="input_file_id") from exc


def requests_of(lines: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, ChatCompletionRequest]]:
    parsed = []
    for number, (custom_id, body) in enumerate(lines, start=1):
        try:
            parsed.append((custom_id, ChatCompletionRequest.model_validate(body)))
        except ValidationError as exc:
            first = exc.errors()[0]
            place = ".".join(str(part) for part in first.get("loc", ()))
            raise InvalidRequest(
                f"input_file_id: request {number} ({custom_id}): body.{place}: {first['msg']}",
                param="input_file_id",
            ) from exc
    return parsed


def solve_request(body: BatchCreate, lines: list[tuple[str, dict[str, Any]]]) -> BatchSolveRequest:
    if body.ttc is None:
        raise InvalidRequest(
            'A batch needs its total budget: `ttc: {"budget": {...}}` (with the openai client: '
            'extra_body={"ttc": {"budget": {"eflops": ...}}}).',
            param="ttc",
        )
    problems = [
        problem_of(custom_id, request, number)
        for number, (custom_id, request) in enumerate(requests_of(lines), start=1)
    ]
    return BatchSolveRequest(problems=problems, budget=body.ttc.budget, allocation=body.ttc.allocation)


async def create(
    state: ServiceState, caller: Caller, tenant: Tenant, body: BatchCreate, idempotency: str | None
) -> BatchObject:
    """Check the input file and the budget now (400s), then queue the job."""
    meta = await visible_file(state, caller, body.input_file_id)
    if meta["purpose"] != "batch":
        raise InvalidRequest("The input file must have purpose `batch`.", param="input_file_id")
    content = await files_of(state).content(body.input_file_id) or b""
    lines = parse_lines(content, body.endpoint)
    solve = solve_request(body, lines)
    engine, _ = state.require_engine()
    for custom_id, request in requests_of(lines):
        try:
            prepare_chat(request, engine, state.settings.tool_call_parser)
        except InvalidRequest as exc:
            raise InvalidRequest(f"input_file_id: {custom_id}: {exc.message}", param="input_file_id") from exc
    await validate(state, solve, tenant)
    payload = {
        "batch": body.model_dump(mode="json", exclude={"ttc"}),
        "lines": lines,
        "budget": body.ttc.budget.model_dump(mode="json", exclude_none=True) if body.ttc else None,
        "allocation": body.ttc.allocation.model_dump(mode="json") if body.ttc else None,
    }
    job = await jobs.submit(state, caller, KIND, "/v1/batches", payload, idempotency)
    return batch_view(await jobs.store_of(state).get(job.id) or {})


def batch_view(job: dict[str, Any]) -> BatchObject:
    request = job.get("request") or {}
    batch = request.get("batch") or {}
    result = job.get("result") if isinstance(job.get("result"), dict) else None
    total = len(request.get("lines") or [])
    status = STATUS[job["status"]]
    finished = int(float(job["finished_at"])) if job.get("finished_at") else None
    error = job.get("error")
    return BatchObject(
        id=job["id"],
        endpoint=batch.get("endpoint", "/v1/chat/completions"),
        errors={"object": "list", "data": [error]} if error else None,
        input_file_id=batch.get("input_file_id", ""),
        completion_window=batch.get("completion_window", "24h"),
        status=status,  # type: ignore[arg-type]
        output_file_id=result.get("output_file_id") if result else None,
        created_at=int(float(job["created_at"])),
        in_progress_at=int(float(job["started_at"])) if job.get("started_at") else None,
        expires_at=finished + int(job["ttl"]) if finished is not None and job.get("ttl") else None,
        completed_at=finished if status == "completed" else None,
        failed_at=finished if status == "failed" else None,
        cancelled_at=finished if status == "cancelled" else None,
        request_counts=BatchRequestCounts(
            total=total,
            completed=total if status == "completed" else 0,
            failed=total if status == "failed" else 0,
        ),
        metadata=batch.get("metadata"),
        usage=result.get("usage") if result else None,
        ttc={"budget": request.get("budget"), **({"summary": result["summary"]} if result else {})},
    )


async def run_openai_batch_job(
    state: ServiceState, tenant: Tenant, request: dict[str, Any], progress: Any
) -> dict[str, Any]:
    """The job: the batch allocator over every line, then the output file in OpenAI's format."""
    engine, _ = state.require_engine()
    lines = [(str(custom_id), dict(body)) for custom_id, body in request["lines"]]
    body = BatchCreate.model_validate(
        {**request["batch"], "ttc": {"budget": request["budget"], "allocation": request["allocation"]}}
    )
    solve = solve_request(body, lines)
    limits = batch_limits(solve, state, tenant)
    rules, fairness = rules_of(solve)
    outcomes, total = await solve_batch(state, tenant, solve.problems, limits, rules, fairness, progress)
    rows = []
    for (custom_id, chat), outcome in zip(requests_of(lines), outcomes, strict=True):
        call = prepare_chat(chat, engine, state.settings.tool_call_parser)
        ledger = outcome.ledger
        calls = sum(1 for step in ledger.steps if step.get("samples"))
        spend = Spend(
            prompt_tokens=outcome.item.prompt_tokens * calls,
            completion_tokens=ledger.tokens,
            engine_requests=calls,
            eflops=ledger.eflops,
        )
        solved = Solved("auto", outcome.result, spend, limits)
        response = ttc_response(call, solved)
        rows.append(
            {
                "id": f"batch_req_{uuid.uuid4().hex}",
                "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": call.request_id, "body": response},
                "error": None,
            }
        )
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    output = await store_file(state, tenant.caller.name, "batch_output.jsonl", "batch_output", content)
    return {
        "output_file_id": output.id,
        "usage": total.usage().model_dump(mode="json"),
        "summary": summary_of(outcomes).model_dump(mode="json"),
        "budget": total.budget_report().model_dump(mode="json"),
    }
