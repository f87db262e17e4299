"""What one caller may spend: its per-request ceiling, its concurrent requests, and for every engine call a
reservation in this replica's admission queue and in the key's quota ledger, both before the call starts.

`Tenant.reserver()` is the `runtime.budget.Reserver` the API layer injects into each request's BudgetTracker:
the tracker fits a call to the request's own budget, then asks here; admission may shrink it to the key's fair
share of the engine, the ledger to what is left of the key's quotas (retrying, with fresh counter values, when
another replica spent in between). When the call ends the tracker settles it with what it really spent, and the
rest is refunded, so the ledger always holds real spend.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Request

from service.api.auth import ANONYMOUS, BOOTSTRAP_ADMIN, Caller, caller_of, key_store
from service.api.state import ServiceState
from service.runtime.budget import BudgetLimits, CallShape, Reservation
from service.runtime.errors import QuotaExceeded
from service.store.keys import ApiKey, Attempt, QuotaLedger, Ticket

RESERVE_ATTEMPTS = 8
EFLOPS_MARGIN = 1e-9  # fit eFLOPs a hair under what is left, so float rounding never tips a counter over


@dataclass
class SpendMeter:
    """What a run's engine calls have spent so far, and what its calls in flight hold reserved at their worst
    case (a background job records both, so a run lost with its replica is still reported: the quota keeps
    its reservations charged)."""

    completion_tokens: int = 0
    eflops: float = 0.0
    reserved_tokens: int = 0
    reserved_eflops: float = 0.0

    def snapshot(self) -> dict[str, float]:
        # eFLOPs reserved and released in another order leave float dust (-1e-5 of 1e11): never below zero
        return {
            "completion_tokens": self.completion_tokens,
            "eflops": self.eflops,
            "reserved_tokens": max(self.reserved_tokens, 0),
            "reserved_eflops": max(self.reserved_eflops, 0.0) if self.reserved_tokens > 0 else 0.0,
        }


@dataclass
class Grant:
    """One call's reservation: admission sequences and (for a key) a ledger ticket."""

    tenant: Tenant
    samples: int
    max_tokens: int
    sequences: int
    ticket: Ticket | None
    reserved_eflops: float = 0.0
    settled: bool = False

    async def settle(self, completion_tokens: int, eflops: float) -> None:
        if self.settled:
            return
        self.settled = True
        tenant = self.tenant
        tenant.state.admission.release(tenant.caller.name, self.sequences)
        metrics = tenant.state.metrics
        metrics.quota_spend.labels(tenant.caller.name, "tokens").inc(completion_tokens)
        metrics.quota_spend.labels(tenant.caller.name, "eflops").inc(eflops)
        if tenant.meter is not None:
            tenant.meter.completion_tokens += completion_tokens
            tenant.meter.eflops += eflops
            tenant.meter.reserved_tokens -= self.samples * self.max_tokens
            tenant.meter.reserved_eflops -= self.reserved_eflops
        if self.ticket is not None and tenant.state.ledger is not None:
            await tenant.state.ledger.settle(self.ticket, completion_tokens, eflops)


@dataclass(frozen=True)
class Tenant:
    """One request's caller, with the app's admission queue and quota ledger."""

    caller: Caller
    state: ServiceState
    meter: SpendMeter | None = None
    patient: bool = False  # a background job's: its calls wait for the engine up to their deadline, never 429

    def ceiling(self) -> BudgetLimits | None:
        return self.caller.ceiling()

    def reserver(self) -> Tenant:
        return self

    async def reserve(self, call: CallShape, deadline: float | None) -> Reservation:
        admission = self.state.admission
        name = self.caller.name
        sequences = await admission.acquire(
            name, call.samples, call.keep_samples, deadline, continuing=call.continuing, patient=self.patient
        )
        try:
            ticket = None
            samples, max_tokens = sequences, call.max_tokens
            key, ledger = self.caller.key, self.state.ledger
            if key is not None and ledger is not None:
                ticket, samples, max_tokens = await self._quota(ledger, key, call, sequences)
        except BaseException:
            admission.release(name, sequences)
            raise
        if samples < sequences:
            admission.release(name, sequences - samples)
        reserved_eflops = call.worst_eflops(samples, max_tokens)
        if self.meter is not None:
            self.meter.reserved_tokens += samples * max_tokens
            self.meter.reserved_eflops += reserved_eflops
        return Grant(self, samples, max_tokens, samples, ticket, reserved_eflops)

    async def _quota(
        self, ledger: QuotaLedger, key: ApiKey, call: CallShape, width: int
    ) -> tuple[Ticket, int, int]:
        """Reserve the largest size of the call that the key's quotas still cover (one Lua script a try)."""
        tokens_left: int | None = None
        eflops_left: float | None = None
        attempt: Attempt | None = None
        for _ in range(RESERVE_ATTEMPTS):
            samples, max_tokens = call.fit(width, tokens_left, eflops_left)
            if samples == 0 or (call.keep_samples and samples < width):
                raise self._exceeded(key, call, attempt)
            tokens, eflops = samples * max_tokens, call.worst_eflops(samples, max_tokens)
            attempt = await ledger.try_reserve(key.id, key.limits, tokens, eflops)
            if attempt.granted:
                return Ticket(key.id, attempt.counters, tokens, eflops), samples, max_tokens
            tokens_left, eflops_left = _left(attempt)
        raise self._exceeded(key, call, attempt)

    def _exceeded(self, key: ApiKey, call: CallShape, attempt: Attempt | None) -> QuotaExceeded:
        """A 429 naming the limit that cannot pay for even the smallest call, and when its window resets."""
        if attempt is None or not attempt.current:
            return QuotaExceeded(
                f"Key {key.name!r}: quota contention; try again.", "quota_contention", retry_after=1.0
            )
        smallest = {"tokens": float(call.samples if call.keep_samples else 1)}
        smallest["eflops"] = call.worst_eflops(int(smallest["tokens"]), 1)
        blocking = attempt.overflow or 0
        for index, (counter, spent) in enumerate(zip(attempt.counters, attempt.current, strict=True)):
            if counter.limit is not None and spent + smallest[counter.axis] > counter.limit:
                blocking = index
                break
        counter, spent = attempt.counters[blocking], attempt.current[blocking]
        limit = f"{counter.axis}_per_{counter.window}"
        return QuotaExceeded(
            f"Key {key.name!r} is over its {limit} quota: {spent:.6g} of {counter.limit:.6g} spent or reserved; "
            f"the window resets in {counter.resets_in:.0f} s.",
            limit,
            retry_after=counter.resets_in,
        )

    @asynccontextmanager
    async def slot(self, hold_seconds: float | None) -> AsyncIterator[None]:
        """Count this request against the key's concurrent-request limit for as long as it runs."""
        key, ledger = self.caller.key, self.state.ledger
        if key is None or ledger is None or key.limits.max_concurrent is None:
            yield
            return
        request_id = uuid.uuid4().hex
        hold = (hold_seconds or self.state.settings.default_budget_seconds) + 60.0
        if not await ledger.enter(key.id, request_id, key.limits.max_concurrent, hold):
            raise QuotaExceeded(
                f"Key {key.name!r} already has {key.limits.max_concurrent} requests running.",
                "concurrent_requests",
                retry_after=1.0,
            )
        try:
            yield
        finally:
            await ledger.leave(key.id, request_id)


def _left(attempt: Attempt) -> tuple[int | None, float | None]:
    """What the tightest token and eFLOPs counters still allow, from the values the script returned."""
    tokens: int | None = None
    eflops: float | None = None
    for counter, spent in zip(attempt.counters, attempt.current, strict=True):
        if counter.limit is None:
            continue
        left = counter.limit - spent
        if counter.axis == "tokens":
            tokens = int(left) if tokens is None else min(tokens, int(left))
        else:
            room = left * (1 - EFLOPS_MARGIN)
            eflops = room if eflops is None else min(eflops, room)
    return tokens, eflops


def tenant_of(request: Request, state: ServiceState) -> Tenant:
    """The tenant of a request the auth dependency has seen (anonymous if a route had none)."""
    return Tenant(caller_of(request), state)


async def tenant_named(state: ServiceState, owner: str, meter: SpendMeter | None = None) -> Tenant:
    """The tenant a background job runs as: its owner's key, read again when the run starts (a key revoked
    meanwhile fails the job with a 404), so the run is charged to that key's quota like a synchronous call.
    Patient: past saturation its calls wait for the engine (behind interactive ones) instead of failing."""
    if owner in (ANONYMOUS, BOOTSTRAP_ADMIN):
        return Tenant(Caller(owner, "user"), state, meter, patient=True)  # no key: no quota
    key = await key_store(state).get(owner)
    return Tenant(Caller(key.name, key.scope, key), state, meter, patient=True)
