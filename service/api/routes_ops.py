"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.errors import error_body
from service.api.state import StateDep
from service.runtime.errors import EngineUnavailable

router = APIRouter()


@router.head("/healthz", operation_id="healthz_head", summary="The process is up, for HEAD probes")
@router.get("/healthz", summary="The process is up (HEAD too)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.head("/readyz", operation_id="readyz_head", summary="Readiness, for HEAD probes (load balancers)")
@router.get("/readyz", summary="The engine is loaded, warm and healthy (503 before and after; HEAD too)")
async def readyz(state: StateDep) -> JSONResponse:
    try:
        engine, _ = state.require_engine()
        await engine.check_health()
    except EngineUnavailable as exc:
        return JSONResponse(error_body(exc.message, exc.error_type, None, 503), status_code=503)
    except Exception as exc:
        return JSONResponse(
            error_body(f"The engine is unhealthy: {exc!r}", "engine_unavailable", None, 503), status_code=503
        )
    return JSONResponse({"status": "ready", "model": engine.model_name})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
