"""The front-door middleware on its own (pure ASGI logic, a tiny app instead of the service): an exception
no handler knew becomes a generic 500 naming the request id, with the traceback in the log, whose records
carry the request id."""

import logging

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.api.errors import stream_error_body
from service.api.metrics import Metrics
from service.api.middleware import BodyLimit, RequestContext, RequestIdFilter, request_id_var
from service.runtime.errors import InvalidRequest


async def broken(request: Request) -> JSONResponse:
    logging.getLogger("tests.broken").warning("about to fail")
    raise KeyError("secret-internal-detail")


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


def client() -> tuple[TestClient, Metrics]:
    metrics = Metrics()
    app = Starlette(
        routes=[Route("/broken", broken), Route("/echo", echo, methods=["POST"])],
        middleware=[Middleware(RequestContext, metrics=metrics), Middleware(BodyLimit, max_bytes=1024)],
    )  # the same order as service/api/app.py: inside Starlette's own error middleware
    return TestClient(app, raise_server_exceptions=False), metrics


def test_an_unexpected_error_is_a_generic_500_with_the_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    http, metrics = client()
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.INFO):
        response = http.get("/broken", headers={"X-Request-Id": "r-42"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "r-42"
    body = response.json()
    assert body["request_id"] == "r-42" and body["error"]["type"] == "internal_error"
    assert "secret-internal-detail" not in response.text and "KeyError" not in response.text
    failed = [record for record in caplog.records if record.exc_info]
    assert failed and "secret-internal-detail" in caplog.text
    ours = [
        record for record in caplog.records if not record.name.startswith("httpx")
    ]  # httpx logs in the client
    assert len(ours) >= 2 and {getattr(record, "request_id", None) for record in ours} == {"r-42"}
    assert metrics.http_requests.labels("GET", "/broken", "500")._value.get() == 1


def test_body_limit_counts_the_stream_and_replays_small_bodies() -> None:
    http, _ = client()
    assert http.post("/echo", content=b"x" * 1000).json() == {"size": 1000}
    assert http.post("/echo", content=b"x" * 2000).status_code == 413

    def stream() -> object:
        for _ in range(10):
            yield b"x" * 200

    response = http.post("/echo", content=stream())  # chunked: no Content-Length
    assert response.status_code == 413 and response.json()["error"]["code"] == 413


def test_a_streamed_error_event_hides_internals_but_keeps_our_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = request_id_var.set("s-7")
    try:
        with caplog.at_level(logging.ERROR):
            body = stream_error_body(KeyError("secret-internal-detail"))
    finally:
        request_id_var.reset(token)
    assert body["error"]["type"] == "internal_error" and body["request_id"] == "s-7"
    assert "secret" not in str(body) and "KeyError" not in str(body)
    assert "secret-internal-detail" in caplog.text  # the traceback is in the server's log
    ours = stream_error_body(InvalidRequest("verifier.answer is missing", param="verifier.answer"))
    assert ours["error"] == {
        "message": "verifier.answer is missing",
        "type": "invalid_request_error",
        "param": "verifier.answer",
        "code": 400,
    }
