"""No test-time compute: one sample, as a plain completion would give. The baseline every strategy beats."""

from __future__ import annotations

import dataclasses

from service.runtime.budget import BudgetTracker
from service.runtime.engine import Engine
from strategies.base import Candidate, Result, Task
from verifiers.base import Verifier


async def run(task: Task, engine: Engine, verifier: Verifier | None, budget: BudgetTracker) -> Result:
    generation = await budget.generate(engine, task.prompt, dataclasses.replace(task.sampling, n=1))
    candidates = [Candidate.from_sample(sample, task.answer) for sample in generation.samples]
    if verifier is not None and candidates:
        (candidates[0].score,) = await verifier.score(task.question, [candidates[0].text])
    chosen = candidates[0]
    chosen.votes = 1
    return Result(text=chosen.text, answer=chosen.answer, candidates=candidates, params={"n": 1})
