"""Sequential revision: parallel chains in which the model sees its last attempts (with the verifier's verdict
on each, when there is a verifier) and writes a better one; hierarchical selection over every attempt.

Snell et al. (papers.md §3): easy questions do best fully sequential, harder ones at an interior
sequential:parallel ratio, and about a third of right answers get revised into wrong ones, so no attempt is
ever dropped: selection is best within each chain (verifier-weighted), then across chains.

Each revision prompt is the previous prompt plus the previous attempt plus a feedback turn, as token ids, so
the engine's prefix cache serves everything but the new turn. Once a chain has more attempts than `history`,
the oldest drops out of the prompt and only the question's prefix stays cached for that step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.engine import Engine, count_prompt_tokens
from service.runtime.errors import BudgetExhausted, InvalidRequest
from strategies.base import Candidate, Result, Task, parse_params
from strategies.selection import Selection, select
from verifiers.base import Verifier

DEFAULT_ATTEMPTS = 8
MAX_DEPTH = 8


class RevisionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chains: int | None = Field(None, ge=1, le=64, description="Parallel chains; default from the budget.")
    depth: int | None = Field(
        None, ge=1, le=32, description="Attempts per chain (1 = no revision); default from the budget."
    )
    history: int = Field(3, ge=1, le=16, description="Earlier attempts shown in each revision prompt.")
    stable_k: int = Field(
        2, ge=1, le=32, description="Stop a chain once its answer has not changed for this many revisions."
    )
    confident: float = Field(
        0.9, ge=0, le=1, description="Stop a chain once the verifier scores an attempt at least this."
    )
    selection: Literal["majority", "weighted", "max"] | None = Field(
        None, description="Across chains; default `weighted` with a verifier, else `majority`."
    )


@dataclass
class Attempt:
    candidate: Candidate
    segment: list[int] = field(default_factory=list)  # its text plus the feedback turn after it, as ids


def plan(task: Task, engine: Engine, budget: BudgetTracker, params: RevisionParams) -> tuple[int, int]:
    """(chains, depth): the asked ones, or as many attempts as the budget pays for, about sqrt-split."""
    if params.chains is not None and params.depth is not None:
        return params.chains, params.depth
    total = DEFAULT_ATTEMPTS
    if task.budget_given:
        prompt_tokens = count_prompt_tokens(engine, task.prompt)
        total, _ = budget.fit(prompt_tokens, task.settings.max_samples, task.sampling.max_tokens)
        total = max(total, 1)
    if params.chains is not None:
        return params.chains, max(1, total // params.chains)
    if params.depth is not None:
        return max(1, total // params.depth), params.depth
    depth = min(MAX_DEPTH, max(1, math.ceil(math.sqrt(total))))
    return max(1, total // depth), depth


def turn_template(engine: Engine) -> tuple[str, str]:
    """The chat template's text between an assistant reply and a new user message, and after that message,
    found by rendering a probe conversation; a plain-text fallback for templates that do not nest."""
    head = engine.render_chat([{"role": "user", "content": "Q"}])
    full = engine.render_chat(
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "\x01"},
            {"role": "user", "content": "\x02"},
        ]
    )
    if full.startswith(head) and full.count("\x01") == 1 and full.count("\x02") == 1:
        middle = full[len(head) :]
        if middle.startswith("\x01"):
            before, after = middle[1:].split("\x02")
            return before, after
    return "\n\n", "\n\n"


def feedback(number: int, score: float | None) -> str:
    if score is None:
        verdict = "Check it step by step for mistakes."
    else:
        likely = "probably right" if score >= 0.5 else "probably wrong"
        verdict = f"A checker rates it {score:.2f} out of 1 ({likely})."
    return (
        f"That was attempt {number}. {verdict} Write a better, complete answer to the original question, "
        "ending with the final answer."
    )


def _stable(attempts: list[Attempt], k: int) -> bool:
    answers = [attempt.candidate.answer for attempt in attempts[-(k + 1) :]]
    return len(answers) == k + 1 and answers[0] is not None and len(set(answers)) == 1


async def run_chain(
    task: Task,
    engine: Engine,
    verifier: Verifier | None,
    budget: BudgetTracker,
    params: RevisionParams,
    depth: int,
    chain: int,
    template: tuple[str, str],
) -> list[Attempt]:
    base = engine.encode(task.prompt)
    attempts: list[Attempt] = []
    for step in range(depth):
        if budget.expired():
            break
        shown = attempts[-params.history :]
        prompt = base + [token for attempt in shown for token in attempt.segment]
        while shown and len(prompt) + task.sampling.max_tokens > engine.max_model_len:
            shown = shown[1:]
            prompt = base + [token for attempt in shown for token in attempt.segment]
        spec = dataclasses.replace(task.sampling, n=1)
        if step > 0 and task.sampling.seed is not None:
            spec = dataclasses.replace(spec, seed=task.sampling.seed + 1000 * chain + step)
        try:
            generation = await budget.generate(engine, prompt, spec, prompt_tokens=len(prompt))
        except BudgetExhausted:
            break
        candidate = Candidate.from_sample(generation.samples[0], task.answer)
        if verifier is not None and not budget.expired():
            with contextlib.suppress(BudgetExhausted):
                (candidate.score,) = await verifier.score(task.question, [candidate.text])
        before, after = template
        segment = engine.encode(candidate.text + before + feedback(step + 1, candidate.score) + after)
        attempts.append(Attempt(candidate, segment))
        task.report({"event": "attempt", "chain": chain, "step": step, "answer": candidate.answer})
        if candidate.score is not None and candidate.score >= params.confident:
            break
        if _stable(attempts, params.stable_k):
            break
    return attempts


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    params = parse_params(RevisionParams, task.params)
    selection: Selection = params.selection or ("weighted" if verifier is not None else "majority")
    if selection != "majority" and verifier is None:
        raise InvalidRequest(f"selection {selection!r} needs a verifier.", param="params.selection")
    chains, depth = plan(task, engine, budget, params)
    template = turn_template(engine)
    runs = await gather_or_cancel(
        *(
            run_chain(task, engine, verifier, budget, params, depth, chain, template)
            for chain in range(chains)
        )
    )
    per_chain = [[attempt.candidate for attempt in attempts] for attempts in runs]
    everything = [candidate for chain in per_chain for candidate in chain]
    if not everything:
        raise BudgetExhausted("The budget cannot pay for one attempt.", param="budget")
    within: Selection = "weighted" if verifier is not None else "majority"
    winners = [winner for chain in per_chain if (winner := select(chain, within)) is not None]
    chosen = select(winners, selection)
    select(everything, "majority")  # fills in votes over every attempt
    assert chosen is not None
    return Result(
        text=chosen.text,
        answer=chosen.answer,
        candidates=everything,
        params={
            "chains": chains,
            "depth": depth,
            "history": params.history,
            "selection": selection,
            "attempts": len(everything),
        },
        details={
            "chains": [[candidate.answer for candidate in chain] for chain in per_chain],
            "chain_winners": [winner.answer for winner in winners],
        },
    )
