"""The OpenAPI document as the service really behaves: every route lists the error responses it can return, each
with the `{"error": {...}}` object, and none lists FastAPI's 422 (validation is a 400 here, see errors.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "description": "What went wrong, in a sentence."},
                "type": {"type": "string", "description": "invalid_request_error, not_found_error, ..."},
                "param": {"type": ["string", "null"], "description": "The offending field, dotted."},
                "code": {"type": ["string", "integer", "null"], "description": "A code or the HTTP status."},
            },
        }
    },
}

WHY = {
    "400": "Invalid request: a bad value, a refused parameter, or a budget too small to start (OpenAI error).",
    "401": "Missing or unknown API key (when the service requires keys).",
    "403": "The API key may not use this route or this option.",
    "404": "Not found: an unknown model (model_not_found), corpus, or route.",
    "405": "Method not allowed on this path; the `Allow` header lists the methods that are.",
    "409": "The Idempotency-Key was used with another body, or its first request is still running.",
    "413": "The request body is larger than the service accepts.",
    "429": "The key's rate limit or quota is spent, or the service is full; see `Retry-After`.",
    "500": "An unexpected internal error (logged).",
    "503": "The engine or Redis is not available (starting, draining, dead or timed out).",
}


def sse_event(data: str) -> dict[str, Any]:
    """The schema of one server-sent event (what a `stream: true` response is a sequence of)."""
    return {
        "type": "object",
        "properties": {
            "event": {"type": "string", "description": "Event name, when there is one."},
            "data": {"type": "string", "description": f"The payload: {data}."},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    }


IDEMPOTENT = ("/v1/solve", "/v1/chat/completions", "/v1/completions", "/v1/solve/batch", "/v1/batches")


def _codes(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """The error statuses one operation can answer with."""
    if path in ("/healthz", "/metrics"):
        return ["405", "500"]
    codes = ["400", "401", "403", "405", "429", "500", "503"]
    if method in ("post", "put", "patch"):
        codes.append("413")
    if method == "post" and (path in IDEMPOTENT or path.startswith("/v1/corpora/")):
        codes.append("409")  # an Idempotency-Key reused with another body, or still in use
    if "{" in path or path.startswith("/v1/corpora") or path in ("/v1/chat/completions", "/v1/completions"):
        codes.append("404")
    if path in ("/v1/solve", "/v1/batches"):  # a `rag.corpus` or an input file that does not exist
        codes.append("404")
    if path == "/readyz":
        return ["405", "500", "503"]
    return sorted(set(codes))


def truthful_openapi(app: FastAPI) -> dict[str, Any]:
    """Build (once) the document FastAPI generates, then put in the error responses and take out the 422s."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorResponse"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code in _codes(path, method, operation):
                responses.setdefault(
                    code, {"description": WHY[code], "content": {"application/json": {"schema": reference}}}
                )
    app.openapi_schema = document
    return document


def install_openapi(app: FastAPI) -> None:
    app.openapi = lambda: truthful_openapi(app)  # type: ignore[method-assign]
