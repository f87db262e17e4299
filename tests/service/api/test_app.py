"""The application's lifespan: a service stopped while its engine is still loading leaves no process behind."""

import multiprocessing
import queue
import signal
import time

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.runtime.engine import Engine
from service.runtime.settings import Settings


def test_stopping_while_the_engine_loads_stops_the_engines_processes() -> None:
    started: queue.Queue[int] = queue.Queue()
    ended: queue.Queue[int | None] = queue.Queue()

    def loading_engine(settings: Settings, model_path: str) -> Engine:
        """Like vLLM's: start the engine core process, then wait for it (here: until it ends)."""
        core = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(20,), name="EngineCore")
        core.start()
        assert core.pid is not None
        started.put(core.pid)
        core.join()
        ended.put(core.exitcode)
        raise RuntimeError("the engine core ended while loading")

    settings = Settings(model="a-model", hardware="h100", warmup=False)
    with TestClient(create_app(settings, loading_engine)) as client:
        started.get(timeout=60)
        assert client.get("/readyz").status_code == 503
    # Stopped by the service (SIGTERM), not left to run out its 20 s.
    assert ended.get(timeout=60) == -signal.SIGTERM
