"""A request's budget as a hard cap, and the accounting of what the request spent.

Every engine call of a request (samples and verifier calls alike) goes through `BudgetTracker.generate`, which
shrinks the call until its worst case fits what is left (tokens and eFLOPs, counting calls still in flight),
runs it with the request's deadline, and charges what it actually used. So the caps hold under any amount of
parallelism inside a strategy.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from service.runtime.cost import Hardware, ModelShape, generation_eflops, worst_case_eflops
from service.runtime.engine import Engine, Generation, Prompt, SamplingSpec, count_prompt_tokens, generate
from service.runtime.errors import BudgetExhausted


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


class BudgetTracker:
    """Holds one request's limits and spend; created per request, never shared."""

    def __init__(
        self,
        limits: BudgetLimits,
        shape: ModelShape,
        hardware: Hardware,
        count_weight_loading: bool = True,
    ) -> None:
        self.limits = limits
        self.shape = shape
        self.hardware = hardware
        self.count_weight_loading = count_weight_loading
        self.started = time.monotonic()
        self.deadline = self.started + limits.seconds if limits.seconds is not None else None
        self.spend = Spend()
        self._reserved_tokens = 0
        self._reserved_eflops = 0.0
        self._reserved_context = 0

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

    def _worst_eflops(self, prompt_tokens: int, samples: int, max_tokens: int) -> float:
        return worst_case_eflops(
            self.shape, self.hardware, prompt_tokens, samples, max_tokens, self.count_weight_loading
        )

    def fit(self, prompt_tokens: int, samples: int, max_tokens: int) -> tuple[int, int]:
        """The largest (samples, max_tokens) not above the asked ones whose worst case fits what is left.

        Fewer samples first (each keeps its full length, so answers are not cut off), then shorter ones.
        Returns (0, 0) when not even one token can be paid for.
        """
        if self.expired():
            return 0, 0
        context_left = self._context_left()
        if context_left is not None and prompt_tokens > context_left:
            return 0, 0
        tokens_left = self.remaining_tokens()
        if tokens_left is not None:
            if tokens_left <= 0:
                return 0, 0
            samples = min(samples, max(tokens_left // max_tokens, 1))
            max_tokens = min(max_tokens, tokens_left // samples)
        eflops_left = self.remaining_eflops()
        if eflops_left is not None:
            while samples > 1 and self._worst_eflops(prompt_tokens, samples, max_tokens) > eflops_left:
                samples -= 1
            low, high = 0, max_tokens
            while low < high:  # longest max_tokens that fits
                middle = (low + high + 1) // 2
                if self._worst_eflops(prompt_tokens, samples, middle) <= eflops_left:
                    low = middle
                else:
                    high = middle - 1
            max_tokens = low
        if max_tokens <= 0 or samples <= 0:
            return 0, 0
        return samples, max_tokens

    def _context_left(self) -> int | None:
        if self.limits.context_tokens is None:
            return None
        return self.limits.context_tokens - self.spend.prompt_tokens - self._reserved_context

    # -- spending -----------------------------------------------------------------------------------------
    async def generate(
        self,
        engine: Engine,
        prompt: Prompt,
        spec: SamplingSpec,
        purpose: str = "sample",
        prompt_tokens: int | None = None,
    ) -> Generation:
        """Run one engine call inside the budget; raises BudgetExhausted if nothing of it can be paid for."""
        if prompt_tokens is None:
            prompt_tokens = count_prompt_tokens(engine, prompt)
        samples, max_tokens = self.fit(prompt_tokens, spec.n, spec.max_tokens)
        if samples == 0:
            raise BudgetExhausted("The budget left cannot pay for another engine call.", param="budget")
        spec = dataclasses.replace(spec, n=samples, max_tokens=max_tokens)
        reserved_eflops = self._worst_eflops(prompt_tokens, samples, max_tokens)
        self._reserved_tokens += samples * max_tokens
        self._reserved_eflops += reserved_eflops
        self._reserved_context += prompt_tokens
        try:
            generation = await generate(engine, prompt, spec, self.deadline)
        finally:
            self._reserved_tokens -= samples * max_tokens
            self._reserved_eflops -= reserved_eflops
            self._reserved_context -= prompt_tokens
        self.charge(generation, purpose)
        return generation

    def charge(self, generation: Generation, purpose: str = "sample") -> None:
        spend = self.spend
        spend.prompt_tokens += generation.prompt_tokens
        spend.completion_tokens += generation.completion_tokens
        spend.cached_prompt_tokens += generation.cached_prompt_tokens
        spend.engine_restarts += generation.restarts
        if purpose == "verifier":
            spend.verifier_requests += 1
        else:
            spend.engine_requests += 1
        spend.eflops += generation_eflops(
            self.shape,
            self.hardware,
            generation.prompt_tokens,
            generation.cached_prompt_tokens,
            [sample.tokens for sample in generation.samples],
            self.count_weight_loading,
        )
        self.observe_kv(generation.prompt_tokens + generation.completion_tokens)

    def observe_kv(self, live_tokens: int) -> None:
        """Record how many distinct tokens the request holds in the KV cache at one moment."""
        self.spend.peak_kv_tokens = max(self.spend.peak_kv_tokens, live_tokens)

    def finish(self) -> Spend:
        self.spend.seconds = time.monotonic() - self.started
        return self.spend
