"""POST /v1/solve/batch: many problems, one total budget, run as a background job (202 with the job).

Everything that can be checked before spending is checked at submission (a 400 then, never a failed job):
every problem's prompt and sampling, its verifier, and that the budget pays the fairness minimum for all.
The job (kind `solve.batch`, any replica's worker) prepares the problems again and runs strategies/batch.py
under one budget tracker; its progress events say problems done, spend and accuracy so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from service.api import jobs
from service.api.auth import caller_of
from service.api.protocol import (
    BatchProblem,
    BatchProblemResult,
    BatchProblemUsage,
    BatchSolveRequest,
    BatchSolveResponse,
    BatchSummary,
    ChatMessage,
    Job,
    new_id,
)
from service.api.solver import (
    Solved,
    candidates_out,
    check_context,
    limits_of,
    question_of,
    render,
    sampling_spec,
)
from service.api.state import ServiceState, StateDep
from service.api.tenancy import Tenant, tenant_of
from service.runtime.affinity import affinity_scope
from service.runtime.budget import BudgetLimits, BudgetTracker
from service.runtime.engine import count_prompt_tokens
from service.runtime.errors import InvalidRequest
from service.runtime.settings import Settings
from service.store import allocation as store
from strategies.allocation.batch import Fairness, Remaining, Rules, require_minimum
from strategies.allocation.costs import SecondsModel
from strategies.allocation.profiles import load_profiles
from strategies.allocator import AutoParams, seconds_model
from strategies.base import Result, Task, parse_params
from strategies.batch import BatchItem, Outcome, base_situation, run_batch
from verifiers import build_verifier
from verifiers.answers import AnswerSpec

router = APIRouter(prefix="/v1")
KIND = "solve.batch"


def rules_of(body: BatchSolveRequest) -> tuple[Rules, Fairness]:
    a = body.allocation
    rules = Rules(
        probe_samples=a.probe_samples,
        min_gain=a.min_gain,
        round_share=a.round_share,
        max_samples=a.max_samples,
        max_rounds=a.max_rounds,
        vote=a.vote,
        keep_percent=a.keep_percent,
        consensus=a.consensus,
        strategies=None if a.strategies is None else frozenset(a.strategies),
    )
    return rules, Fairness(a.min_samples, a.max_share, a.allow_abstain)


async def prepare_items(
    state: ServiceState, problems: list[BatchProblem], budget: BudgetTracker, where: Callable[[int], str]
) -> list[BatchItem]:
    """Every problem as the runner takes it; a bad one is a 400 naming it (`where(index)`)."""
    engine, _ = state.require_engine()
    settings = state.settings
    items = []
    for index, problem in enumerate(problems):
        at = where(index)
        try:
            family = parse_params(AutoParams, problem.params).family
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=f"{at}.{exc.param}") from exc
        messages = problem.messages or [ChatMessage(role="user", content=problem.prompt or "")]
        prompt = render(engine, messages)
        sampling = sampling_spec(problem.sampling)
        check_context(engine, prompt, sampling.max_tokens, f"{at}.sampling.max_tokens")
        answer = AnswerSpec(problem.answer.type, problem.answer.pattern)
        verifier = calibration = None
        if problem.verifier is not None:
            try:
                verifier = build_verifier(
                    problem.verifier.name,
                    problem.verifier.options(),
                    engine,
                    budget,
                    answer,
                    settings.reward_models,
                )
            except InvalidRequest as exc:
                raise InvalidRequest(exc.message, param=f"{at}.{exc.param or 'verifier'}") from exc
            calibration = await store.load_calibration(state.redis, verifier.name, family)
        task = Task(
            prompt=prompt,
            question=question_of(messages),
            params={},
            sampling=sampling,
            answer=answer,
            settings=settings,
            budget_given=True,
            redis=state.redis,
        )
        key = problem.id if problem.id is not None else str(index)
        items.append(
            BatchItem(
                key,
                task,
                verifier,
                count_prompt_tokens(engine, prompt),
                calibration,
                problem.reference_answer,
            )
        )
    return items


def in_flight(settings: Settings) -> int:
    """Samples one batch may have in flight: its key's share of the replica's admission queue."""
    return int(settings.admission_max_sequences * settings.admission_key_share)


def check_minimum(
    items: list[BatchItem], budget: BudgetTracker, max_samples: int, fairness: Fairness, flight: int
) -> None:
    """The fairness minimum must be payable for every problem (expected cost, its calls sharing the weight
    reads as one round does), unless abstention is allowed: the allocator's own rule (BudgetExhausted, a
    400, otherwise)."""
    bases = [base_situation(item, budget, SecondsModel(), max_samples, flight) for item in items]
    require_minimum(bases, Remaining(budget.limits.tokens, budget.limits.eflops), fairness)


def batch_limits(body: BatchSolveRequest, state: ServiceState, tenant: Tenant) -> BudgetLimits:
    """The batch's caps: as asked, narrowed by the key's ceiling. An axis it leaves out gets the largest a
    request may ask (TTC_MAX_BUDGET_TOKENS, TTC_MAX_BUDGET_SECONDS), not one request's default: the named
    cap is the batch's, and a batch of hundreds of problems needs more than one request's seconds."""
    settings = state.settings
    spec = body.budget.model_copy(
        update={
            "tokens": body.budget.tokens or settings.max_budget_tokens,
            "seconds": body.budget.seconds or settings.max_budget_seconds,
        }
    )
    limits, _ = limits_of(spec, settings, tenant.ceiling())
    return limits


def tracker(state: ServiceState, limits: BudgetLimits, tenant: Tenant) -> BudgetTracker:
    engine, hardware = state.require_engine()
    settings = state.settings
    return BudgetTracker(
        limits, engine.shape, hardware, settings.count_weight_loading, reserver=tenant.reserver()
    )


async def validate(state: ServiceState, body: BatchSolveRequest, tenant: Tenant) -> None:
    budget = tracker(state, batch_limits(body, state, tenant), tenant)
    items = await prepare_items(state, body.problems, budget, lambda index: f"problems.{index}")
    rules, fairness = rules_of(body)
    settings = state.settings
    check_minimum(items, budget, min(rules.max_samples, settings.max_samples), fairness, in_flight(settings))


async def solve_batch(
    state: ServiceState,
    tenant: Tenant,
    problems: list[BatchProblem],
    budget_limits: BudgetLimits,
    rules: Rules,
    fairness: Fairness,
    progress: Callable[[dict[str, Any]], None] | None,
) -> tuple[list[Outcome], Solved]:
    """Run the batch under one tracker as the tenant (one slot, every call reserved in its quota)."""
    engine, _ = state.require_engine()
    settings = state.settings
    budget = tracker(state, budget_limits, tenant)
    items = await prepare_items(state, problems, budget, lambda index: f"problems.{index}")
    seconds: SecondsModel = await seconds_model(items[0].task)
    profiles = load_profiles(settings.allocator_profile_dir)
    profile = profiles.get("best_of_n")
    started = time.monotonic()
    status = "error"
    try:
        with affinity_scope():
            async with tenant.slot(budget_limits.seconds):
                outcomes = await run_batch(
                    items,
                    engine,
                    budget,
                    rules,
                    fairness,
                    profile,
                    seconds,
                    min(rules.max_samples, settings.max_samples),
                    progress,
                    in_flight(settings),
                    others=profiles,
                )
        status = "ok"
    finally:
        spend = budget.finish()
        state.metrics.observe_solve("batch", status, time.monotonic() - started, spend)
    return outcomes, Solved("batch", Result("", None, [], {}), spend, budget_limits)


def problem_result(outcome: Outcome, return_candidates: bool) -> BatchProblemResult:
    result, ledger = outcome.result, outcome.ledger
    candidates = candidates_out(result.candidates) if return_candidates else None
    return BatchProblemResult(
        id=outcome.item.key,
        answer=result.answer,
        text=result.text,
        abstained=result.abstained,
        samples=ledger.samples,
        correct=outcome.correct,
        params=result.params,
        usage=BatchProblemUsage(eflops=ledger.eflops, completion_tokens=ledger.tokens),
        candidates=candidates,
        details=result.details,
    )


def summary_of(outcomes: list[Outcome]) -> BatchSummary:
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        statuses[outcome.ledger.status] = statuses.get(outcome.ledger.status, 0) + 1
    known = [o for o in outcomes if o.correct is not None]
    correct = sum(1 for o in known if o.correct)
    rounds = max((int(s.get("round", 0)) for o in outcomes for s in o.ledger.steps), default=0)
    return BatchSummary(
        problems=len(outcomes),
        answered=sum(1 for o in outcomes if not o.result.abstained),
        abstained=sum(1 for o in outcomes if o.result.abstained),
        samples=sum(o.ledger.samples for o in outcomes),
        rounds=rounds,
        statuses=statuses,
        known_answers=len(known),
        correct=correct,
        accuracy=round(correct / len(known), 4) if known else None,
    )


async def run_batch_job(
    state: ServiceState, tenant: Tenant, request: dict[str, Any], progress: Any
) -> dict[str, Any]:
    """The background job of POST /v1/solve/batch (service/api/jobs.py runs it as its owner)."""
    body = BatchSolveRequest.model_validate(request)
    limits = batch_limits(body, state, tenant)
    rules, fairness = rules_of(body)
    outcomes, solved = await solve_batch(state, tenant, body.problems, limits, rules, fairness, progress)
    engine, _ = state.require_engine()
    response = BatchSolveResponse(
        id=new_id("batch"),
        created=int(time.time()),
        model=engine.model_name,
        problems=[
            problem_result(outcome, problem.return_candidates)
            for outcome, problem in zip(outcomes, body.problems, strict=True)
        ],
        summary=summary_of(outcomes),
        usage=solved.usage(),
        budget=solved.budget_report(),
    )
    return response.model_dump(mode="json")


@router.post(
    "/solve/batch",
    status_code=202,
    response_model=Job,
    summary="Answer many problems within ONE total budget (a background job)",
    responses={202: {"model": Job, "description": "The queued job; GET /v1/jobs/{id} for the result."}},
)
async def solve_batch_route(
    body: BatchSolveRequest,
    request: Request,
    state: StateDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    tenant = tenant_of(request, state)
    await validate(state, body, tenant)
    payload = body.model_dump(mode="json", exclude_unset=True)
    job = await jobs.submit(state, caller_of(request), KIND, "/v1/solve/batch", payload, idempotency_key)
    return JSONResponse(job.model_dump(mode="json"), status_code=202)
