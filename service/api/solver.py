"""From a validated request to a strategy run and back: the one path every endpoint with `ttc` takes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from service.api.protocol import (
    BudgetReport,
    BudgetSpec,
    CandidateOut,
    ChatMessage,
    TTCOptions,
    Usage,
)
from service.api.state import ServiceState
from service.runtime.affinity import affinity_scope
from service.runtime.budget import BudgetLimits, BudgetTracker, Spend
from service.runtime.engine import Engine, SamplingSpec, count_prompt_tokens
from service.runtime.errors import InvalidRequest, StorageUnavailable
from service.runtime.settings import Settings
from service.store.corpora import CorpusRetriever, CorpusStore
from strategies import get_strategy
from strategies.base import ProgressCallback, RagContext, Result, Task
from verifiers import build_verifier
from verifiers.answers import AnswerSpec


@dataclass
class Solved:
    """A finished run: the strategy's result plus what it spent."""

    strategy: str
    result: Result
    spend: Spend
    limits: BudgetLimits

    def usage(self) -> Usage:
        spend = self.spend
        return Usage(
            prompt_tokens=spend.prompt_tokens,
            completion_tokens=spend.completion_tokens,
            total_tokens=spend.prompt_tokens + spend.completion_tokens,
            cached_prompt_tokens=spend.cached_prompt_tokens,
            engine_requests=spend.engine_requests,
            verifier_requests=spend.verifier_requests,
            reward_model_tokens=spend.reward_model_tokens,
            eflops=spend.eflops,
            peak_kv_tokens=spend.peak_kv_tokens,
            seconds=round(spend.seconds, 4),
            engine_restarts=spend.engine_restarts,
        )

    def budget_report(self) -> BudgetReport:
        limits, spend = self.limits, self.spend
        requested = BudgetSpec(
            tokens=limits.tokens,
            eflops=limits.eflops,
            seconds=limits.seconds,
            context_tokens=limits.context_tokens,
        )
        spent = BudgetSpec(
            tokens=spend.completion_tokens or None,
            eflops=spend.eflops or None,
            seconds=round(spend.seconds, 4) or None,
            context_tokens=spend.prompt_tokens or None,
        )
        return BudgetReport(requested=requested, spent=spent)

    def candidates(self) -> list[CandidateOut]:
        return [
            CandidateOut(
                text=candidate.text,
                answer=candidate.answer,
                score=candidate.score,
                votes=candidate.votes,
                tokens=candidate.tokens,
                finish_reason=candidate.finish_reason,
            )
            for candidate in self.result.candidates
        ]


def question_of(messages: Sequence[ChatMessage]) -> str:
    """What a verifier judges against: the last user message."""
    for message in reversed(messages):
        if message.role == "user":
            return message.text()
    return messages[-1].text()


def render(engine: Engine, messages: Sequence[ChatMessage]) -> str:
    """The conversation through the model's chat template, ready for the assistant's turn."""
    return engine.render_chat([{"role": message.role, "content": message.text()} for message in messages])


def limits_of(budget: BudgetSpec | None, settings: Settings) -> tuple[BudgetLimits, bool]:
    """The request's caps; a request naming none gets the default token budget."""
    if budget is None or all(
        value is None for value in (budget.tokens, budget.eflops, budget.seconds, budget.context_tokens)
    ):
        return BudgetLimits(tokens=settings.default_budget_tokens), False
    if budget.seconds is not None and budget.seconds > settings.max_budget_seconds:
        raise InvalidRequest(
            f"budget.seconds may be at most {settings.max_budget_seconds}.", param="budget.seconds"
        )
    if budget.tokens is not None and budget.tokens > settings.max_budget_tokens:
        raise InvalidRequest(
            f"budget.tokens may be at most {settings.max_budget_tokens}.", param="budget.tokens"
        )
    return BudgetLimits(budget.tokens, budget.eflops, budget.seconds, budget.context_tokens), True


def check_context(engine: Engine, prompt: str, max_tokens: int, param: str) -> None:
    """vLLM's rule: prompt plus max_tokens must fit in the context; a 400 rather than an engine error."""
    prompt_tokens = count_prompt_tokens(engine, prompt)
    if prompt_tokens + max_tokens > engine.max_model_len:
        raise InvalidRequest(
            f"This model's maximum context length is {engine.max_model_len} tokens; the prompt has "
            f"{prompt_tokens} and {param} asks for {max_tokens} more.",
            param=param,
        )


async def rag_context(options: TTCOptions, corpora: CorpusStore | None) -> RagContext | None:
    """The request's corpus, checked to exist before anything is spent (404 otherwise)."""
    if options.rag is None:
        return None
    if corpora is None:
        raise StorageUnavailable("Corpora are not available: the service has no Redis client.")
    await corpora.meta(options.rag.corpus)
    return RagContext(
        corpus=options.rag.corpus,
        retriever=CorpusRetriever(corpora, options.rag.corpus),
        k=options.rag.k,
        demos=options.rag.demos,
        iterations=options.rag.iterations,
    )


async def solve(
    state: ServiceState,
    options: TTCOptions,
    prompt: str,
    question: str,
    sampling: SamplingSpec,
    progress: ProgressCallback | None = None,
) -> Solved:
    """Validate everything that can be checked before spending, then run the strategy under its budget."""
    engine, hardware = state.require_engine()
    settings, metrics = state.settings, state.metrics
    strategy = get_strategy(options.strategy)
    check_context(engine, prompt, sampling.max_tokens, "sampling.max_tokens")
    limits, budget_given = limits_of(options.budget, settings)
    budget = BudgetTracker(limits, engine.shape, hardware, settings.count_weight_loading)
    answer = AnswerSpec(options.answer.type, options.answer.pattern)
    verifier = (
        build_verifier(
            options.verifier.name,
            options.verifier.options(),
            engine,
            budget,
            answer,
            settings.reward_model_hosts,
        )
        if options.verifier
        else None
    )
    rag = await rag_context(options, state.corpora)
    task = Task(
        prompt=prompt,
        question=question,
        params=options.params,
        sampling=sampling,
        answer=answer,
        settings=settings,
        budget_given=budget_given,
        progress=progress,
        rag=rag,
        redis=state.redis,
    )
    started = time.monotonic()
    status = "error"
    try:
        with affinity_scope():  # every engine call of this request goes to the same engine
            result = await strategy(task, engine, verifier, budget)
        status = "ok"
    finally:
        spend = budget.finish()
        metrics.observe_solve(options.strategy, status, time.monotonic() - started, spend)
    return Solved(options.strategy, result, spend, limits)
