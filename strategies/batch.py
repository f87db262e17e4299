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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.cost import generation_eflops
from service.runtime.engine import Engine
from service.runtime.errors import BudgetExhausted, Rejected
from service.store.allocation import VerifierCalibration
from strategies.allocation.batch import (
    Drawn,
    Fairness,
    Ledger,
    Prompt,
    Remaining,
    Rules,
    allocate,
    rule_of,
)
from strategies.allocation.costs import CallShape, SecondsModel
from strategies.allocation.difficulty import BIN_EDGES, BIN_NAMES, DEFAULT_WRONG_SHARES
from strategies.allocation.plans import Caps, Situation
from strategies.allocation.profiles import Profile
from strategies.allocator import JUDGE_PROMPT_OVERHEAD
from strategies.base import Candidate, Result, Task, settle_empty
from strategies.selection import select
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
    item: BatchItem, budget: BudgetTracker, seconds: SecondsModel, max_samples: int
) -> Situation:
    """The prompt before any sample, as auto's plan builders take it (its costs, its verifier)."""
    max_tokens = item.task.sampling.max_tokens
    verifier_call = None
    if item.verifier is not None:
        verifier_call = CallShape(item.prompt_tokens + max_tokens // 2 + JUDGE_PROMPT_OVERHEAD, 1, 1.0, 1)
    return Situation(
        prompt_tokens=item.prompt_tokens,
        max_tokens=max_tokens,
        expected_tokens=max_tokens / 2,
        probe_samples=0,
        signature=0,
        mixture=[(1.0, 0.5)],
        wrong_shares=list(DEFAULT_WRONG_SHARES),
        verifier=item.verifier.name if item.verifier is not None else None,
        calibration=item.calibration,
        verifier_call=verifier_call,
        probe_scored=True,
        false_positive_penalty=0.0,
        cost_weight=0.0,
        shape=budget.shape,
        hardware=budget.hardware,
        count_weight_loading=budget.count_weight_loading,
        seconds_model=seconds,
        caps=Caps(None, None, None),
        budget_scale=1.0,
        max_samples=max_samples,
    )


def remaining(budget: BudgetTracker) -> Remaining:
    return Remaining(budget.remaining_tokens(), budget.remaining_eflops())


async def _draw_one(item: BatchItem, engine: Engine, budget: BudgetTracker, count: int) -> Drawn:
    """`count` samples of one prompt through the batch's tracker, scored by its verifier; what they cost.
    A refusal (the budget, the key's quota or the admission queue) brings nothing rather than failing the
    batch."""
    spec = dataclasses.replace(item.task.sampling, n=count)
    try:
        generation = await budget.generate(engine, item.task.prompt, spec, prompt_tokens=item.prompt_tokens)
    except (BudgetExhausted, Rejected):
        return Drawn([], 0.0, 0)
    candidates = [Candidate.from_sample(sample, item.task.answer) for sample in generation.samples]
    lengths = [sample.tokens for sample in generation.samples]
    eflops = generation_eflops(
        budget.shape,
        budget.hardware,
        generation.prompt_tokens,
        generation.cached_prompt_tokens,
        lengths,
        budget.count_weight_loading,
    )
    if item.verifier is not None and candidates and not budget.expired():
        try:
            scores = await item.verifier.score(item.task.question, [c.text for c in candidates])
        except BudgetExhausted:
            scores = []
        for candidate, score in zip(candidates, scores, strict=False):
            candidate.score = score
    return Drawn(candidates, eflops, sum(lengths))


def _answer(candidates: list[Candidate], situation_rule: str) -> Candidate | None:
    return select(candidates, "weighted" if situation_rule == "weighted" else "majority")


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
) -> list[Outcome]:
    """Allocate the batch's budget over its prompts and answer each one (see the module's docstring)."""
    by_key = {item.key: item for item in items}
    prompts = [
        Prompt(item.key, base_situation(item, budget, seconds, max_samples), item.calibration)
        for item in items
    ]
    rules_of = {prompt.key: rule_of(prompt.base) for prompt in prompts}
    limits = Remaining(budget.limits.tokens, budget.limits.eflops)
    pools_seen: dict[str, list[Candidate]] = {item.key: [] for item in items}

    gate = SequenceGate(in_flight)

    def one(key: str, n: int) -> Callable[[], Awaitable[Drawn]]:
        return lambda: _draw_one(by_key[key], engine, budget, n)

    async def draw(steps: list[tuple[str, int]]) -> dict[str, Drawn]:
        drawn = await gather_or_cancel(*(gate.run(n, one(key, n)) for key, n in steps))
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
            chosen = _answer(pools_seen[ledger.key], rules_of[ledger.key])
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
    )
    report("done", max((int(s.get("round", 0)) for x in ledgers for s in x.steps), default=0), ledgers)
    outcomes = []
    for ledger in ledgers:
        item = by_key[ledger.key]
        candidates = pools[ledger.key]
        rule = rules_of[ledger.key]
        chosen = _answer(candidates, rule)
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
            params={"strategy": "best_of_n", "n": len(candidates), "selection": rule},
            abstained=chosen is None,
            details={"allocation": allocation},
        )
        if chosen is None:
            result.details["abstain_reason"] = f"no samples: {ledger.reason}"
        result = settle_empty(result)
        outcomes.append(Outcome(item, result, ledger, _correct(item, result.answer)))
    return outcomes
