"""Many prompts under one budget (POST /v1/solve/batch): the engine side of strategies/allocation/batch.py.

Not a per-prompt strategy (it is not in the registry): it takes every prompt of a batch and ONE
`BudgetTracker` for all of them, so the batch's caps hold however its calls interleave. Each round's draws
run at once (the engine batches them); every draw asks the tracker first, which reserves its worst case. The
allocation logic (who gets the next samples, and why) is pure and lives in strategies/allocation/batch.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.runtime.budget import BudgetLimits, BudgetTracker, absorb, sub_budget
from service.runtime.concurrency import gather_or_cancel
from service.runtime.cost import generation_eflops
from service.runtime.engine import Engine
from service.runtime.errors import BudgetExhausted, Rejected
from service.store.allocation import VerifierCalibration
from strategies import get_strategy
from strategies.allocation.batch import (
    Cost,
    Drawn,
    Fairness,
    Ledger,
    Prompt,
    Remaining,
    Rules,
    Step,
    Vote,
    allocate,
    unsampled,
    vote_of,
)
from strategies.allocation.costs import CallShape, SecondsModel, lockstep
from strategies.allocation.difficulty import BIN_EDGES, BIN_NAMES
from strategies.allocation.plans import Situation
from strategies.allocation.profiles import Profile
from strategies.allocator import JUDGE_PROMPT_OVERHEAD
from strategies.base import Candidate, Result, Task, settle_empty
from strategies.confidence import lowest_group_confidence
from strategies.deepconf import DeepConfParams, sample_confidences
from strategies.selection import confident, select
from verifiers.answers import answers_equal
from verifiers.base import Verifier


@dataclass
class BatchItem:
    """One problem of the batch, ready to sample."""

    key: str
    task: Task
    verifier: Verifier | None
    prompt_tokens: int
    calibration: VerifierCalibration | None = None
    reference: str | None = None  # the known answer, for reported accuracy only


class SequenceGate:
    """At most `limit` samples in flight from this batch: a round of hundreds of prompts would otherwise ask
    the admission queue for more sequences than it holds, and its calls would wait there until refused."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 1)
        self.used = 0
        self.changed = asyncio.Condition()

    async def run(self, samples: int, work: Callable[[], Awaitable[Drawn]]) -> Drawn:
        need = min(samples, self.limit)
        async with self.changed:
            await self.changed.wait_for(lambda: self.used + need <= self.limit)
            self.used += need
        try:
            return await work()
        finally:
            async with self.changed:
                self.used -= need
                self.changed.notify_all()


@dataclass
class Outcome:
    """One problem's answer, what it got, and why."""

    item: BatchItem
    result: Result
    ledger: Ledger
    correct: bool | None


def base_situation(
    item: BatchItem,
    budget: BudgetTracker,
    seconds: SecondsModel,
    max_samples: int,
    in_flight: int | None = None,
) -> Situation:
    """The prompt before any sample, as auto's plan builders take it (its costs, its verifier, how many
    samples the batch may have in flight)."""
    max_tokens = item.task.sampling.max_tokens
    verifier_call = None
    if item.verifier is not None:
        verifier_call = CallShape(item.prompt_tokens + max_tokens // 2 + JUDGE_PROMPT_OVERHEAD, 1, 1.0, 1)
    return unsampled(
        Cost(budget.shape, budget.hardware, budget.count_weight_loading, seconds, in_flight),
        item.prompt_tokens,
        max_tokens,
        max_samples,
        item.verifier.name if item.verifier is not None else None,
        item.calibration,
        verifier_call,
    )


def remaining(budget: BudgetTracker) -> Remaining:
    return Remaining(budget.remaining_tokens(), budget.remaining_eflops())


# DeepConf's own defaults: its top-k logprobs per token and its sliding window
CONFIDENCE = DeepConfParams()


async def _draw_one(
    item: BatchItem, engine: Engine, budget: BudgetTracker, count: int, vote: Vote, weight_share: int = 1
) -> Drawn:
    """`count` samples of one prompt through the batch's tracker, scored by its verifier (or, for the
    confidence vote, by their lowest group confidence); what they cost, the weight reads shared with
    `weight_share` calls of its round. A refusal (the budget, the key's quota or the admission queue) brings
    nothing rather than failing the batch."""
    spec = dataclasses.replace(item.task.sampling, n=count)
    if vote == "confidence":
        spec = dataclasses.replace(spec, logprobs=CONFIDENCE.top_logprobs)
    try:
        generation = await budget.generate(
            engine, item.task.prompt, spec, prompt_tokens=item.prompt_tokens, weight_share=weight_share
        )
    except (BudgetExhausted, Rejected):
        return Drawn([], 0.0, 0)
    candidates = [Candidate.from_sample(sample, item.task.answer) for sample in generation.samples]
    if vote == "confidence":
        for candidate, sample in zip(candidates, generation.samples, strict=True):
            confidences = sample_confidences(sample, CONFIDENCE.top_logprobs)
            candidate.score = lowest_group_confidence(confidences, CONFIDENCE.window)
    lengths = [sample.tokens for sample in generation.samples]
    eflops = generation_eflops(
        budget.shape,
        budget.hardware,
        generation.prompt_tokens,
        generation.cached_prompt_tokens,
        lengths,
        budget.count_weight_loading,
        weight_share,
    )
    if item.verifier is not None and candidates and not budget.expired():
        try:
            scores = await item.verifier.score(item.task.question, [c.text for c in candidates])
        except BudgetExhausted:
            scores = []
        for candidate, score in zip(candidates, scores, strict=False):
            candidate.score = score
    return Drawn(candidates, eflops, sum(lengths))


def _answer(candidates: list[Candidate], vote: Vote, keep_percent: float) -> Candidate | None:
    if vote == "confidence":
        return confident(candidates, keep_percent)
    return select(candidates, vote)


def strategy_params(samples: int, vote: Vote, keep_percent: float) -> dict[str, Any]:
    """What a problem's answer amounts to as a per-prompt strategy: best-of-N, or DeepConf offline."""
    if vote == "confidence":
        return {"strategy": "deepconf", "mode": "offline", "n": samples, "keep_percent": keep_percent}
    return {"strategy": "best_of_n", "n": samples, "selection": vote}


def answered_params(ledger: Ledger) -> dict[str, Any] | None:
    """The strategy and parameters of the whole run that answered this problem, if one did."""
    if ledger.status != "answered":
        return None
    run = next((step for step in reversed(ledger.steps) if "strategy" in step), None)
    return None if run is None else {"strategy": run["strategy"], **run["params"]}


async def _run_whole(item: BatchItem, engine: Engine, budget: BudgetTracker, step: Step) -> Drawn:
    """One whole run of another strategy on one problem, under a sub-budget of the batch's tracker capped at
    the step's reservation (every call is also reserved in and charged to the batch). A refusal or an
    exhausted budget before its first call brings nothing."""
    limits = BudgetLimits(
        tokens=step.worst_tokens if budget.limits.tokens is not None else None,
        eflops=step.worst_eflops if budget.limits.eflops is not None else None,
    )
    child = sub_budget(budget, limits)
    task = dataclasses.replace(item.task, params=dict(step.params), budget_given=True)
    try:
        result = await get_strategy(step.strategy)(task, engine, item.verifier, child)
    except (BudgetExhausted, Rejected):
        return Drawn([], 0.0, 0)
    finally:
        absorb(budget, child)
    answer = None
    if result.answer is not None and not result.abstained:
        answer = Candidate(result.text, result.answer, child.spend.completion_tokens)
    return Drawn(result.candidates, child.spend.eflops, child.spend.completion_tokens, answer)


def _correct(item: BatchItem, answer: str | None) -> bool | None:
    if item.reference is None:
        return None
    return answer is not None and answers_equal(answer, item.reference, item.task.answer)


def _bin_name(p: float) -> str:
    return BIN_NAMES[sum(p >= edge for edge in BIN_EDGES)]


async def run_batch(
    items: Sequence[BatchItem],
    engine: Engine,
    budget: BudgetTracker,
    rules: Rules,
    fairness: Fairness,
    profile: Profile | None,
    seconds: SecondsModel,
    max_samples: int,
    progress: Callable[[dict[str, Any]], None] | None = None,
    in_flight: int = 64,
    others: Mapping[str, Profile] | None = None,
) -> list[Outcome]:
    """Allocate the batch's budget over its prompts and answer each one (see the module's docstring).
    `others`: the measured profiles of the strategies a problem may also run whole after its probe."""
    by_key = {item.key: item for item in items}
    prompts = [
        Prompt(item.key, base_situation(item, budget, seconds, max_samples, in_flight), item.calibration)
        for item in items
    ]
    votes = {prompt.key: vote_of(prompt.base, rules) for prompt in prompts}
    limits = Remaining(budget.limits.tokens, budget.limits.eflops)
    pools_seen: dict[str, list[Candidate]] = {item.key: [] for item in items}

    gate = SequenceGate(in_flight)

    def one(key: str, n: int, calls: int) -> Callable[[], Awaitable[Drawn]]:
        weight_share = lockstep(calls, n, gate.limit)
        return lambda: _draw_one(by_key[key], engine, budget, n, votes[key], weight_share)

    async def draw(steps: list[tuple[str, int]]) -> dict[str, Drawn]:
        drawn = await gather_or_cancel(*(gate.run(n, one(key, n, len(steps))) for key, n in steps))
        result = {}
        for (key, _), got in zip(steps, drawn, strict=True):
            pools_seen[key].extend(got.candidates)
            result[key] = got
        return result

    def report(phase: str, round_index: int, ledgers: Sequence[Ledger]) -> None:
        if progress is None:
            return
        done = [ledger for ledger in ledgers if ledger.status != "active"]
        known = correct = 0
        for ledger in done:
            item = by_key[ledger.key]
            if item.reference is None:
                continue
            chosen = ledger.answer or _answer(pools_seen[ledger.key], votes[ledger.key], rules.keep_percent)
            known += 1
            correct += bool(_correct(item, chosen.answer if chosen else None))
        progress(
            {
                "event": "batch",
                "phase": phase,
                "round": round_index,
                "problems": len(ledgers),
                "problems_done": len(done),
                "samples": sum(ledger.samples for ledger in ledgers),
                "spent": {
                    "eflops": budget.spend.eflops,
                    "completion_tokens": budget.spend.completion_tokens,
                    "seconds": round(time.monotonic() - budget.started, 3),
                },
                "accuracy_so_far": round(correct / known, 4) if known else None,
                "known_answers_done": known,
            }
        )

    async def run_whole(step: Step) -> Drawn:
        return await _run_whole(by_key[step.key], engine, budget, step)

    ledgers, pools = await allocate(
        prompts,
        draw,
        lambda: remaining(budget),
        limits,
        rules,
        fairness,
        profile,
        expired=budget.expired,
        progress=report,
        others=others,
        run_whole=run_whole,
    )
    report("done", max((int(s.get("round", 0)) for x in ledgers for s in x.steps), default=0), ledgers)
    outcomes = []
    for ledger in ledgers:
        item = by_key[ledger.key]
        candidates = pools[ledger.key]
        rule = votes[ledger.key]
        chosen = ledger.answer or _answer(candidates, rule, rules.keep_percent)
        allocation = {
            "samples": ledger.samples,
            "status": ledger.status,
            "reason": ledger.reason,
            "selection": rule,
            "difficulty": {"p": round(ledger.p, 4), "bin_name": _bin_name(ledger.p)},
            "predicted_accuracy": round(ledger.predicted_accuracy, 4),
            "spent_eflops": ledger.eflops,
            "spent_tokens": ledger.tokens,
            "steps": ledger.steps,
        }
        result = Result(
            text=chosen.text if chosen else "",
            answer=chosen.answer if chosen else None,
            candidates=candidates,
            params=answered_params(ledger) or strategy_params(len(candidates), rule, rules.keep_percent),
            abstained=chosen is None,
            details={"allocation": allocation},
        )
        if chosen is None:
            result.details["abstain_reason"] = f"no samples: {ledger.reason}"
        result = settle_empty(result)
        outcomes.append(Outcome(item, result, ledger, _correct(item, result.answer)))
    return outcomes
