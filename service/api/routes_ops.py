"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.errors import error_body
from service.api.state import StateDep
from service.runtime.errors import EngineUnavailable

logger = logging.getLogger(__name__)
router = APIRouter()


@router.head("/healthz", operation_id="healthz_head", summary="The process is up, for HEAD probes")
@router.get("/healthz", summary="The process is up and its engine is not dead (503 once it failed); HEAD too")
async def healthz(state: StateDep) -> JSONResponse:
    """200 while the engine loads and once it runs; 503 once it failed to start or died (the process then
    exits, so the supervisor restarts it)."""
    if state.failure is not None:
        message = f"The engine {state.failure}; the server's log has the reason."
        return JSONResponse(error_body(message, "engine_unavailable", None, 503), status_code=503)
    return JSONResponse({"status": "ok"})


@router.head("/readyz", operation_id="readyz_head", summary="Readiness, for HEAD probes (load balancers)")
@router.get("/readyz", summary="The engine is loaded, warm and healthy (503 before and after; HEAD too)")
async def readyz(state: StateDep) -> JSONResponse:
    try:
        engine, _ = state.require_engine()
        await engine.check_health()
    except EngineUnavailable as exc:
        return JSONResponse(error_body(exc.message, exc.error_type, None, 503), status_code=503)
    except Exception as exc:
        logger.warning("readiness check failed: %r", exc)
        message = "The engine is unhealthy; the server's log has the reason."
        return JSONResponse(error_body(message, "engine_unavailable", None, 503), status_code=503)
    return JSONResponse({"status": "ready", "model": engine.model_name})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
