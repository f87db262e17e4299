"""What every request passes through before any route: its id, its count in /metrics, a body-size cap, and a
last net for unexpected errors. Pure ASGI (no BaseHTTPMiddleware), so streamed responses stream, and the
client's disconnect still reaches the route (`state.cancel_on_disconnect` listens on `receive`).

RequestContext (outermost)
  - `X-Request-Id`: the caller's (if it is a sane token) or a new one; set on every response, kept in a
    context variable that log records (`RequestIdFilter`) and error bodies (`errors.error_body`) read.
  - counts every request by method, route template (`/v1/corpora/{name}`, never the raw path) and status.
  - an exception no handler turned into a response is logged with its traceback and answered with a
    generic 500 that names the request id, never the exception; a request the server cancels (uvicorn, at
    the end of its shutdown grace period) is a 503 `server_shutting_down`.
BodyLimit
  - a body over `max_bytes` is a 413 before anything parses it: the declared Content-Length is checked at
    once, and the bytes of the stream are counted (chunked bodies declare no length).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.metrics import Metrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("ttc_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request this code runs for (None outside a request)."""
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record ("-" outside a request), for the `%(request_id)s` format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _json_error(status: int, message: str, error_type: str, request_id: str) -> tuple[Message, Message]:
    body = json.dumps(
        {
            "error": {"message": message, "type": error_type, "param": None, "code": status},
            "request_id": request_id,
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.encode(), request_id.encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER.encode())
        request_id = given if given and _SANE_ID.match(given) else f"req-{uuid.uuid4().hex}"
        request_id_var.set(request_id)  # this request's task only; not reset, so outer handlers see it too
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                headers = [
                    (key, value)
                    for key, value in message.get("headers", ())
                    if bytes(key).lower() != REQUEST_ID_HEADER.encode()
                ]
                message = {
                    **message,
                    "headers": [*headers, (REQUEST_ID_HEADER.encode(), request_id.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # Only the server cancels a request's task: uvicorn, for what still runs when its shutdown grace
            # period ends (a client that goes away raises ClientDisconnected instead). Answer 503, which a
            # client or a load balancer retries on another replica, rather than uvicorn's bare 500.
            if started:
                raise
            logger.warning(
                "cancelled by the server's shutdown: %s %s", scope.get("method"), scope.get("path")
            )
            status = 503
            reason = "The server is shutting down and stopped this request; retry it."
            for part in _json_error(503, reason, "server_shutting_down", request_id):
                await send(part)
        except Exception:
            logger.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # the response is half sent: the server closes the connection
            status = 500
            for message in _json_error(
                500, f"Internal error; it has been logged as {request_id}.", "internal_error", request_id
            ):
                await send(message)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_requests.labels(scope.get("method", ""), template, str(status)).inc()


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        # Read the whole body first (every route parses all of it anyway), counting as it comes.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_bytes:
                await self.refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # afterwards: the disconnect, which cancel_on_disconnect waits for

        await self.app(scope, replay, send)

    async def refuse(self, send: Send) -> None:
        request_id = current_request_id() or f"req-{uuid.uuid4().hex}"
        message = f"The request body is larger than {self.max_bytes} bytes (setting TTC_MAX_BODY_BYTES)."
        for part in _json_error(413, message, "invalid_request_error", request_id):
            await send(part)
