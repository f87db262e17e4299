"""Generative judge: the model itself is asked whether a proposed solution is correct; the score is
P(yes) / (P(yes) + P(no)) read from the logprobs of its first answer token. One engine call per batch of
candidates (all judged in parallel), charged to the request's budget as verifier calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from service.runtime.budget import BudgetTracker
from service.runtime.concurrency import gather_or_cancel
from service.runtime.engine import Engine, SamplingSpec, TokenLogprob

JUDGE_INSTRUCTION = (
    "Here is a question and a proposed solution. Check the solution carefully. "
    "Is the final answer correct? Reply with Yes or No."
)
TOP_LOGPROBS = 20


def yes_probability(first_token: TokenLogprob | None) -> float:
    """P(yes) among the yes/no readings of the top tokens; 0.5 when the model says neither."""
    if first_token is None:
        return 0.5
    yes = no = 0.0
    for token, logprob in first_token.top or ((first_token.token, first_token.logprob),):
        word = token.strip().lower()
        if word in {"yes", "y", "correct", "true"}:
            yes += math.exp(logprob)
        elif word in {"no", "n", "incorrect", "wrong", "false"}:
            no += math.exp(logprob)
    if yes + no == 0.0:
        return 0.5
    return yes / (yes + no)


class JudgeVerifier:
    name = "judge"

    def __init__(self, engine: Engine, budget: BudgetTracker, max_solution_tokens: int = 512) -> None:
        self.engine = engine
        self.budget = budget
        self.max_solution_tokens = max_solution_tokens

    def judge_prompt(self, question: str, candidate: str) -> str:
        solution_ids = self.engine.encode(candidate)[-self.max_solution_tokens :]
        solution = self.engine.decode(solution_ids)
        content = f"{JUDGE_INSTRUCTION}\n\nQuestion: {question}\n\nProposed solution: {solution}"
        return self.engine.render_chat([{"role": "user", "content": content}])

    async def _score_one(self, question: str, candidate: str) -> float:
        spec = SamplingSpec(n=1, temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
        generation = await self.budget.generate(
            self.engine, self.judge_prompt(question, candidate), spec, purpose="verifier"
        )
        logprobs = generation.samples[0].logprobs if generation.samples else None
        return yes_probability(logprobs[0] if logprobs else None)

    async def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        return list(await gather_or_cancel(*(self._score_one(question, text) for text in candidates)))
