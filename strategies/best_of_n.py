"""Best-of-N: N samples of the prompt, one answer chosen by majority, verifier-weighted vote or verifier max.

With `adaptive`, samples come in rounds and sampling stops as soon as the leading answer cannot be overtaken
by the samples the budget still allows (a change of winner is then impossible, so more samples are waste).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine, count_prompt_tokens
from service.runtime.errors import BudgetExhausted, InvalidRequest
from strategies.base import Candidate, Result, Task, parse_params
from strategies.selection import Selection, cannot_be_overtaken, select
from verifiers.base import Verifier

DEFAULT_SAMPLES = 8


class BestOfNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Samples to draw; default: as many as the budget pays for (8 without one).",
    )
    selection: Literal["majority", "weighted", "max"] | None = Field(
        None, description="How to choose; default `weighted` with a verifier, else `majority`."
    )
    adaptive: bool = Field(False, description="Sample in rounds; stop once the leader cannot be overtaken.")
    round_size: int = Field(4, ge=1, le=256, description="Samples per round when adaptive.")
    abstain_below: float | None = Field(
        None, ge=0, le=1, description="Abstain (answer null) when the chosen candidate's score is below this."
    )


def planned_samples(task: Task, engine: Engine, budget: BudgetTracker, requested: int | None) -> int:
    """The asked n, or with a budget as many samples as it pays for in the worst case, or 8."""
    limit = min(requested or task.settings.max_samples, task.settings.max_samples)
    if requested is None and not task.budget_given:
        limit = DEFAULT_SAMPLES
    prompt_tokens = count_prompt_tokens(engine, task.prompt)
    samples, _ = budget.fit(prompt_tokens, limit, task.sampling.max_tokens)
    return max(samples, 1)


async def sample_candidates(
    task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker, count: int
) -> list[Candidate]:
    """`count` fresh candidates in one engine call, scored by the verifier when there is one."""
    spec = dataclasses.replace(task.sampling, n=count)
    generation = await budget.generate(engine, task.prompt, spec)
    candidates = [Candidate.from_sample(sample, task.answer) for sample in generation.samples]
    if verifier is not None and candidates and not budget.expired():
        try:
            scores = await verifier.score(task.question, [candidate.text for candidate in candidates])
        except BudgetExhausted:
            scores = []
        for candidate, score in zip(candidates, scores, strict=False):
            candidate.score = score
    return candidates


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    params = parse_params(BestOfNParams, task.params)
    selection: Selection = params.selection or ("weighted" if verifier is not None else "majority")
    if selection != "majority" and verifier is None:
        raise InvalidRequest(f"selection {selection!r} needs a verifier.", param="params.selection")
    target = planned_samples(task, engine, budget, params.n)
    round_size = min(params.round_size, target) if params.adaptive else target

    candidates: list[Candidate] = []
    stopped_early = False
    while len(candidates) < target and not budget.expired():
        try:
            new = await sample_candidates(
                task, engine, verifier, budget, min(round_size, target - len(candidates))
            )
        except BudgetExhausted:
            if candidates:
                break
            raise
        candidates.extend(new)
        task.report({"event": "round", "samples": len(candidates), "tokens": budget.spend.completion_tokens})
        if params.adaptive and cannot_be_overtaken(candidates, selection, target - len(candidates)):
            stopped_early = len(candidates) < target
            break

    chosen = select(candidates, selection)
    abstained = chosen is None or (
        params.abstain_below is not None and (chosen.score or 0.0) < params.abstain_below
    )
    used = {
        "n": len(candidates),
        "selection": selection,
        "adaptive": params.adaptive,
        "stopped_early": stopped_early,
    }
    return Result(
        text=chosen.text if chosen else "",
        answer=None if abstained or chosen is None else chosen.answer,
        candidates=candidates,
        params=used,
        abstained=abstained,
    )
