"""API keys and their quota ledger in Redis, shared by every replica.

A key is stored only as the sha256 of its secret (its id), so a Redis dump reveals no key. Layout under the
deployment's namespace `NS` (setting `keys_namespace`), all owned by this module:

    NS:key:<id>                 hash: name, scope, created, limits (JSON)      no TTL; deleted on revoke
    NS:names                    hash: name -> id                               no TTL
    NS:q:<id>:<axis>:<w>:<n>    spend counter of axis tokens|eflops in window w (m|d) number n; TTL 2 windows
    NS:total:<id>               hash: tokens, eflops spent over the key's life  no TTL
    NS:conc:<id>                sorted set: request id -> expiry (concurrent requests)  TTL refreshed

A reservation is ONE Lua script (EVALSHA through redis-py's register_script): it checks every counter against
its limit and increments all of them, or none, atomically; so no two replicas can both spend the last tokens.
Settling gives back the unspent part (a second script), so after every call the counters hold what was spent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.runtime.errors import InvalidRequest, NotFound, StorageUnavailable

Scope = Literal["user", "admin"]
SCOPES: tuple[Scope, ...] = ("user", "admin")
T = TypeVar("T")

WINDOWS: dict[str, int] = {"minute": 60, "day": 86_400}
AXES = ("tokens", "eflops")

# KEYS: n counters. ARGV: n, then per counter (amount, limit or -1, ttl). All or nothing.
# Returns {1} on success, or {0, index of the first counter that would overflow, current values...}.
RESERVE_LUA = """
local n = tonumber(ARGV[1])
local current = {}
for i = 1, n do
  current[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
for i = 1, n do
  local amount = tonumber(ARGV[2 + (i - 1) * 3])
  local limit = tonumber(ARGV[3 + (i - 1) * 3])
  if limit >= 0 and current[i] + amount > limit then
    local out = {0, i}
    for j = 1, n do out[#out + 1] = tostring(current[j]) end
    return out
  end
end
for i = 1, n do
  redis.call('INCRBYFLOAT', KEYS[i], ARGV[2 + (i - 1) * 3])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4 + (i - 1) * 3]))
end
return {1}
"""

# KEYS: n counters then the totals hash. ARGV: n, refund per counter, then tokens and eflops really spent.
SETTLE_LUA = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local refund = tonumber(ARGV[1 + i])
  if refund ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBYFLOAT', KEYS[i], -refund)
  end
end
redis.call('HINCRBYFLOAT', KEYS[n + 1], 'tokens', ARGV[n + 2])
redis.call('HINCRBYFLOAT', KEYS[n + 1], 'eflops', ARGV[n + 3])
return 1
"""

# KEYS: the concurrency set. ARGV: now, expiry of this entry, request id, limit or -1.
ENTER_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[4])
if limit >= 0 and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


def key_id(secret: str) -> str:
    """What Redis holds instead of the key: its sha256."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(secret: str, expected: str) -> bool:
    return hmac.compare_digest(key_id(secret), key_id(expected))


@dataclass(frozen=True)
class KeyLimits:
    """A key's quotas (per window), its concurrency, and its per-request ceilings; None means unlimited."""

    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    eflops_per_minute: float | None = None
    eflops_per_day: float | None = None
    max_concurrent: int | None = None
    max_tokens: int | None = None
    max_eflops: float | None = None
    max_seconds: float | None = None
    max_context_tokens: int | None = None

    def quota(self, axis: str, window: str) -> float | None:
        value: float | None = getattr(self, f"{axis}_per_{window}")
        return value


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (never its secret)."""

    id: str
    name: str
    scope: Scope
    created: float
    limits: KeyLimits = field(default_factory=KeyLimits)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": self.scope,
            "created": self.created,
            "limits": asdict(self.limits),
        }


@dataclass(frozen=True)
class Counter:
    """One spend counter of one key: axis, window and the Redis key of the window it is in now."""

    axis: str
    window: str
    redis_key: str
    limit: float | None
    ttl: int
    resets_in: float


@dataclass(frozen=True)
class Ticket:
    """A reservation made in the ledger: which counters, how much; settled exactly once."""

    key_id: str
    counters: tuple[Counter, ...]
    tokens: int
    eflops: float


@dataclass(frozen=True)
class Attempt:
    """The answer of one reservation attempt: granted, or which counter overflowed and where all stand."""

    granted: bool
    counters: tuple[Counter, ...]
    current: tuple[float, ...] = ()
    overflow: int | None = None


class KeyStore:
    """Create, find, list and revoke keys. Every lookup reads Redis, so a revocation takes effect at once."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.ns = namespace

    def _key(self, ident: str) -> str:
        return f"{self.ns}:key:{ident}"

    async def create(self, name: str, scope: Scope, limits: KeyLimits) -> tuple[str, ApiKey]:
        """A new key; returns its secret (shown once, never stored) and its record."""
        if scope not in SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}.", param="scope")
        secret = "ttc-" + secrets.token_urlsafe(32)
        record = ApiKey(key_id(secret), name, scope, time.time(), limits)
        created = await _guard(self.redis.hsetnx(f"{self.ns}:names", name, record.id))
        if not created:
            raise InvalidRequest(f"A key named {name!r} exists already.", param="name")
        await _guard(
            self.redis.hset(
                self._key(record.id),
                mapping={
                    "name": name,
                    "scope": scope,
                    "created": str(record.created),
                    "limits": json.dumps(asdict(limits)),
                },
            )
        )
        return secret, record

    async def lookup(self, secret: str) -> ApiKey | None:
        """The live key with this secret, or None (unknown or revoked)."""
        return await self._load(key_id(secret))

    async def _load(self, ident: str) -> ApiKey | None:
        raw = await _guard(self.redis.hgetall(self._key(ident)))
        if not raw:
            return None
        fields = {_text(name): _text(value) for name, value in raw.items()}
        scope = fields.get("scope", "user")
        return ApiKey(
            id=ident,
            name=fields["name"],
            scope="admin" if scope == "admin" else "user",
            created=float(fields.get("created", "0")),
            limits=KeyLimits(**json.loads(fields.get("limits", "{}"))),
        )

    async def get(self, name: str) -> ApiKey:
        ident = await _guard(self.redis.hget(f"{self.ns}:names", name))
        record = await self._load(_text(ident)) if ident else None
        if record is None:
            raise NotFound(f"No key named {name!r}.", param="name")
        return record

    async def list(self) -> list[ApiKey]:
        names = await _guard(self.redis.hgetall(f"{self.ns}:names"))
        found = [await self._load(_text(ident)) for ident in names.values()]
        return sorted((record for record in found if record is not None), key=lambda record: record.name)

    async def any(self) -> bool:
        """Whether any key exists (then anonymous callers are refused)."""
        count: int = await _guard(self.redis.hlen(f"{self.ns}:names"))
        return count > 0

    async def revoke(self, name: str) -> ApiKey:
        record = await self.get(name)
        await _guard(self.redis.delete(self._key(record.id)))
        await _guard(self.redis.hdel(f"{self.ns}:names", name))
        return record


class QuotaLedger:
    """Per-key spend counters per minute and per day (tokens and eFLOPs), and concurrent requests."""

    def __init__(self, redis: Redis, namespace: str, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.ns = namespace
        self.clock = clock
        self._reserve = redis.register_script(RESERVE_LUA)
        self._settle = redis.register_script(SETTLE_LUA)
        self._enter = redis.register_script(ENTER_LUA)

    def counters(self, ident: str, limits: KeyLimits) -> tuple[Counter, ...]:
        """The four counters of a key as of now (a window's counter lives in a key named by its number)."""
        now = self.clock()
        found = []
        for axis in AXES:
            for window, length in WINDOWS.items():
                number = math.floor(now / length)
                found.append(
                    Counter(
                        axis,
                        window,
                        f"{self.ns}:q:{ident}:{axis}:{window[0]}:{number}",
                        limits.quota(axis, window),
                        2 * length,
                        (number + 1) * length - now,
                    )
                )
        return tuple(found)

    async def try_reserve(self, ident: str, limits: KeyLimits, tokens: int, eflops: float) -> Attempt:
        """Reserve `tokens` and `eflops` in every window at once, or nothing (one Lua script)."""
        counters = self.counters(ident, limits)
        args: list[float | int] = [len(counters)]
        for counter in counters:
            amount = tokens if counter.axis == "tokens" else eflops
            args += [amount, -1 if counter.limit is None else counter.limit, counter.ttl]
        answer = await _guard(self._reserve(keys=[counter.redis_key for counter in counters], args=args))
        if int(answer[0]) == 1:
            return Attempt(True, counters)
        current = tuple(float(value) for value in answer[2:])
        return Attempt(False, counters, current, int(answer[1]) - 1)

    async def settle(self, ticket: Ticket, tokens: int, eflops: float) -> None:
        """The reserved call spent `tokens` and `eflops`: give back the rest, add the spend to the totals."""
        refunds = [
            (ticket.tokens - tokens) if counter.axis == "tokens" else (ticket.eflops - eflops)
            for counter in ticket.counters
        ]
        keys = [counter.redis_key for counter in ticket.counters] + [f"{self.ns}:total:{ticket.key_id}"]
        await _guard(self._settle(keys=keys, args=[len(ticket.counters), *refunds, tokens, eflops]))

    async def usage(self, ident: str, limits: KeyLimits) -> dict[str, Any]:
        """Spend and what is left in each current window, and the key's lifetime totals."""
        counters = self.counters(ident, limits)
        values = await _guard(self.redis.mget([counter.redis_key for counter in counters]))
        totals = await _guard(self.redis.hgetall(f"{self.ns}:total:{ident}"))
        windows: dict[str, dict[str, Any]] = {}
        for counter, value in zip(counters, values, strict=True):
            spent = float(value) if value is not None else 0.0
            if counter.axis == "tokens":
                spent = round(spent)
            windows.setdefault(counter.window, {"resets_in_seconds": round(counter.resets_in, 3)})
            windows[counter.window][counter.axis] = {
                "spent": spent,
                "limit": counter.limit,
                "remaining": None if counter.limit is None else max(counter.limit - spent, 0),
            }
        total = {_text(name): float(value) for name, value in totals.items()}
        return {
            "windows": windows,
            "total": {"tokens": round(total.get("tokens", 0.0)), "eflops": total.get("eflops", 0.0)},
        }

    async def enter(self, ident: str, request_id: str, limit: int | None, hold_seconds: float) -> bool:
        """Count one more concurrent request of the key, unless it already has `limit` running. Entries
        expire after `hold_seconds`, so a replica that died never holds a key's slots for long."""
        now = self.clock()
        answer = await _guard(
            self._enter(
                keys=[f"{self.ns}:conc:{ident}"],
                args=[now, now + hold_seconds, request_id, -1 if limit is None else limit],
            )
        )
        return int(answer) == 1

    async def leave(self, ident: str, request_id: str) -> None:
        await _guard(self.redis.zrem(f"{self.ns}:conc:{ident}", request_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _guard(call: Awaitable[T]) -> T:
    """A Redis call, with its failure as a 503 instead of a 500."""
    try:
        return await call
    except (RedisError, OSError, TimeoutError) as exc:
        raise StorageUnavailable(f"Redis is unavailable: {exc!r}") from exc
