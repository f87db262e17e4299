"""The FastAPI application: lifespan (engine start, warm-up, drain), routers and error handlers."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from service.api.errors import install_error_handlers
from service.api.routes_allocator import router as allocator_router
from service.api.routes_corpora import router as corpora_router
from service.api.routes_openai import router as openai_router
from service.api.routes_ops import router as ops_router
from service.api.routes_solve import router as solve_router
from service.api.state import ServiceState
from service.runtime.cost import load_hardware
from service.runtime.embeddings import DEFAULT_EMBEDDING_MODEL, embedder
from service.runtime.engine import Engine, SamplingSpec, generate
from service.runtime.model_files import resolve_model
from service.runtime.settings import Settings
from service.store.corpora import CorpusStore

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, str], Engine]


def build_engine(settings: Settings, model_path: str) -> Engine:
    if settings.engine == "remote":
        from service.runtime.engine_remote import RemoteEngine

        return RemoteEngine(settings, model_path)
    from service.runtime.engine_vllm import InProcessEngine

    return InProcessEngine(settings, model_path)


async def start_engine(state: ServiceState, factory: EngineFactory) -> None:
    """Load the model and engine off the event loop (so /healthz answers meanwhile), then warm it up."""
    settings = state.settings
    try:
        model_path = await asyncio.to_thread(resolve_model, settings.model, settings.model_cache_dir)
        hardware = await asyncio.to_thread(load_hardware, settings.hardware, settings.model_cache_dir)
        engine = await asyncio.to_thread(factory, settings, model_path)
        if settings.engine == "remote":
            await engine.check_health()
        if settings.warmup:
            await generate(
                engine, engine.render_chat([{"role": "user", "content": "Hi"}]), SamplingSpec(max_tokens=4)
            )
            await warm_embeddings()
    except Exception as exc:
        logger.exception("engine failed to start")
        state.failure = repr(exc)
        return
    state.hardware = hardware
    state.engine = engine
    state.metrics.track_engine(engine.running_requests)
    if settings.engine == "remote":
        from service.runtime.engine_remote import RemoteEngine

        if isinstance(engine, RemoteEngine):
            state.metrics.track_engines(engine.stats)
    state.metrics.ready.set(1)
    logger.info(
        "engine ready: %s (hardware %s, I = %.1f)", engine.model_name, hardware.name, hardware.intensity
    )


async def warm_embeddings() -> None:
    """Load the embedding model that auto (the default strategy) and ETS use, so no request pays its load."""
    try:
        await embedder(DEFAULT_EMBEDDING_MODEL).encode(["warm-up"])
    except Exception as exc:  # auto works without its memory; ETS and corpora will say what is wrong
        logger.warning("could not preload the embedding model: %r", exc)


async def warm_corpora(store: CorpusStore) -> None:
    """Rebuild the corpora's search indexes from Redis in the background; searches reload on demand anyway."""
    try:
        await store.warm()
    except Exception as exc:
        logger.warning("could not preload corpora: %r", exc)


def stop_child_processes(grace_seconds: float = 5.0) -> None:
    """Stop this process's children (vLLM's EngineCore), which would otherwise outlive us holding their cores."""
    children = multiprocessing.active_children()
    for child in children:
        logger.warning(
            "stopping %s (pid %s), started by the engine that was still loading", child.name, child.pid
        )
        child.terminate()
    for child in children:
        child.join(grace_seconds)
        if child.is_alive():
            child.kill()


def create_app(settings: Settings, engine_factory: EngineFactory = build_engine) -> FastAPI:
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(start_engine(state, engine_factory))
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
        )
        state.redis = redis
        state.corpora = CorpusStore(redis, settings)
        indexer = asyncio.create_task(warm_corpora(state.corpora))
        try:
            yield
        finally:
            indexer.cancel()
            state.redis = None
            await redis.aclose()
            state.draining = True
            state.metrics.ready.set(0)
            loader.cancel()
            if state.engine is not None:
                await state.engine.close()
            else:  # stopped while loading: the engine's processes have started, but we hold no handle on them
                await asyncio.to_thread(stop_child_processes)

    app = FastAPI(
        title="Test-time compute service",
        description="Spend a compute budget on a vLLM engine where it buys the most accuracy.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    app.include_router(ops_router)
    app.include_router(solve_router)
    app.include_router(openai_router)
    app.include_router(allocator_router)
    app.include_router(corpora_router)
    return app
