"""From a validated request to a strategy run and back: the one path every endpoint with `ttc` takes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from service.api.protocol import (
    BudgetReport,
    BudgetSpec,
    CandidateOut,
    ChatMessage,
    SamplingOptions,
    TTCOptions,
    Usage,
)
from service.api.state import ServiceState
from service.api.tenancy import Tenant
from service.runtime.affinity import affinity_scope
from service.runtime.budget import BudgetLimits, BudgetTracker, Spend
from service.runtime.engine import Engine, SamplingSpec, count_prompt_tokens
from service.runtime.errors import InvalidRequest, StorageUnavailable
from service.runtime.settings import Settings
from service.store.corpora import CorpusRetriever, CorpusStore
from strategies import answer_default, get_strategy, sampling_defaults
from strategies.base import Candidate, ProgressCallback, RagContext, Result, Task
from strategies.selection import ranked
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
            engine_requests_stopped=spend.engine_requests_stopped,
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
        return candidates_out(self.result.candidates)


def candidates_out(candidates: Sequence[Candidate]) -> list[CandidateOut]:
    """A run's candidates as the API shows them."""
    return [
        CandidateOut(
            text=candidate.text,
            answer=candidate.answer,
            score=candidate.score,
            votes=candidate.votes,
            tokens=candidate.tokens,
            finish_reason=candidate.finish_reason,
        )
        for candidate in candidates
    ]


def sampling_spec(options: SamplingOptions) -> SamplingSpec:
    """One sample's sampling from a /v1/solve-style body (strategies set n themselves)."""
    return SamplingSpec(
        n=1,
        temperature=options.temperature,
        top_p=options.top_p,
        max_tokens=options.max_tokens,
        stop=tuple(options.stop),
        seed=options.seed,
    )


def question_of(messages: Sequence[ChatMessage]) -> str:
    """What a verifier judges against: the last user message."""
    for message in reversed(messages):
        if message.role == "user":
            return message.text()
    return messages[-1].text()


def render(engine: Engine, messages: Sequence[ChatMessage]) -> str:
    """The conversation through the model's chat template, ready for the assistant's turn."""
    return engine.render_chat([message.template_dict() for message in messages])


def _narrow(asked: float | None, ceiling: float | None) -> float | None:
    if asked is None:
        return ceiling
    return asked if ceiling is None else min(asked, ceiling)


def limits_of(
    budget: BudgetSpec | None, settings: Settings, ceiling: BudgetLimits | None = None
) -> tuple[BudgetLimits, bool]:
    """The request's caps: what it asked, narrowed on every axis by its key's `ceiling`. Every request gets a
    token cap and a seconds cap (the settings' defaults when it names none), so naming only `eflops` (or
    nothing) escapes no other cap."""
    given = budget is not None and any(
        value is not None for value in (budget.tokens, budget.eflops, budget.seconds, budget.context_tokens)
    )
    spec = budget if budget is not None else BudgetSpec()
    if spec.seconds is not None and spec.seconds > settings.max_budget_seconds:
        raise InvalidRequest(
            f"budget.seconds may be at most {settings.max_budget_seconds}.", param="budget.seconds"
        )
    if spec.tokens is not None and spec.tokens > settings.max_budget_tokens:
        raise InvalidRequest(
            f"budget.tokens may be at most {settings.max_budget_tokens}.", param="budget.tokens"
        )
    cap = ceiling or BudgetLimits()
    tokens = _narrow(spec.tokens if spec.tokens is not None else settings.default_budget_tokens, cap.tokens)
    seconds = _narrow(
        spec.seconds if spec.seconds is not None else settings.default_budget_seconds, cap.seconds
    )
    context = _narrow(spec.context_tokens, cap.context_tokens)
    limits = BudgetLimits(
        tokens=None if tokens is None else int(tokens),
        eflops=_narrow(spec.eflops, cap.eflops),
        seconds=seconds,
        context_tokens=None if context is None else int(context),
    )
    return limits, given


def plain_budget(state: ServiceState, tenant: Tenant) -> BudgetTracker:
    """The budget of a plain OpenAI call (no `ttc`): the key's ceiling and the default seconds cap, and the
    same quota and admission reservation as any strategy's call."""
    engine, hardware = state.require_engine()
    settings = state.settings
    ceiling = tenant.ceiling() or BudgetLimits()
    seconds = settings.default_budget_seconds
    limits = dataclasses.replace(
        ceiling, seconds=seconds if ceiling.seconds is None else min(seconds, ceiling.seconds)
    )
    return BudgetTracker(
        limits, engine.shape, hardware, settings.count_weight_loading, reserver=tenant.reserver()
    )


def check_prompt_length(engine: Engine, prompt: str, param: str) -> None:
    """A prompt too long to fit whatever its tokens is a 400 before it is tokenised (on the event loop):
    more characters than the context times the vocabulary's longest token."""
    if len(prompt) > engine.max_model_len * engine.max_token_chars:
        raise InvalidRequest(
            f"This model's maximum context length is {engine.max_model_len} tokens; the prompt has "
            f"{len(prompt)} characters, more than that many tokens can hold.",
            param=param,
        )


def check_context(engine: Engine, prompt: str, max_tokens: int, param: str) -> None:
    """vLLM's rule: prompt plus max_tokens must fit in the context; a 400 rather than an engine error."""
    check_prompt_length(engine, prompt, param)
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


def answer_spec(options: TTCOptions, sampling: SamplingSpec) -> AnswerSpec:
    """How answers are read: as asked; when the request names no answer type, as parsed JSON in canonical form
    if it constrains samples to JSON (so equal objects vote together however they are spaced), else as the
    strategy reads its answers by default."""
    if "answer" not in options.model_fields_set:
        if sampling.structured is not None and sampling.structured.is_json:
            return AnswerSpec("json")
        default_type = answer_default(options.strategy, options.rag is not None)  # e.g. RAG answers are text
        if default_type is not None:
            return AnswerSpec(default_type, None)
    return AnswerSpec(options.answer.type, options.answer.pattern)


def parsed_winner(result: Result, answer: AnswerSpec) -> Result:
    """With JSON answers, a candidate that does not parse never wins while one that parses exists (it can be
    chosen by `max` selection or a tree's best leaf, which look at scores, not answers)."""
    if answer.type != "json" or result.answer is not None or result.abstained:
        return result
    parsed = [candidate for candidate in result.candidates if candidate.answer is not None]
    if not parsed:
        return result
    best = ranked(parsed, result.params.get("selection", "majority"))[0]
    return dataclasses.replace(result, text=best.text, answer=best.answer)


async def solve(
    state: ServiceState,
    options: TTCOptions,
    prompt: str,
    question: str,
    sampling: SamplingSpec,
    progress: ProgressCallback | None = None,
    tenant: Tenant | None = None,
    sampling_given: Collection[str] | None = None,
) -> Solved:
    """Validate everything that can be checked before spending, then run the strategy under its budget
    (narrowed by the caller's key, every engine call reserved in its quota and the admission queue).

    `sampling_given`: the sampling fields the client set; the others take the strategy's own defaults
    (strategies.SAMPLING_DEFAULTS). None: take `sampling` as it is."""
    engine, hardware = state.require_engine()
    settings, metrics = state.settings, state.metrics
    strategy = get_strategy(options.strategy)
    if sampling_given is not None:
        own = sampling_defaults(options.strategy, options.rag is not None)
        sampling = dataclasses.replace(
            sampling, **{key: value for key, value in own.items() if key not in sampling_given}
        )
    check_context(engine, prompt, sampling.max_tokens, "sampling.max_tokens")
    limits, budget_given = limits_of(options.budget, settings, tenant.ceiling() if tenant else None)
    budget = BudgetTracker(
        limits,
        engine.shape,
        hardware,
        settings.count_weight_loading,
        reserver=tenant.reserver() if tenant else None,
    )
    answer = answer_spec(options, sampling)
    verifier = (
        build_verifier(
            options.verifier.name,
            options.verifier.options(),
            engine,
            budget,
            answer,
            settings.reward_models,
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
            if tenant is None:
                result = await strategy(task, engine, verifier, budget)
            else:
                async with tenant.slot(limits.seconds):
                    result = await strategy(task, engine, verifier, budget)
        result = parsed_winner(result, answer)
        status = "ok"
    finally:
        spend = budget.finish()
        metrics.observe_solve(options.strategy, status, time.monotonic() - started, spend)
    return Solved(options.strategy, result, spend, limits)
