"""Background jobs in Redis: the job records, their event streams, the work queue, idempotency keys.

The queue is a Redis stream read through a consumer group (XREADGROUP), which is the whole scheduler: an entry
a replica has read stays *pending* under that replica's name until it acknowledges it (XACK); a replica that
dies holds it no longer than the visibility timeout, after which any other replica takes it over (XAUTOCLAIM)
and runs the job again. A replica that is alive refreshes its claim (XCLAIM ... JUSTID) while the job runs, so
a long job is never taken from a healthy replica. No library adds anything we need on top of these four
commands, and each of arq/saq/taskiq brings its own Redis pool (without our timeouts) and its own worker model.

Redis layout (owner: this module; TTL: `job_ttl_seconds` unless said otherwise):

    ttc:jobs:queue:<namespace>         stream   one entry {job: id} per run to do; group `ttc-workers`; one
                                                queue per deployment (`keys_namespace`): a replica of another
                                                deployment on the same Redis cannot know the job's key
                                                (trimmed to ~100k entries; acknowledged entries carry no state)
    ttc:job:<id>                       hash     the job: status, owner, kind, request, budget, result, ...,
                                                and spent_<attempt>: what each run spent, as it last recorded it
    ttc:job:<id>:events                stream   progress events (SSE ids are the entry ids), capped
    ttc:jobs:owner:<owner>             zset     job ids by creation time, for GET /v1/jobs
    ttc:idempotency:<owner>:<sha256>   string   {fingerprint, job | response}; TTL `idempotency_ttl_seconds`
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from service.runtime.errors import StorageUnavailable

QUEUE = "ttc:jobs:queue"
GROUP = "ttc-workers"
QUEUE_MAXLEN = 100_000
EVENTS_MAXLEN = 2000
TERMINAL = ("succeeded", "failed", "cancelled")
SPENT_PREFIX = "spent_"  # job field per run: {completion_tokens, eflops} as that run last recorded it
JSON_FIELDS = ("request", "budget", "result", "error", "usage")

# Set fields only while the status is one of ARGV[1] (comma separated) and, when ARGV[2] is not empty, the run
# is still attempt ARGV[2]: a run that was taken over, or a job cancelled meanwhile, cannot overwrite the truth.
TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def job_key(job_id: str) -> str:
    return f"ttc:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"ttc:job:{job_id}:events"


def owner_key(owner: str) -> str:
    return f"ttc:jobs:owner:{owner}"


def idempotency_key(owner: str, key: str) -> str:
    return f"ttc:idempotency:{owner}:{hashlib.sha256(key.encode()).hexdigest()}"


def fingerprint(path: str, body: Any) -> str:
    """What makes two requests 'the same': the endpoint and the canonical JSON of the validated body."""
    return hashlib.sha256(json.dumps([path, body], sort_keys=True).encode()).hexdigest()


class JobStore:
    """Job records and the queue; one per app, on the app's one Redis client (so its timeouts apply)."""

    def __init__(self, redis: Redis, ttl_seconds: int, timeout_seconds: float, namespace: str) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        self.timeout = timeout_seconds
        self.queue = f"{QUEUE}:{namespace}"

    async def _call(self, work: Awaitable[Any] | Any, timeout: float | None = None) -> Any:
        try:
            async with asyncio.timeout(timeout or self.timeout * 2):
                return await work if inspect.isawaitable(work) else work
        except (RedisError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"Redis is unavailable: {type(exc).__name__}: {exc}") from exc

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self._call(self.redis.xgroup_create(self.queue, GROUP, id="0", mkstream=True))
        except StorageUnavailable as exc:
            if not (isinstance(exc.__cause__, ResponseError) and "BUSYGROUP" in str(exc.__cause__)):
                raise

    # -- records -------------------------------------------------------------------------------------------
    async def create(self, job: dict[str, Any]) -> None:
        """Store the job, index it under its owner, announce it and queue it: one transaction."""
        fields: dict[Any, Any] = {
            k: json.dumps(v) if k in JSON_FIELDS else str(v) for k, v in job.items() if v is not None
        }
        key, owner = job_key(job["id"]), owner_key(job["owner"])
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl)
            pipe.zadd(owner, {job["id"]: float(job["created_at"])})
            pipe.zremrangebyscore(owner, 0, time.time() - self.ttl)
            pipe.expire(owner, self.ttl)
            pipe.xadd(events_key(job["id"]), {"event": "queued", "data": json.dumps({"status": "queued"})})
            pipe.expire(events_key(job["id"]), self.ttl)
            pipe.xadd(self.queue, {"job": job["id"]}, maxlen=QUEUE_MAXLEN, approximate=True)
            await self._call(pipe.execute())

    async def get(self, job_id: str) -> dict[str, Any] | None:
        raw: dict[bytes, bytes] = await self._call(self.redis.hgetall(job_key(job_id)))
        if not raw:
            return None
        job: dict[str, Any] = {}
        for k, v in raw.items():
            name = k.decode()
            job[name] = json.loads(v) if name in JSON_FIELDS else v.decode()
        return job

    async def transition(
        self, job_id: str, allowed: tuple[str, ...], fields: dict[str, Any], attempt: int | None = None
    ) -> bool:
        """Set `fields` if the job's status is in `allowed` (and, given `attempt`, it is still that run)."""
        args: list[Any] = [",".join(allowed), "" if attempt is None else str(attempt), self.ttl]
        for name, value in fields.items():
            args += [name, json.dumps(value) if name in JSON_FIELDS else str(value)]
        done = await self._call(self.redis.eval(TRANSITION, 1, job_key(job_id), *args))  # type: ignore[misc]
        return bool(done)

    async def bump_attempts(self, job_id: str) -> int:
        return int(await self._call(self.redis.hincrby(job_key(job_id), "attempts", 1)))

    async def ids_of(self, owner: str | None, limit: int) -> list[str]:
        """The newest `limit` job ids of `owner` (None: of everyone)."""
        if owner is not None:
            raw = await self._call(self.redis.zrevrange(owner_key(owner), 0, limit - 1))
            return [item.decode() for item in raw]
        found: list[tuple[float, str]] = []
        async for key in self.redis.scan_iter(match=owner_key("*"), count=500):
            rows = await self._call(self.redis.zrevrange(key, 0, limit - 1, withscores=True))
            found += [(score, item.decode()) for item, score in rows]
        return [job_id for _, job_id in sorted(found, reverse=True)[:limit]]

    # -- events --------------------------------------------------------------------------------------------
    async def add_event(self, job_id: str, event: str, data: Any) -> str:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(
                events_key(job_id),
                {"event": event, "data": json.dumps(data)},
                maxlen=EVENTS_MAXLEN,
                approximate=True,
            )
            pipe.expire(events_key(job_id), self.ttl)
            entry, _ = await self._call(pipe.execute())
        return str(entry.decode())

    async def events_after(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, str, Any]]:
        """Events after entry id `after` ("0" for all), waiting up to `block_ms` for the first one."""
        reply = await self._call(
            self.redis.xread({events_key(job_id): after}, count=100, block=block_ms or None),
            timeout=self.timeout * 2 + block_ms / 1000,
        )
        rows: list[tuple[str, str, Any]] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                rows.append((entry_id.decode(), fields[b"event"].decode(), json.loads(fields[b"data"])))
        return rows

    # -- the queue -----------------------------------------------------------------------------------------
    async def take(self, consumer: str, idle_ms: int, block_ms: int) -> tuple[str, str, bool] | None:
        """The next run for `consumer`: first an entry a dead replica held past the visibility timeout
        (takeover), else a new one. Returns (entry id, job id, taken over) or None."""
        _, claimed, *_ = await self._call(
            self.redis.xautoclaim(self.queue, GROUP, consumer, min_idle_time=idle_ms, start_id="0-0", count=1)
        )
        if claimed:
            entry_id, fields = claimed[0]
            return entry_id.decode(), fields[b"job"].decode(), True
        reply = await self._call(
            self.redis.xreadgroup(GROUP, consumer, {self.queue: ">"}, count=1, block=block_ms),
            timeout=self.timeout * 2 + block_ms / 1000,
        )
        for _, entries in reply or []:
            for entry_id, fields in entries:
                return entry_id.decode(), fields[b"job"].decode(), False
        return None

    async def heartbeat(self, consumer: str, entry_id: str) -> None:
        """Reset the entry's idle time (JUSTID: without counting a delivery), so nobody takes it over."""
        await self._call(
            self.redis.xclaim(
                self.queue, GROUP, consumer, min_idle_time=0, message_ids=[entry_id], justid=True
            )
        )

    async def ack(self, entry_id: str) -> None:
        await self._call(self.redis.xack(self.queue, GROUP, entry_id))

    async def hand_back(self, entry_id: str, job_id: str) -> None:
        """Give a job this replica will not finish back to the queue (drain): acknowledged and queued anew."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.queue, GROUP, entry_id)
            pipe.xadd(self.queue, {"job": job_id}, maxlen=QUEUE_MAXLEN, approximate=True)
            await self._call(pipe.execute())

    # -- idempotency ---------------------------------------------------------------------------------------
    async def claim_key(self, key: str, value: dict[str, Any], ttl: int) -> dict[str, Any] | None:
        """Store `value` under `key` unless it is there; returns what was there (None: we claimed it)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, json.dumps(value), nx=True, ex=ttl)
            pipe.get(key)
            stored, raw = await self._call(pipe.execute())
        if stored:
            return None
        return json.loads(raw) if raw else None

    async def put_key(self, key: str, value: dict[str, Any], ttl: int) -> None:
        await self._call(self.redis.set(key, json.dumps(value), ex=ttl))

    async def drop_key(self, key: str) -> None:
        await self._call(self.redis.delete(key))
