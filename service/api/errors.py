"""The one place that turns any exception into an OpenAI-style error response:
{"error": {"message", "type", "param", "code"}}, with validation as a 400 (not FastAPI's 422)."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from service.api.middleware import current_request_id
from service.runtime.errors import Rejected, ServiceError

logger = logging.getLogger(__name__)


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    """OpenAI's error object, plus the request's id beside it (the same as the X-Request-Id header)."""
    body: dict[str, Any] = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    request_id = current_request_id()
    if request_id is not None:
        body["request_id"] = request_id
    return body


def stream_error_body(exc: Exception) -> dict[str, Any]:
    """The error event of a response that is already streaming: ours as they are; anything else is logged
    with its traceback here and reaches the client as a generic 500 that names only the request id."""
    if isinstance(exc, ServiceError):
        return error_body(exc.message, exc.error_type, exc.param, exc.status_code)
    logger.error("unexpected error while streaming", exc_info=exc)
    return error_body(
        f"Internal error; it has been logged as {current_request_id()}.", "internal_error", None, 500
    )


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.error_type, exc.param, exc.code or exc.status_code),
        status_code=exc.status_code,
        headers=exc.headers() or None,
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """First validation problem as a sentence plus the dotted field path (OpenAI's `param`)."""
    errors = exc.errors()
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    message = str(first.get("msg", "Invalid value.")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{param}: {message}{more}" if param else f"{message}{more}"), param


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's own `Allow` names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.PARTIAL and isinstance(route, BaseRoute):
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the service as {"error": {message, type, param, code}}; validation is a 400."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, Rejected):
            request.app.state.service.metrics.rejected.labels(exc.reason).inc()
        if exc.status_code >= 500:
            logger.error("request failed: %s", exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", param, 400), status_code=400)

    @app.exception_handler(json.JSONDecodeError)
    async def _json_error(_: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return JSONResponse(
            error_body("The request body is not valid JSON.", "invalid_request_error", None, 400),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return JSONResponse(
            error_body(str(exc.detail), error_type, None, exc.status_code),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return JSONResponse(
            error_body(
                f"Internal error; it has been logged as {current_request_id()}.", "internal_error", None, 500
            ),
            status_code=500,
        )
