"""Background jobs: submitting one, showing one, and the worker loop every replica runs.

Each replica runs `job_concurrency` workers that take runs from the queue in Redis (service/store/jobs.py):
any replica may run any job. While a run lasts its worker renews the claim and watches for a cancel; a replica
that dies stops renewing, and after `job_visibility_timeout_seconds` another replica takes the job over and runs
it again (at most `job_max_attempts` runs). On SIGTERM the workers stop taking runs, let the running ones finish
within `shutdown_grace_seconds`, and hand the rest back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from service.api.auth import Caller
from service.api.errors import error_body
from service.api.protocol import Job, new_id
from service.api.state import ServiceState
from service.api.tenancy import SpendMeter, Tenant, tenant_named
from service.runtime.errors import Conflict, EngineUnavailable, NotFound, ServiceError, StorageUnavailable
from service.store.jobs import SPENT_PREFIX, TERMINAL, JobStore, fingerprint, idempotency_key

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
Handler = Callable[[ServiceState, Tenant, dict[str, Any], Progress], Coroutine[Any, Any, dict[str, Any]]]


def job_error(message: str, error_type: str, param: str | None, code: str | int | None) -> dict[str, Any]:
    """A failed job's `error`: the OpenAI error object (message, type, param, code)."""
    inner: dict[str, Any] = error_body(message, error_type, param, code)["error"]
    return inner


def store_of(state: ServiceState) -> JobStore:
    if state.redis is None:
        raise StorageUnavailable("Background jobs are not available: the service has no Redis client yet.")
    settings = state.settings
    return JobStore(
        state.redis, settings.job_ttl_seconds, settings.redis_timeout_seconds, settings.keys_namespace
    )


def view(job: dict[str, Any]) -> Job:
    """The public job object from its stored record."""
    result = job.get("result")
    per_attempt = sorted(
        (
            # records written before the meter clamped its float dust may hold -1e-4: read as 0, never a 500
            {"attempt": int(name[len(SPENT_PREFIX) :])}
            | {field: max(amount, 0) for field, amount in json.loads(value).items()}
            for name, value in job.items()
            if name.startswith(SPENT_PREFIX)
        ),
        key=lambda entry: int(entry["attempt"]),
    )
    usage: dict[str, Any] = {"attempts": int(job.get("attempts", 0)), "per_attempt": per_attempt}
    if isinstance(result, dict) and isinstance(result.get("usage"), dict):
        usage.update(result["usage"])
    finished = float(job["finished_at"]) if job.get("finished_at") else None
    return Job(
        id=job["id"],
        kind=job["kind"],
        status=job["status"],
        created_at=float(job["created_at"]),
        started_at=float(job["started_at"]) if job.get("started_at") else None,
        finished_at=finished,
        expires_at=finished + float(job["ttl"]) if finished is not None and job.get("ttl") else None,
        budget=job.get("budget"),
        usage=usage,  # type: ignore[arg-type]
        result=result,
        error=job.get("error"),
    )


def visible(job: dict[str, Any] | None, caller: Caller, job_id: str) -> dict[str, Any]:
    """The job if `caller` may see it (its owner, or an admin); a 404 otherwise, not revealing it exists."""
    if job is None or (job.get("owner") != caller.name and not caller.is_admin):
        raise NotFound(f"There is no job {job_id!r}.", param="id")
    return job


async def submit(
    state: ServiceState,
    caller: Caller,
    kind: str,
    path: str,
    request: dict[str, Any],
    idempotency: str | None,
) -> Job:
    """Queue a job; with an Idempotency-Key, the same key and body return the job made the first time."""
    store = store_of(state)
    settings = state.settings
    job_id = new_id("job")
    key = None
    if idempotency is not None:
        key = idempotency_key(caller.name, idempotency)
        mine = {"fingerprint": fingerprint(path, request), "job": job_id}
        existing = await store.claim_key(key, mine, settings.idempotency_ttl_seconds)
        if existing is not None:
            if existing.get("fingerprint") != mine["fingerprint"]:
                raise Conflict(
                    "This Idempotency-Key was used with another request body.", param="Idempotency-Key"
                )
            if "job" not in existing:
                raise Conflict(
                    "This Idempotency-Key belongs to a synchronous request.", param="Idempotency-Key"
                )
            earlier = await store.get(existing["job"])
            if earlier is not None:
                return view(earlier)
            await store.put_key(key, mine, settings.idempotency_ttl_seconds)  # the job expired: a new one
    record = {
        "id": job_id,
        "kind": kind,
        "owner": caller.name,
        "status": "queued",
        "created_at": round(time.time(), 3),
        "attempts": 0,
        "ttl": settings.job_ttl_seconds,
        "request": request,
        "budget": request.get("budget"),
    }
    try:
        await store.create(record)
    except ServiceError:
        if key is not None:
            await store.drop_key(key)
        raise
    state.metrics.jobs.labels("submitted").inc()
    return view(record)


async def cancel(state: ServiceState, caller: Caller, job_id: str) -> Job:
    """Cancel a queued or running job; the replica running it sees the change within a second and aborts
    its engine work. Cancelling a finished job changes nothing."""
    store = store_of(state)
    visible(await store.get(job_id), caller, job_id)
    now = round(time.time(), 3)
    if await store.transition(job_id, ("queued", "running"), {"status": "cancelled", "finished_at": now}):
        await store.add_event(job_id, "cancelled", {"status": "cancelled"})
        state.metrics.jobs.labels("cancelled").inc()
    return view(visible(await store.get(job_id), caller, job_id))


# -- synchronous requests with an Idempotency-Key ------------------------------------------------------------


async def idempotent_answer(
    state: ServiceState, caller: Caller, idempotency: str, path: str, request: dict[str, Any]
) -> tuple[str, dict[str, Any] | None]:
    """Claim the key for a synchronous request; returns (key, the stored answer if this is a retry)."""
    store = store_of(state)
    key = idempotency_key(caller.name, idempotency)
    mine = {"fingerprint": fingerprint(path, request)}
    existing = await store.claim_key(key, mine, state.settings.idempotency_ttl_seconds)
    if existing is None:
        return key, None
    if existing.get("fingerprint") != mine["fingerprint"]:
        raise Conflict("This Idempotency-Key was used with another request body.", param="Idempotency-Key")
    if "job" in existing:
        raise Conflict("This Idempotency-Key belongs to a background job.", param="Idempotency-Key")
    if "response" not in existing:
        raise Conflict(
            "A request with this Idempotency-Key is still running; retry when it has finished.",
            param="Idempotency-Key",
            code="idempotency_in_progress",
        )
    return key, existing["response"]


async def remember_answer(
    state: ServiceState, key: str, path: str, request: dict[str, Any], response: dict[str, Any] | None
) -> None:
    """Keep the answer under its key (None: the request failed, so the key is free to retry)."""
    store = store_of(state)
    if response is None:
        await store.drop_key(key)
        return
    value = {"fingerprint": fingerprint(path, request), "response": response}
    await store.put_key(key, value, state.settings.idempotency_ttl_seconds)


# -- the worker loop -----------------------------------------------------------------------------------------


class Running:
    """One run this replica is executing."""

    def __init__(
        self,
        entry_id: str,
        job_id: str,
        attempt: int,
        task: asyncio.Task[dict[str, Any]],
        meter: SpendMeter,
    ) -> None:
        self.entry_id = entry_id
        self.job_id = job_id
        self.attempt = attempt
        self.task = task
        self.meter = meter
        self.handed_back = False


class JobRunner:
    """This replica's workers. `handlers` maps a job kind to the coroutine that runs it."""

    def __init__(self, state: ServiceState, handlers: dict[str, Handler]) -> None:
        self.state = state
        self.settings = state.settings
        self.handlers = handlers
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = asyncio.Event()
        self.running: dict[str, Running] = {}
        self.loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.loops = [asyncio.create_task(self._loop(i)) for i in range(self.settings.job_concurrency)]

    async def _loop(self, index: int) -> None:
        group_ready = False
        while not self.stopping.is_set():
            try:
                store = store_of(self.state)
                if not group_ready:
                    await store.ensure_group()
                    group_ready = True
                if self.state.engine is None or self.state.draining:
                    await asyncio.sleep(0.5)  # take no job before the engine is ready
                    continue
                taken = await store.take(
                    self.consumer, int(self.settings.job_visibility_timeout_seconds * 1000), block_ms=1000
                )
                if taken is None or self.stopping.is_set():
                    if taken is not None:  # read just as we were told to stop: give it back at once
                        await store.hand_back(taken[0], taken[1])
                    continue
                await self._run(store, *taken)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep trying, the queue keeps the work
                logger.warning("job worker %d: %s", index, exc)
                group_ready = False  # a Redis that lost its data lost the group too: make it again
                await asyncio.sleep(1)

    async def _run(self, store: JobStore, entry_id: str, job_id: str, taken_over: bool) -> None:
        job = await store.get(job_id)
        if job is None or job["status"] in TERMINAL:
            await store.ack(entry_id)  # expired or cancelled while queued: nothing to do
            return
        if taken_over:
            logger.warning("taking over job %s (its replica stopped renewing its claim)", job_id)
            self.state.metrics.jobs.labels("taken_over").inc()
        if int(job.get("attempts", 0)) >= self.settings.job_max_attempts:
            error = job_error(
                f"The job was started {job.get('attempts')} times and never finished (replicas died or "
                f"stopped under it); giving up.",
                "job_attempts_exhausted",
                None,
                500,
            )
            await self._finish(store, job_id, None, "failed", {"error": error}, entry_id)
            return
        handler = self.handlers.get(job["kind"])
        if handler is None:
            error = job_error(f"Unknown job kind {job['kind']!r}.", "internal_error", None, 500)
            await self._finish(store, job_id, None, "failed", {"error": error}, entry_id)
            return
        attempt = await store.bump_attempts(job_id)
        now = round(time.time(), 3)
        if not await store.transition(
            job_id, ("queued", "running"), {"status": "running", "started_at": now, "worker": self.consumer}
        ):
            await store.ack(entry_id)  # cancelled meanwhile
            return
        await store.add_event(
            job_id, "running", {"status": "running", "attempt": attempt, "worker": self.consumer}
        )
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        meter = SpendMeter()

        async def as_owner() -> dict[str, Any]:
            """Run as the job's owner, read when the run starts, so it is charged to that key's quota as in
            the foreground; a key revoked meanwhile fails the job like any other error of the run."""
            tenant = await tenant_named(self.state, job["owner"], meter)
            return await handler(self.state, tenant, job["request"], events.put_nowait)

        task = asyncio.create_task(as_owner())
        run = Running(entry_id, job_id, attempt, task, meter)
        self.running[job_id] = run
        publisher = asyncio.create_task(self._publish(store, job_id, events))
        try:
            await self._watch(store, run)
        finally:
            self.running.pop(job_id, None)
            events.put_nowait(None)
            try:
                await asyncio.wait_for(publisher, timeout=self.settings.redis_timeout_seconds * 4)
            except TimeoutError:
                logger.warning("job %s: progress events not all published", job_id)
        await self._settle_patiently(store, run)

    async def _settle_patiently(self, store: JobStore, run: Running) -> None:
        """Record the outcome, retrying through a short Redis outage (a restart takes a second or two):
        a result that is not recorded would have the job run again once its claim lapses."""
        deadline = time.monotonic() + self.settings.job_visibility_timeout_seconds * 2
        while True:
            try:
                await self._settle(store, run)
                return
            except ServiceError as exc:
                if time.monotonic() > deadline:
                    raise
                logger.warning("job %s: cannot record its outcome yet: %s", run.job_id, exc)
                await asyncio.sleep(0.5)

    async def _publish(
        self, store: JobStore, job_id: str, events: asyncio.Queue[dict[str, Any] | None]
    ) -> None:
        """Progress events to the job's stream, in order, until the end marker."""
        while (event := await events.get()) is not None:
            with contextlib.suppress(ServiceError):
                await store.add_event(job_id, "progress", event)

    async def _watch(self, store: JobStore, run: Running) -> None:
        """Renew the claim, and cancel the run if the job was cancelled, until the run ends."""
        renew_every = self.settings.job_visibility_timeout_seconds / 3
        last_renewal = time.monotonic()
        recorded = run.meter.snapshot()
        while not run.task.done():
            await asyncio.wait({run.task}, timeout=0.5)
            if run.task.done():
                break
            try:
                if time.monotonic() - last_renewal >= renew_every:
                    await store.heartbeat(self.consumer, run.entry_id)
                    last_renewal = time.monotonic()
                if run.meter.snapshot() != recorded:
                    recorded = run.meter.snapshot()
                    await self._record_spend(store, run)
                job = await store.get(run.job_id)
            except ServiceError as exc:
                logger.warning("job %s: cannot renew or check: %r", run.job_id, exc)
                continue
            if job is None or job["status"] != "running" or int(job.get("attempts", 0)) != run.attempt:
                run.task.cancel()  # cancelled, expired, or another replica took it over
                with contextlib.suppress(BaseException):
                    await run.task

    async def _record_spend(self, store: JobStore, run: Running) -> None:
        """This run's spend so far into the job, so that it is reported even if this replica dies."""
        fields = {f"{SPENT_PREFIX}{run.attempt}": json.dumps(run.meter.snapshot())}
        await store.transition(run.job_id, ("running", "cancelled"), fields, run.attempt)

    async def _settle(self, store: JobStore, run: Running) -> None:
        """Record how the run ended: its result, its error, or nothing (cancelled or handed back)."""
        task = run.task
        if run.handed_back:
            return
        await self._record_spend(store, run)
        if task.cancelled():
            await store.ack(run.entry_id)
            return
        exc = task.exception()
        if exc is None:
            await self._finish(
                store, run.job_id, run.attempt, "succeeded", {"result": task.result()}, run.entry_id
            )
        elif isinstance(exc, EngineUnavailable) and (self.state.draining or self.stopping.is_set()):
            await self._hand_back(store, run)
        elif isinstance(exc, ServiceError):
            error = job_error(exc.message, exc.error_type, exc.param, exc.status_code)
            await self._finish(store, run.job_id, run.attempt, "failed", {"error": error}, run.entry_id)
        else:
            logger.error("job %s failed", run.job_id, exc_info=exc)
            error = job_error(f"Internal error: {exc!r}", "internal_error", None, 500)
            await self._finish(store, run.job_id, run.attempt, "failed", {"error": error}, run.entry_id)

    async def _finish(
        self,
        store: JobStore,
        job_id: str,
        attempt: int | None,
        status: str,
        fields: dict[str, Any],
        entry_id: str,
    ) -> None:
        now = round(time.time(), 3)
        allowed = ("running",) if attempt is not None else ("queued", "running")
        if await store.transition(job_id, allowed, {"status": status, "finished_at": now, **fields}, attempt):
            payload = {"status": status, **({"error": fields["error"]} if "error" in fields else {})}
            await store.add_event(job_id, status, payload)
            self.state.metrics.jobs.labels(status).inc()
        await store.ack(entry_id)

    async def _hand_back(self, store: JobStore, run: Running) -> None:
        run.handed_back = True
        if await store.transition(run.job_id, ("running",), {"status": "queued"}, run.attempt):
            await store.add_event(run.job_id, "queued", {"status": "queued", "handed_back": True})
            await store.hand_back(run.entry_id, run.job_id)
            self.state.metrics.jobs.labels("handed_back").inc()
        else:
            await store.ack(run.entry_id)

    async def stop(self, grace_seconds: float) -> None:
        """Drain: take nothing new, let running jobs finish within the grace period, hand back the rest."""
        self.stopping.set()
        running = list(self.running.values())
        if running:
            logger.info("draining %d background job(s) for up to %.0f s", len(running), grace_seconds)
            await asyncio.wait({run.task for run in running}, timeout=grace_seconds)
        store = store_of(self.state) if self.state.redis is not None else None
        for run in running:
            if not run.task.done() and store is not None:
                run.handed_back = True
                run.task.cancel()
                try:
                    await self._record_spend(store, run)
                    await self._hand_back(store, run)
                except ServiceError as exc:  # Redis away: the claim lapses and another replica takes it over
                    logger.warning("could not hand job %s back: %r", run.job_id, exc)
        _, pending = await asyncio.wait(self.loops, timeout=5) if self.loops else (set(), set())
        for loop in pending:
            loop.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
