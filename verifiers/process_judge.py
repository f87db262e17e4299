"""Generative process judge: the model is asked whether the latest step of a partial solution is correct,
given the question and the earlier steps; the step's score is P(yes) from the logprobs of its first answer
token (the outcome judge's `yes_probability`). With `aggregate: last` (the default) one call per candidate
judges its newest step; with min or product every step is judged. All calls run in parallel and are
charged to the request's budget as verifier calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.engine import Engine, SamplingSpec
from verifiers.judge import TOP_LOGPROBS, yes_probability
from verifiers.steps import StepOptions, aggregate, split_steps

STEP_INSTRUCTION = (
    "Here is a question and the first steps of a solution. Check only the latest step: "
    "is it correct, given the question and the earlier steps? Reply with Yes or No."
)


class ProcessJudgeOptions(StepOptions):
    max_solution_tokens: int = Field(
        512, ge=16, le=8192, description="Earlier steps kept (their last tokens) in each judge prompt."
    )


class ProcessJudgeVerifier:
    name = "process_judge"

    def __init__(
        self, engine: Engine, budget: BudgetTracker, options: ProcessJudgeOptions | None = None
    ) -> None:
        self.engine = engine
        self.budget = budget
        self.options = options or ProcessJudgeOptions()

    def step_prompt(self, question: str, earlier: Sequence[str], latest: str) -> str:
        """The judge's chat prompt; earlier steps are cut from the front to fit max_solution_tokens."""
        before = "\n\n".join(earlier) if earlier else "(none)"
        before_ids = self.engine.encode(before)[-self.options.max_solution_tokens :]
        content = (
            f"{STEP_INSTRUCTION}\n\nQuestion: {question}\n\nEarlier steps:\n{self.engine.decode(before_ids)}"
            f"\n\nLatest step:\n{latest}"
        )
        return self.engine.render_chat([{"role": "user", "content": content}])

    async def _score_step(self, question: str, steps: Sequence[str], index: int) -> float:
        spec = SamplingSpec(n=1, temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
        prompt = self.step_prompt(question, steps[:index], steps[index])
        generation = await self.budget.generate(self.engine, prompt, spec, purpose="verifier")
        logprobs = generation.samples[0].logprobs if generation.samples else None
        return yes_probability(logprobs[0] if logprobs else None)

    async def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        split = [split_steps(text, self.options.delimiter) for text in candidates]
        judged = [
            range(max(len(steps) - 1, 0), len(steps))
            if self.options.aggregate == "last"
            else range(len(steps))
            for steps in split
        ]
        calls = [
            self._score_step(question, steps, index)
            for steps, indexes in zip(split, judged, strict=True)
            for index in indexes
        ]
        flat = iter(await gather_or_cancel(*calls))
        return [aggregate([next(flat) for _ in indexes], self.options.aggregate) for indexes in judged]
