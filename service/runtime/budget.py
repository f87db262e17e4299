"""A request's budget as a hard cap, and the accounting of what the request spent.

Every engine call of a request (samples and verifier calls alike) goes through `BudgetTracker.generate`, which
shrinks the call until its worst case fits what is left (tokens and eFLOPs, counting calls still in flight),
runs it with the request's deadline, and charges what it actually used. So the caps hold under any amount of
parallelism inside a strategy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from service.runtime.cost import Hardware, ModelShape, generation_eflops, worst_case_eflops
from service.runtime.engine import (
    STOPPED,
    Delta,
    Engine,
    Generation,
    Prompt,
    SamplingSpec,
    StopRule,
    StreamState,
    count_prompt_tokens,
    generate,
)
from service.runtime.errors import BudgetExhausted, Rejected


@dataclass(frozen=True)
class BudgetLimits:
    """Caps of one request; None means "no cap on this axis"."""

    tokens: int | None = None
    eflops: float | None = None
    seconds: float | None = None
    context_tokens: int | None = None


@dataclass
class Spend:
    """What a request used, as reported in `usage`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    engine_requests: int = 0
    verifier_requests: int = 0
    reward_model_tokens: int = 0
    eflops: float = 0.0
    peak_kv_tokens: int = 0
    seconds: float = 0.0
    engine_restarts: int = 0
    engine_requests_stopped: int = 0  # calls the strategy aborted in the engine mid-way (DeepConf)


def wrap_up_seconds(cap_seconds: float) -> float:
    """The part of a seconds cap kept for stopping engine calls and answering (5%, at most 1 s): engine work
    ends this much before the cap, so the request's measured seconds stay within it."""
    return min(0.05 * cap_seconds, 1.0)


def fit_call(
    samples: int,
    max_tokens: int,
    tokens_left: int | None,
    eflops_left: float | None,
    worst_eflops: Callable[[int, int], float],
    keep_samples: bool = False,
) -> tuple[int, int]:
    """The largest (samples, max_tokens) not above the asked ones whose worst case fits what is left.

    Fewer samples first (each keeps its full length, so answers are not cut off), then shorter ones; with
    `keep_samples` (a plain OpenAI call must return its n choices) only shorter ones. (0, 0): nothing fits.
    """
    if tokens_left is not None:
        if tokens_left <= 0:
            return 0, 0
        if not keep_samples:
            samples = min(samples, max(tokens_left // max_tokens, 1))
        max_tokens = min(max_tokens, tokens_left // samples)
    if eflops_left is not None:
        while not keep_samples and samples > 1 and worst_eflops(samples, max_tokens) > eflops_left:
            samples -= 1
        low, high = 0, max_tokens
        while low < high:  # longest max_tokens that fits
            middle = (low + high + 1) // 2
            if worst_eflops(samples, middle) <= eflops_left:
                low = middle
            else:
                high = middle - 1
        max_tokens = low
    if max_tokens <= 0 or samples <= 0:
        return 0, 0
    return samples, max_tokens


@dataclass(frozen=True)
class CallShape:
    """One engine call as a `Reserver` sees it: its size, its worst-case eFLOPs for any smaller size, and
    whether its request already ran a call (admission serves those first: their work is sunk)."""

    prompt_tokens: int
    samples: int
    max_tokens: int
    keep_samples: bool
    worst_eflops: Callable[[int, int], float]
    continuing: bool = False

    def fit(self, samples: int, tokens_left: int | None, eflops_left: float | None) -> tuple[int, int]:
        """The largest size of this call, at most `samples` wide, that fits what is left."""
        return fit_call(
            samples, self.max_tokens, tokens_left, eflops_left, self.worst_eflops, self.keep_samples
        )


class Reservation(Protocol):
    """What a `Reserver` granted for one call: possibly fewer samples or tokens than asked."""

    samples: int
    max_tokens: int

    async def settle(self, completion_tokens: int, eflops: float) -> None:
        """The call ended having spent this much; give back the rest of the reservation."""
        ...


class Reserver(Protocol):
    """Something outside the request that must also pay for each engine call before it starts (a key's quota,
    the replica's admission queue). The API layer injects it; the runtime never knows what it is."""

    async def reserve(self, call: CallShape, deadline: float | None) -> Reservation:
        """Grant the call, shrunk to fit, or raise (a ServiceError) if not even one sample fits."""
        ...


class BudgetTracker:
    """Holds one request's limits and spend; created per request, never shared."""

    def __init__(
        self,
        limits: BudgetLimits,
        shape: ModelShape,
        hardware: Hardware,
        count_weight_loading: bool = True,
        reserver: Reserver | None = None,
    ) -> None:
        self.limits = limits
        self.reserver = reserver
        self.shape = shape
        self.hardware = hardware
        self.count_weight_loading = count_weight_loading
        self.started = time.monotonic()
        # Engine work stops a little before the cap, so stopping it and the strategy's wrap-up fit inside it.
        self.deadline = (
            self.started + limits.seconds - wrap_up_seconds(limits.seconds)
            if limits.seconds is not None
            else None
        )
        self.spend = Spend()
        self._reserved_tokens = 0
        self._reserved_eflops = 0.0
        self._reserved_context = 0
        self._granted_calls = 0

    # -- what is left -------------------------------------------------------------------------------------
    def remaining_tokens(self) -> int | None:
        if self.limits.tokens is None:
            return None
        return self.limits.tokens - self.spend.completion_tokens - self._reserved_tokens

    def remaining_eflops(self) -> float | None:
        if self.limits.eflops is None:
            return None
        return self.limits.eflops - self.spend.eflops - self._reserved_eflops

    def remaining_seconds(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        remaining = self.remaining_seconds()
        return remaining is not None and remaining <= 0

    def _worst_eflops(
        self, prompt_tokens: int, samples: int, max_tokens: int, weight_share: int = 1
    ) -> float:
        return worst_case_eflops(
            self.shape,
            self.hardware,
            prompt_tokens,
            samples,
            max_tokens,
            self.count_weight_loading,
            weight_share,
        )

    def fit(
        self,
        prompt_tokens: int,
        samples: int,
        max_tokens: int,
        keep_samples: bool = False,
        weight_share: int = 1,
    ) -> tuple[int, int]:
        """The largest (samples, max_tokens) not above the asked ones whose worst case fits what is left
        (see `fit_call`; `weight_share` as the call will be charged). Returns (0, 0) when not even one token
        can be paid for."""
        if self.expired():
            return 0, 0
        context_left = self._context_left()
        if context_left is not None and prompt_tokens > context_left:
            return 0, 0
        return fit_call(
            samples,
            max_tokens,
            self.remaining_tokens(),
            self.remaining_eflops(),
            lambda width, length: self._worst_eflops(prompt_tokens, width, length, weight_share),
            keep_samples,
        )

    def _context_left(self) -> int | None:
        if self.limits.context_tokens is None:
            return None
        return self.limits.context_tokens - self.spend.prompt_tokens - self._reserved_context

    # -- spending -----------------------------------------------------------------------------------------
    async def _reserve(
        self, prompt_tokens: int, spec: SamplingSpec, keep_samples: bool, weight_share: int = 1
    ) -> tuple[SamplingSpec, Reservation | None]:
        """Fit the call to the budget, then to the injected reserver (quota, admission), if any."""
        samples, max_tokens = self.fit(prompt_tokens, spec.n, spec.max_tokens, keep_samples, weight_share)
        if samples == 0 or (keep_samples and samples < spec.n):
            raise BudgetExhausted("The budget left cannot pay for another engine call.", param="budget")
        reservation = None
        if self.reserver is not None:
            call = CallShape(
                prompt_tokens,
                samples,
                max_tokens,
                keep_samples,
                lambda width, length: self._worst_eflops(prompt_tokens, width, length, weight_share),
                continuing=self._granted_calls > 0,
            )
            try:
                reservation = await self.reserver.reserve(call, self.deadline)
            except Rejected as exc:
                if self._granted_calls == 0:
                    raise  # nothing of this request ran: the caller gets the 429 as it is
                # mid-run, a refusal ends the run like an exhausted budget: the strategy answers with what it
                # has, and the usage it reports is what the ledger was charged
                raise BudgetExhausted(exc.message, param="budget") from exc
            self._granted_calls += 1
            samples, max_tokens = reservation.samples, reservation.max_tokens
        return dataclasses.replace(spec, n=samples, max_tokens=max_tokens), reservation

    async def generate(
        self,
        engine: Engine,
        prompt: Prompt,
        spec: SamplingSpec,
        purpose: str = "sample",
        prompt_tokens: int | None = None,
        keep_samples: bool = False,
        stop: StopRule | None = None,
        weight_share: int = 1,
    ) -> Generation:
        """Run one engine call inside the budget; raises BudgetExhausted if nothing of it can be paid for.
        With a reserver, the call's worst case is reserved there too and the unspent part given back.
        `stop` may abort the call mid-way (see `engine.generate`); what it generated until then is charged.
        `weight_share`: the call is one of that many calls of this request started together, which the engine
        batches like one call's samples; each is charged its share of the weight reads, and its worst case
        (what is reserved) is counted with the same share, so the charge never exceeds the reservation."""
        if prompt_tokens is None:
            prompt_tokens = count_prompt_tokens(engine, prompt)
        spec, reservation = await self._reserve(prompt_tokens, spec, keep_samples, weight_share)
        samples, max_tokens = spec.n, spec.max_tokens
        reserved_eflops = self._worst_eflops(prompt_tokens, samples, max_tokens, weight_share)
        self._reserved_tokens += samples * max_tokens
        self._reserved_eflops += reserved_eflops
        self._reserved_context += prompt_tokens
        spent_tokens, spent_eflops = 0, 0.0
        try:
            generation = await generate(engine, prompt, spec, self.deadline, stop)
            spent_tokens, spent_eflops = (
                generation.completion_tokens,
                self.charge(generation, purpose, weight_share),
            )
            if any(sample.finish_reason == STOPPED for sample in generation.samples):
                self.spend.engine_requests_stopped += 1
        finally:
            self._reserved_tokens -= samples * max_tokens
            self._reserved_eflops -= reserved_eflops
            self._reserved_context -= prompt_tokens
            if reservation is not None:
                await asyncio.shield(reservation.settle(spent_tokens, spent_eflops))
        return generation

    async def stream(
        self, engine: Engine, prompt: Prompt, spec: SamplingSpec, state: StreamState
    ) -> AsyncIterator[Delta]:
        """A plain call streamed straight through, inside the budget: all n samples (only shorter, never
        fewer), stopped at the deadline, charged and settled with what it produced."""
        prompt_tokens = count_prompt_tokens(engine, prompt)
        spec, reservation = await self._reserve(prompt_tokens, spec, keep_samples=True)
        samples: list[list[int]] = [[] for _ in range(spec.n)]
        try:
            async for delta in engine.stream(prompt, spec, state):
                samples[delta.index].extend(delta.token_ids)
                yield delta
                if self.expired():
                    break
        finally:  # what the client received is spent, even if it went away
            spent_eflops = self._charge_counts(
                state.prompt_tokens, state.cached_prompt_tokens, [len(ids) for ids in samples], "sample"
            )
            if reservation is not None:
                await asyncio.shield(reservation.settle(sum(len(ids) for ids in samples), spent_eflops))

    def charge(self, generation: Generation, purpose: str = "sample", weight_share: int = 1) -> float:
        """Add one finished call to the spend; returns its eFLOPs."""
        return self._charge_counts(
            generation.prompt_tokens,
            generation.cached_prompt_tokens,
            [sample.tokens for sample in generation.samples],
            purpose,
            generation.restarts,
            weight_share,
        )

    def _charge_counts(
        self,
        prompt_tokens: int,
        cached_prompt_tokens: int,
        sample_tokens: list[int],
        purpose: str,
        restarts: int = 0,
        weight_share: int = 1,
    ) -> float:
        spend = self.spend
        spend.prompt_tokens += prompt_tokens
        spend.completion_tokens += sum(sample_tokens)
        spend.cached_prompt_tokens += cached_prompt_tokens
        spend.engine_restarts += restarts
        if purpose == "verifier":
            spend.verifier_requests += 1
        else:
            spend.engine_requests += 1
        eflops = generation_eflops(
            self.shape,
            self.hardware,
            prompt_tokens,
            cached_prompt_tokens,
            sample_tokens,
            self.count_weight_loading,
            weight_share,
        )
        spend.eflops += eflops
        self.observe_kv(prompt_tokens + sum(sample_tokens))
        return eflops

    def observe_kv(self, live_tokens: int) -> None:
        """Record how many distinct tokens the request holds in the KV cache at one moment."""
        self.spend.peak_kv_tokens = max(self.spend.peak_kv_tokens, live_tokens)

    def finish(self) -> Spend:
        self.spend.seconds = time.monotonic() - self.started
        return self.spend


@dataclass
class _ParentReserver:
    """Makes a sub-budget's every call fit its parent too (what is left there, counting the parent's other
    calls in flight) and reserve there first: so a strategy run inside a batch can never take the batch past
    its cap, whatever the sub-budget's own limits say. Counts what its calls settled in the parent."""

    parent: BudgetTracker
    settled_tokens: int = 0
    settled_eflops: float = 0.0

    async def reserve(self, call: CallShape, deadline: float | None) -> Reservation:
        parent = self.parent
        samples, max_tokens = parent.fit(call.prompt_tokens, call.samples, call.max_tokens, call.keep_samples)
        if samples == 0 or (call.keep_samples and samples < call.samples):
            raise BudgetExhausted("The batch budget left cannot pay for another engine call.", param="budget")
        outer = None
        if parent.reserver is not None:
            shaped = dataclasses.replace(call, samples=samples, max_tokens=max_tokens)
            outer = await parent.reserver.reserve(shaped, deadline)
            samples, max_tokens = outer.samples, outer.max_tokens
        worst = parent._worst_eflops(call.prompt_tokens, samples, max_tokens)
        parent._reserved_tokens += samples * max_tokens
        parent._reserved_eflops += worst
        return _Held(self, samples, max_tokens, worst, outer)


@dataclass
class _Held:
    """One call of a sub-budget as its parent holds it: the worst case reserved in the parent (and in the
    parent's own reserver, when it has one) until the call settles."""

    owner: _ParentReserver
    samples: int
    max_tokens: int
    worst_eflops: float
    outer: Reservation | None

    async def settle(self, completion_tokens: int, eflops: float) -> None:
        parent = self.owner.parent
        parent._reserved_tokens -= self.samples * self.max_tokens
        parent._reserved_eflops -= self.worst_eflops
        parent.spend.completion_tokens += completion_tokens
        parent.spend.eflops += eflops
        self.owner.settled_tokens += completion_tokens
        self.owner.settled_eflops += eflops
        if self.outer is not None:
            await self.outer.settle(completion_tokens, eflops)


def sub_budget(parent: BudgetTracker, limits: BudgetLimits) -> BudgetTracker:
    """A budget inside `parent` (one problem's strategy run inside a batch): its own caps, and every call
    also reserved in and charged to the parent as it settles. `absorb` adds the rest of its spend (prompt
    tokens, request counts) to the parent when it is done."""
    child = BudgetTracker(
        limits, parent.shape, parent.hardware, parent.count_weight_loading, reserver=_ParentReserver(parent)
    )
    if parent.deadline is not None:
        child.deadline = parent.deadline if child.deadline is None else min(child.deadline, parent.deadline)
    return child


def absorb(parent: BudgetTracker, child: BudgetTracker) -> None:
    """Add what a finished sub-budget spent to its parent, beyond the tokens and eFLOPs its calls already
    charged there as they settled (spend that went through no reservation, a reward model's, too)."""
    reserver = child.reserver
    settled_tokens, settled_eflops = (
        (reserver.settled_tokens, reserver.settled_eflops)
        if isinstance(reserver, _ParentReserver)
        else (0, 0.0)
    )
    mine, theirs = parent.spend, child.spend
    mine.completion_tokens += theirs.completion_tokens - settled_tokens
    mine.eflops += theirs.eflops - settled_eflops
    mine.prompt_tokens += theirs.prompt_tokens
    mine.cached_prompt_tokens += theirs.cached_prompt_tokens
    mine.engine_requests += theirs.engine_requests
    mine.verifier_requests += theirs.verifier_requests
    mine.reward_model_tokens += theirs.reward_model_tokens
    mine.engine_restarts += theirs.engine_restarts
    mine.engine_requests_stopped += theirs.engine_requests_stopped
    mine.peak_kv_tokens = max(mine.peak_kv_tokens, theirs.peak_kv_tokens)
