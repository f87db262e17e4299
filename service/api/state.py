"""What the app holds for its lifetime, and how routes get at it (FastAPI dependencies)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import Depends, Request

from service.api.metrics import Metrics
from service.runtime.admission import Admission
from service.runtime.cost import Hardware
from service.runtime.engine import Engine
from service.runtime.errors import EngineUnavailable, ServiceError
from service.runtime.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from service.store.corpora import CorpusStore
    from service.store.keys import KeyStore, QuotaLedger

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: Engine | None = None
    hardware: Hardware | None = None
    failure: str | None = None
    draining: bool = False
    redis: Redis | None = None  # the one Redis client (corpora, calibrations, allocator memory); lifespan
    corpora: CorpusStore | None = None  # document corpora in Redis (issue 4); set in the lifespan
    keys: KeyStore | None = None  # API keys in Redis (issue 10); set in the lifespan
    ledger: QuotaLedger | None = None  # per-key quota counters in Redis (issue 10); set in the lifespan
    admission: Admission = field(init=False)  # this replica's engine sequences and wait queue

    def __post_init__(self) -> None:
        settings = self.settings
        self.admission = Admission(
            settings.admission_max_sequences,
            settings.admission_max_waiting,
            settings.admission_max_wait_seconds,
            settings.admission_key_share,
        )

    def require_engine(self) -> tuple[Engine, Hardware]:
        if self.draining:
            raise EngineUnavailable("The service is shutting down.")
        if self.settings.engine == "none":
            raise EngineUnavailable("This service runs without an engine (TTC_ENGINE=none).")
        if self.engine is None or self.hardware is None:
            reason = (
                f"The engine {self.failure}; the server's log has the reason."
                if self.failure
                else "The engine is starting."
            )
            raise EngineUnavailable(reason)
        return self.engine, self.hardware


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


class ClientDisconnected(ServiceError):
    status_code = 499
    error_type = "client_closed_request"


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work` until it finishes or the HTTP client goes away; then cancel it, which aborts its engine
    requests. (Uvicorn does not cancel a handler whose client disconnected; we must watch for it.)"""
    task = asyncio.ensure_future(work)

    async def wait_for_disconnect() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(wait_for_disconnect())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    logger.info("client disconnected; cancelled its work")
    raise ClientDisconnected("The client closed the connection.")
