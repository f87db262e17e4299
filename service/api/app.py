"""The FastAPI application: lifespan (engine start, warm-up, drain), routers and error handlers."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from service.api.auth import require_admin, require_user
from service.api.errors import install_error_handlers
from service.api.jobs import Handler, JobRunner
from service.api.jobs_openai import run_chat_job, run_text_job
from service.api.middleware import BodyLimit, RequestContext
from service.api.openai_batch import run_openai_batch_job
from service.api.openapi import install_openapi
from service.api.routes_allocator import router as allocator_router
from service.api.routes_batch import router as batch_router
from service.api.routes_batch import run_batch_job
from service.api.routes_corpora import router as corpora_router
from service.api.routes_corpora import run_ingest_job
from service.api.routes_files import router as files_router
from service.api.routes_jobs import router as jobs_router
from service.api.routes_keys import router as keys_router
from service.api.routes_openai import router as openai_router
from service.api.routes_ops import router as ops_router
from service.api.routes_solve import router as solve_router
from service.api.routes_solve import run_solve_job
from service.api.state import ServiceState
from service.runtime.cost import load_hardware
from service.runtime.embeddings import DEFAULT_EMBEDDING_MODEL, embedder
from service.runtime.engine import Engine, SamplingSpec, generate
from service.runtime.model_files import resolve_model
from service.runtime.settings import Settings
from service.store.client import connect
from service.store.corpora import CorpusStore
from service.store.keys import KeyStore, QuotaLedger

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, str], Engine]
OnFatal = Callable[[str], None]


def build_engine(settings: Settings, model_path: str) -> Engine:
    if settings.engine == "remote":
        from service.runtime.engine_remote import RemoteEngine

        return RemoteEngine(settings, model_path)
    from service.runtime.engine_vllm import InProcessEngine

    return InProcessEngine(settings, model_path)


async def start_engine(state: ServiceState, factory: EngineFactory, on_fatal: OnFatal | None = None) -> None:
    """Load the model and engine off the event loop (so /healthz answers meanwhile), warm it up, then watch
    it. A failure to start or a dead engine is fatal: /healthz turns 503 and `on_fatal` (python -m service:
    stop the server, exit non-zero) lets the supervisor restart the process."""
    settings = state.settings
    if settings.engine == "none":
        logger.info("no engine (TTC_ENGINE=none): serving corpora and retrieval only")
        return
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
        state.failure = "failed to start"  # what clients see; the reason is in the log, not in responses
        if on_fatal is not None:
            on_fatal(f"failed to start: {exc!r}")
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
    await watch_engine(state, engine, on_fatal)


async def watch_engine(state: ServiceState, engine: Engine, on_fatal: OnFatal | None) -> None:
    """Ask the engine for its health every `engine_check_seconds`; once it has failed every check for
    `engine_dead_seconds` it is dead (vLLM's core process died, or the remote server is gone): say so on
    /healthz and /readyz, and hand over to `on_fatal`. A remote blip shorter than that is survived."""
    settings = state.settings
    failing_since: float | None = None
    while True:
        await asyncio.sleep(settings.engine_check_seconds)
        try:
            await asyncio.wait_for(engine.check_health(), timeout=max(settings.engine_check_seconds, 5.0))
        except Exception as exc:
            now = asyncio.get_running_loop().time()
            failing_since = now if failing_since is None else failing_since
            logger.warning("engine health check failed: %r", exc)
            if now - failing_since >= settings.engine_dead_seconds:
                state.failure = "died"
                state.metrics.ready.set(0)
                logger.critical("the engine is dead (%r); stopping so the supervisor restarts us", exc)
                if on_fatal is not None:
                    on_fatal(f"died: {exc!r}")
                return
        else:
            failing_since = None


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


def create_app(
    settings: Settings, engine_factory: EngineFactory = build_engine, on_fatal: OnFatal | None = None
) -> FastAPI:
    """The app. `on_fatal(reason)` is called once when the engine fails to start or dies (python -m service
    stops the server and exits non-zero); without it the process stays up with /healthz failing."""
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(start_engine(state, engine_factory, on_fatal))
        redis = connect(settings.redis_url, settings.redis_timeout_seconds)
        state.redis = redis
        state.corpora = CorpusStore(redis, settings)
        state.keys = KeyStore(redis, settings.keys_namespace)
        state.ledger = QuotaLedger(redis, settings.keys_namespace)
        indexer = asyncio.create_task(warm_corpora(state.corpora))
        handlers: dict[str, Handler] = {  # background jobs (issue 13): what each job kind runs
            "solve": run_solve_job,
            "corpus.documents": run_ingest_job,
            "chat.completions": run_chat_job,
            "completions": run_text_job,
            "solve.batch": run_batch_job,  # issue 16: one budget for many problems
            "openai.batch": run_openai_batch_job,  # the same, from OpenAI's batch file
        }
        runner = JobRunner(state, handlers)
        runner.start()
        try:
            yield
        finally:
            indexer.cancel()
            state.draining = True  # refuse new work; running background jobs finish or go back to the queue
            await runner.stop(settings.shutdown_grace_seconds)
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
    install_openapi(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=state.metrics)  # added last: outermost
    app.include_router(ops_router)  # /healthz, /readyz, /metrics stay open
    user, admin = [Depends(require_user)], [Depends(require_admin)]
    app.include_router(solve_router, dependencies=user)
    app.include_router(batch_router, dependencies=user)
    app.include_router(files_router, dependencies=user)
    app.include_router(openai_router, dependencies=user)
    app.include_router(allocator_router, dependencies=admin)
    app.include_router(corpora_router, dependencies=user)  # writes need admin: see routes_corpora
    app.include_router(keys_router)  # its own scopes per route
    app.include_router(jobs_router, dependencies=user)  # a key sees only its own jobs; admin sees all
    return app
