"""Budget arithmetic with a scripted engine (pure logic; the real engine's caps are tested over HTTP)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from service.runtime.budget import BudgetLimits, BudgetTracker, absorb, sub_budget
from service.runtime.cost import Hardware, ModelShape, worst_case_eflops
from service.runtime.engine import Delta, Prompt, SamplingSpec, StreamState
from service.runtime.errors import BudgetExhausted, EngineLost

SHAPE = ModelShape(parameters=1_000_000, layers=2, query_heads=2, kv_heads=1, head_dim=8)
HARDWARE = Hardware("test", 100.0, 1.0)


class ScriptedEngine:
    """Every sample writes `length` tokens (or max_tokens, whichever is less), one per 10 ms."""

    model_name = "scripted"
    max_model_len = 4096
    shape = SHAPE

    def __init__(self, length: int, step_seconds: float = 0.0, abort_seconds: float = 0.0) -> None:
        self.length = length
        self.step_seconds = step_seconds
        self.abort_seconds = abort_seconds  # how long stopping a call takes (a remote abort, a loaded loop)
        self.calls: list[SamplingSpec] = []

    def render_chat(self, messages: Sequence[dict[str, Any]]) -> str:
        return "".join(str(message["content"]) for message in messages)

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join("x" for _ in token_ids)

    async def stream(self, prompt: Prompt, spec: SamplingSpec, state: StreamState) -> AsyncIterator[Delta]:
        self.calls.append(spec)
        state.prompt_tokens = len(prompt) if isinstance(prompt, list) else len(self.encode(prompt))
        try:
            for step in range(min(self.length, spec.max_tokens)):
                if self.step_seconds:
                    await asyncio.sleep(self.step_seconds)
                last = step == min(self.length, spec.max_tokens) - 1
                for index in range(spec.n):
                    yield Delta(index, "x ", (step,), "stop" if last else None)
        except asyncio.CancelledError:
            await asyncio.sleep(self.abort_seconds)
            raise

    def running_requests(self) -> int:
        return 0

    async def check_health(self) -> None:
        return None

    async def close(self) -> None:
        return None


def tracker(**limits: Any) -> BudgetTracker:
    return BudgetTracker(BudgetLimits(**limits), SHAPE, HARDWARE, count_weight_loading=True)


def test_fit_shrinks_samples_before_length() -> None:
    budget = tracker(tokens=1000)
    assert budget.fit(10, 16, 100) == (10, 100)
    assert budget.fit(10, 4, 100) == (4, 100)
    assert tracker(tokens=50).fit(10, 16, 100) == (1, 50)


def test_fit_respects_eflops() -> None:
    cap = worst_case_eflops(SHAPE, HARDWARE, 10, 3, 100, True)
    samples, max_tokens = tracker(eflops=cap).fit(10, 16, 100)
    assert (samples, max_tokens) == (3, 100)
    assert worst_case_eflops(SHAPE, HARDWARE, 10, samples, max_tokens, True) <= cap


def test_token_cap_holds_under_parallel_calls() -> None:
    async def scenario() -> BudgetTracker:
        budget = tracker(tokens=300)
        engine = ScriptedEngine(length=80)

        async def one() -> None:
            with contextlib.suppress(BudgetExhausted):
                await budget.generate(engine, "a question", SamplingSpec(n=2, max_tokens=80))

        await asyncio.gather(*(one() for _ in range(10)))
        return budget

    budget = asyncio.run(scenario())
    assert 0 < budget.spend.completion_tokens <= 300


def test_exhausted_budget_raises() -> None:
    budget = tracker(tokens=5)
    engine = ScriptedEngine(length=5)
    asyncio.run(budget.generate(engine, "q", SamplingSpec(n=1, max_tokens=100)))
    assert budget.spend.completion_tokens == 5
    with pytest.raises(BudgetExhausted):
        asyncio.run(budget.generate(engine, "q", SamplingSpec(n=1, max_tokens=100)))


def test_seconds_cap_returns_partial_samples() -> None:
    budget = tracker(seconds=0.2)
    engine = ScriptedEngine(length=1000, step_seconds=0.01)
    generation = asyncio.run(budget.generate(engine, "q", SamplingSpec(n=2, max_tokens=1000)))
    assert budget.finish().seconds < 0.5
    assert all(sample.finish_reason == "abort" for sample in generation.samples)
    assert 0 < generation.samples[0].tokens < 1000


def test_the_seconds_cap_holds_although_stopping_the_engine_takes_time() -> None:
    """Engine work stops a little before the deadline, so the call's abort and the strategy's wrap-up fit in
    the cap (the load harness found 30.45 s spent of a 30 s cap past saturation)."""
    budget = tracker(seconds=2.0)
    engine = ScriptedEngine(length=10_000, step_seconds=0.01, abort_seconds=0.03)
    asyncio.run(budget.generate(engine, "q", SamplingSpec(n=1, max_tokens=10_000)))
    assert 1.5 < budget.finish().seconds <= 2.0


def test_a_sub_budget_holds_its_own_cap_and_its_parents_and_charges_the_parent() -> None:
    async def scenario() -> tuple[BudgetTracker, BudgetTracker, BudgetTracker]:
        parent = tracker(tokens=300)
        engine = ScriptedEngine(length=80)
        first, second = (
            sub_budget(parent, BudgetLimits(tokens=200)),
            sub_budget(parent, BudgetLimits(tokens=200)),
        )

        async def spend(budget: BudgetTracker) -> None:
            for _ in range(5):
                with contextlib.suppress(BudgetExhausted):
                    await budget.generate(engine, "a question", SamplingSpec(n=2, max_tokens=80))

        await asyncio.gather(spend(first), spend(second))
        absorb(parent, first)
        absorb(parent, second)
        return parent, first, second

    parent, first, second = asyncio.run(scenario())
    assert first.spend.completion_tokens <= 200 and second.spend.completion_tokens <= 200
    assert 0 < parent.spend.completion_tokens <= 300  # both together never past the parent's cap
    assert parent.spend.completion_tokens == first.spend.completion_tokens + second.spend.completion_tokens
    assert parent.spend.eflops == pytest.approx(first.spend.eflops + second.spend.eflops)
    assert parent.spend.engine_requests == first.spend.engine_requests + second.spend.engine_requests
    assert parent.spend.prompt_tokens == first.spend.prompt_tokens + second.spend.prompt_tokens
    assert parent.remaining_tokens() == 300 - parent.spend.completion_tokens  # no reservation left behind


class DyingOnceEngine(ScriptedEngine):
    """Its first call dies half-way (the engine under it was lost, another takes over); later calls finish."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.lost = False

    async def stream(self, prompt: Prompt, spec: SamplingSpec, state: StreamState) -> AsyncIterator[Delta]:
        async with contextlib.aclosing(super().stream(prompt, spec, state)) as deltas:
            async for delta in deltas:
                if not self.lost and delta.token_ids[0] == self.length // 2:
                    self.lost = True
                    raise EngineLost("killed under the call")
                yield delta


def test_a_call_lost_with_its_engine_is_redone_whole_and_counted() -> None:
    budget = tracker(tokens=1000)
    engine = DyingOnceEngine(length=10)
    generation = asyncio.run(budget.generate(engine, "q", SamplingSpec(n=2, max_tokens=100)))
    assert len(engine.calls) == 2 and generation.restarts == 1
    assert [sample.tokens for sample in generation.samples] == [10, 10]  # not the lost half glued on
    assert budget.spend.engine_restarts == 1
