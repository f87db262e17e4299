"""The application's lifespan: a service stopped while its engine is still loading leaves no process behind,
and the engine watchdog tells a blip from a dead engine."""

import multiprocessing
import queue
import signal
import time

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.runtime.engine import Engine
from service.runtime.settings import Settings


def test_stopping_while_the_engine_loads_stops_the_engines_processes() -> None:
    cores: queue.Queue[multiprocessing.process.BaseProcess] = queue.Queue()

    def loading_engine(settings: Settings, model_path: str) -> Engine:
        """Like vLLM's: start the engine core process, then wait for it (here: until it ends)."""
        core = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(20,), name="EngineCore")
        core.start()
        cores.put(core)
        core.join()
        raise RuntimeError("the engine core ended while loading")

    settings = Settings(model="a-model", hardware="h100", warmup=False)
    started = time.monotonic()
    with TestClient(create_app(settings, loading_engine)) as client:
        core = cores.get(timeout=60)
        assert client.get("/readyz").status_code == 503
    # The service reaped the core when it stopped; this thread's join may have lost that race, so its exit code
    # is read here rather than in the loading thread (which would then see None).
    assert core.exitcode == -signal.SIGTERM  # stopped by the service, not left to run out its 20 s
    assert time.monotonic() - started < 20


class FlakyEngine:
    """Only what watch_engine asks: check_health, failing while `failing` is set."""

    def __init__(self) -> None:
        self.failing = False

    async def check_health(self) -> None:
        if self.failing:
            raise RuntimeError("EngineDeadError: core process died")


def test_the_watchdog_survives_a_blip_and_declares_a_dead_engine_fatal() -> None:
    import asyncio

    from service.api.app import watch_engine
    from service.api.state import ServiceState

    async def scenario() -> tuple[list[str], ServiceState, float]:
        settings = Settings(hardware="h100", engine_check_seconds=0.02, engine_dead_seconds=0.2)
        state = ServiceState(settings)
        engine = FlakyEngine()
        reasons: list[str] = []
        watcher = asyncio.create_task(watch_engine(state, engine, reasons.append))  # type: ignore[arg-type]
        engine.failing = True  # a blip shorter than engine_dead_seconds
        await asyncio.sleep(0.1)
        engine.failing = False
        await asyncio.sleep(0.3)
        assert reasons == [] and state.failure is None and not watcher.done()
        engine.failing = True
        started = time.monotonic()
        await asyncio.wait_for(watcher, timeout=5)
        return reasons, state, time.monotonic() - started

    reasons, state, seconds = asyncio.run(scenario())
    assert len(reasons) == 1 and "core process died" in reasons[0] and state.failure == "died"
    assert 0.2 <= seconds < 1.0
